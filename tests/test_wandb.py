"""W&B with and without an account: mode resolution, and a real offline run holding metrics and images."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from neurop_diff.cli import main
from neurop_diff.loggers import resolve_mode, run_names
from test_cli import TINY_DATA, TINY_OPERATOR

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # an empty netrc: no stored login
    (tmp_path / "netrc").write_text("")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_without_key_runs_offline(no_credentials):
    mode, reason = resolve_mode("auto")
    assert mode == "offline" and "no W&B API key" in reason


def test_environment_mode_wins(no_credentials, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("online") == ("disabled", None)
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_mode("online") == ("offline", None)


def test_key_without_network_falls_back(no_credentials, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    mode, reason = resolve_mode("auto", probe_timeout=1.0)
    assert mode == "offline" and "did not answer" in reason


def test_key_with_reachable_server_is_online(no_credentials, monkeypatch):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # pragma: no cover - the probe only connects
            self.send_response(200)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
        assert resolve_mode("auto") == ("online", None)
    finally:
        server.shutdown()


def test_run_names_from_hparams():
    names = run_names({"condition": "bicubic", "dataset": "aid", "scale_min": 1.0, "scale_max": 4.0})
    assert names == {
        "name": "diffusion-aid-bicubic-x1-4",
        "group": "aid",
        "tags": ["diffusion", "aid", "bicubic", "x1-4"],
    }
    assert run_names({"width": 64, "dataset": "rsscn7"})["name"] == "operator-rsscn7-x1-8"


@pytest.mark.slow
def test_offline_run_folder_holds_metrics_and_images(tmp_path, shared_data, no_credentials, capsys):
    loggers = yaml.safe_load((REPO / "configs/logger/wandb.yaml").read_text())
    for lg in loggers["trainer"]["logger"]:
        lg["init_args"]["save_dir"] = str(tmp_path)
    loggers["trainer"]["logger"][0]["init_args"]["version"] = "v0"
    cfg = tmp_path / "loggers.yaml"
    cfg.write_text(yaml.safe_dump(loggers))
    main([
        "fit",
        "--config", str(REPO / "configs/operator.yaml"), "--config", str(REPO / "configs/model/small.yaml"),
        "--config", str(cfg),
        f"--data.init_args.root={shared_data / 'rsscn7'}",
        *TINY_DATA,
        *TINY_OPERATOR,
        "--trainer.max_steps=2",
        "--trainer.val_check_interval=2",
        "--trainer.log_every_n_steps=1",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert "logging offline because no W&B API key" in out
    assert "wandb sync" in out
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    run = runs[0]
    assert str(run) in out
    # wandb's offline store is one binary record file; its history/config records hold the keys as strings.
    # It is written by wandb's service process, which may still be flushing after the run finished.
    keys = (
        b"val/psnr_x2",
        b"val/psnr_x8",
        b"val/ssim_x4",
        b"val/psnr_bicubic_x4",
        b"val/lr_psnr_x4",
        b"val/swd_l0_bicubic_x2",
        b"val/lsd_hi_x8",
        b"train/loss",
        b"sample_q",
        b"operator-rsscn7-x1-8",  # the run name made from the hyper-parameters
    )
    deadline, records = time.monotonic() + 30, b""
    while not all(k in records for k in keys) and time.monotonic() < deadline:
        records = next(run.glob("run-*.wandb")).read_bytes()
        time.sleep(0.2)
    for key in keys:
        assert key in records, key
    media = run / "files" / "media" / "images" / "val"
    for scale in (2, 3, 4, 6, 8):
        assert list(media.glob(f"grid_x{scale}_*.png")), sorted(p.name for p in media.iterdir())
    assert list(media.glob("metrics_vs_scale_*.png"))
    assert list(media.glob("perception_distortion_*.png"))
    assert len(list(tmp_path.glob("*/v0/metrics.csv"))) == 1  # the CSV logger beside it
