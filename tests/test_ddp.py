"""Two CPU processes with DDP (gloo): fit and test of both stages; per-scale test metrics equal a
single-process run on the same data (3 eval images: an uneven split), every (image, scale) counted once; all
ranks of a training step use the same scale; bf16-mixed runs on the CPU."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.distributed as dist

from neurop_diff.cli import main
from test_cli import TINY_DATA, TINY_OPERATOR, TINY_UNET

REPO = Path(__file__).resolve().parents[1]
SCALES = [2.0, 3.5]
N_EVAL = 3  # odd: 2 ranks get uneven shares, one image is repeated to pad

# Every rank runs this script (Lightning starts rank 1 with the same command): one fit/test after the other.
SCRIPT = """
import json, sys
from neurop_diff.cli import main
for args in json.loads(open(sys.argv[1]).read()):
    main(args)
"""


class ScaleAgreement(L.Callback):
    """Rank 0 records, per training step, every rank's scale and image names (one JSON line per step)."""

    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        scales = pl_module.all_gather(batch["scale"][:1]).flatten().tolist()
        names: list = [None] * trainer.world_size
        dist.all_gather_object(names, list(batch["name"]))
        if trainer.is_global_zero:
            with open(self.out, "a") as f:
                f.write(json.dumps({"step": trainer.global_step, "scales": scales, "names": names}) + "\n")


def callbacks(path: Path, results: Path, extra: str = "") -> Path:
    path.write_text(
        f"""trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{save_last: true, save_top_k: 0}}
    - class_path: neurop_diff.callbacks.SRMetrics
      init_args: {{lpips: false, grid_images: 2, out_dir: {results}}}
{extra}"""
    )
    return path


def common(root: Path, save_dir: Path, name: str) -> list[str]:
    return [
        f"--data.init_args.root={root / 'rsscn7'}",
        *TINY_DATA,
        f"--data.init_args.max_eval_images={N_EVAL}",
        f"--data.init_args.val_scales={SCALES}",
        f"--data.init_args.test_scales={SCALES}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={save_dir}",
        f"--trainer.logger.init_args.name={name}",
        "--trainer.logger.init_args.version=v0",
    ]


def read_csv(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open()))


def assert_same_results(ddp: Path, single: Path, methods: set[str]) -> None:
    rows_ddp, rows_single = read_csv(ddp / "per_image.csv"), read_csv(single / "per_image.csv")
    key = lambda r: (r["method"], float(r["scale"]), r["name"])  # noqa: E731
    keys = [key(r) for r in rows_ddp]
    assert len(keys) == len(set(keys)) == len(methods) * len(SCALES) * N_EVAL  # each pair once, none dropped
    assert {k[0] for k in keys} == methods
    single_by_key = {key(r): r for r in rows_single}
    assert set(single_by_key) == set(keys)
    for r in rows_ddp:
        for metric in ("psnr", "ssim", "hf_share", "hf_share_hr", "hf_psnr", "hf_ssim", "lr_psnr", "lsd_hi"):
            assert float(r[metric]) == pytest.approx(float(single_by_key[key(r)][metric]), rel=1e-4, abs=1e-5)
    summary_ddp, summary_single = read_csv(ddp / "metrics.csv"), read_csv(single / "metrics.csv")
    assert len(summary_ddp) == len(summary_single) == len(methods) * len(SCALES)
    for a, b in zip(summary_ddp, summary_single, strict=True):
        assert (a["method"], a["scale"], a["n_images"]) == (b["method"], b["scale"], b["n_images"])
        assert int(a["n_images"]) == N_EVAL
        assert float(a["psnr"]) == pytest.approx(float(b["psnr"]), rel=1e-5)
        assert float(a["hf_share"]) == pytest.approx(float(b["hf_share"]), rel=1e-5)
        for metric in ("swd_l0", "swd_l1", "swd_l2"):  # set-level: gathered descriptors, the same set
            assert float(a[metric]) == pytest.approx(float(b[metric]), rel=1e-4)


@pytest.mark.slow
def test_ddp_two_cpu_processes_fit_and_test_both_stages(shared_data, tmp_path):
    ddp_cfg = str(REPO / "configs/trainer/cpu_ddp.yaml")
    agree = tmp_path / "scales.jsonl"
    extra = f"""    - class_path: test_ddp.ScaleAgreement
      init_args: {{out: {agree}}}
"""
    fit_cbs = callbacks(tmp_path / "fit.yaml", tmp_path / "fit_results", extra)
    op_ckpt = tmp_path / "operator/v0/checkpoints/last.ckpt"
    diff_ckpt = tmp_path / "diffusion/v0/checkpoints/last.ckpt"
    operator = [
        "--config",
        str(REPO / "configs/operator.yaml"),
        "--config",
        str(REPO / "configs/model/small.yaml"),
        *TINY_OPERATOR,
    ]
    diffusion = ["--config", str(REPO / "configs/diffusion_small.yaml"), *TINY_UNET]
    diffusion += ["--model.init_args.sampling_steps=2"]

    def run(stage: str, model: list[str], name: str, cbs: Path, *more: str) -> list[str]:
        n = (
            len(model) - model[::-1].index("--config") + 1
        )  # the stage's config files, then the DDP ones on top
        return [stage, *model[:n], "--config", ddp_cfg, "--config", str(cbs), *model[n:],
                *common(shared_data, tmp_path, name), *more]  # fmt: skip

    runs = [
        run("fit", operator, "operator", fit_cbs, "--trainer.max_steps=4", "--trainer.val_check_interval=4"),
        run(
            "test",
            operator,
            "operator_test",
            callbacks(tmp_path / "op.yaml", tmp_path / "op_ddp"),
            f"--ckpt_path={op_ckpt}",
        ),
        # bf16-mixed under DDP on the CPU, with the EMA and a DDIM validation
        run(
            "fit",
            diffusion,
            "diffusion",
            fit_cbs,
            "--trainer.max_steps=2",
            "--trainer.val_check_interval=2",
            "--trainer.precision=bf16-mixed",
            f"--model.init_args.operator_ckpt={op_ckpt}",
        ),
        run(
            "test",
            diffusion,
            "diffusion_test",
            callbacks(tmp_path / "diff.yaml", tmp_path / "diff_ddp"),
            f"--ckpt_path={diff_ckpt}",
        ),
    ]
    (tmp_path / "runs.json").write_text(json.dumps(runs))
    (tmp_path / "ddp_run.py").write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "ddp_run.py"), str(tmp_path / "runs.json")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=500,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stderr

    steps = [json.loads(line) for line in agree.read_text().splitlines()]
    assert [s["step"] for s in steps] == [0, 1, 2, 3, 0, 1]  # operator, then diffusion
    for s in steps:
        assert len(s["scales"]) == 2 and s["scales"][0] == s["scales"][1]  # one scale per step on all ranks
        assert not set(s["names"][0]) & set(s["names"][1])  # different images on the two ranks
    assert len({s["scales"][0] for s in steps}) > 1
    assert torch.load(op_ckpt, weights_only=True)["global_step"] == 4
    diff = torch.load(diff_ckpt, weights_only=True)
    assert diff["global_step"] == 2 and all(v.dtype == torch.float32 for v in diff["state_dict"].values())
    assert (tmp_path / "fit_results/val/per_image.csv").is_file()

    # The same tests in one process
    for model, name, ckpt in ((operator, "op", op_ckpt), (diffusion, "diff", diff_ckpt)):
        cbs = callbacks(tmp_path / f"{name}_single.yaml", tmp_path / f"{name}_single")
        main(["test", *model[:2], "--config", str(cbs), *model[2:],
              *common(shared_data, tmp_path, f"{name}_single"), f"--ckpt_path={ckpt}"])  # fmt: skip
    assert_same_results(tmp_path / "op_ddp/test", tmp_path / "op_single/test", {"bicubic", "operator"})
    assert_same_results(
        tmp_path / "diff_ddp/test", tmp_path / "diff_single/test", {"bicubic", "operator", "diffusion"}
    )
    grids = sorted(p.name for p in (tmp_path / "diff_ddp/test/grids").iterdir())
    assert grids == ["x2.png", "x3.5.png"]


def test_bf16_mixed_on_cpu(shared_data, tmp_path):
    cbs = callbacks(tmp_path / "cbs.yaml", tmp_path / "results")
    main(["fit", "--config", str(REPO / "configs/operator.yaml"), "--config", str(REPO / "configs/model/small.yaml"), "--config", str(REPO / "configs/trainer/bf16.yaml"),
          "--config", str(cbs), *TINY_OPERATOR, *common(shared_data, tmp_path, "bf16"), "--trainer.max_steps=2",
          "--trainer.val_check_interval=2"])  # fmt: skip
    ckpt = torch.load(tmp_path / "bf16/v0/checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    rows = read_csv(tmp_path / "results/val/metrics.csv")
    assert {r["method"] for r in rows} == {"bicubic", "operator"}
    assert all(5 < float(r["psnr"]) < 60 for r in rows)
