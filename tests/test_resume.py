"""Exact resume: a fit interrupted after k steps and resumed with `--ckpt_path last` ends bit for bit where the
uninterrupted fit ends (weights, optimizer, LR schedule, EMA, counters, the pair generator, the sample order).

Operator stage: a subprocess receives a real SIGTERM after step 5 (SaveOnSigterm saves last.ckpt there).
Diffusion stage (dropout on, EMA): a callback raises after step 5 in the middle of an epoch; last.ckpt is from
step 4. Both then resume in-process and run to step 8 across an epoch boundary (3 batches per epoch), with a
validation at step 3 before the interruption (the EMA swap) and one at step 6 after it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from neurop_diff.cli import main
from test_cli import TINY_DATA, TINY_OPERATOR, TINY_UNET

REPO = Path(__file__).resolve().parents[1]
STEPS, STOP = 8, 5


class SigtermAt(L.Callback):
    """Announces the end of step `step` on stdout and waits for stdin to close (the test sends SIGTERM first)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            print(f"READY {trainer.global_step}", flush=True)
            sys.stdin.readline()


class RaiseAt(L.Callback):
    """A crash after optimizer step `step` (before the checkpoint callbacks of that step run)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"interrupted at step {self.step}")


def callbacks_config(path: Path, every: int = 1, ema: bool = False, extra: str = "") -> Path:
    """A trainer-callbacks config: last.ckpt every `every` steps, metrics without LPIPS or files."""
    text = f"""trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{every_n_train_steps: {every}, save_top_k: 0, save_last: true}}
    - class_path: neurop_diff.callbacks.SRMetrics
      init_args: {{lpips: false, write_files: false, grid_images: 0}}
"""
    if ema:
        text += """    - class_path: lightning.pytorch.callbacks.EMAWeightAveraging
      init_args: {decay: 0.9}
"""
    path.write_text(text + extra)
    return path


def run_args(root: Path, save_dir: Path, name: str, version: str | None = None) -> list[str]:
    args = [
        f"--data.init_args.root={root / 'rsscn7'}",
        *TINY_DATA,
        "--data.init_args.max_train_images=12",  # 3 batches of 4 per epoch
        "--data.init_args.max_eval_images=1",
        "--data.init_args.val_scales=[3]",
        f"--trainer.max_steps={STEPS}",
        "--trainer.val_check_interval=3",
        "--trainer.check_val_every_n_epoch=null",
        "--trainer.deterministic=true",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={save_dir}",
        f"--trainer.logger.init_args.name={name}",
    ]
    if version is not None:
        args.append(f"--trainer.logger.init_args.version={version}")
    return args


OPERATOR = [
    "fit",
    "--config",
    str(REPO / "configs/operator.yaml"),
    "--config",
    str(REPO / "configs/model/small.yaml"),
    *TINY_OPERATOR,
]


def diffusion(operator_ckpt: Path) -> list[str]:
    return [
        "fit",
        "--config",
        str(REPO / "configs/diffusion_small.yaml"),
        *TINY_UNET,
        "--model.init_args.sampling_steps=2",
        "--model.init_args.dropout=0.2",  # the global random stream matters too
        f"--model.init_args.operator_ckpt={operator_ckpt}",
    ]


def assert_same_training_state(a: Path, b: Path) -> None:
    """Everything a fit carries on with is equal (torch.equal) in two checkpoints."""
    ca = torch.load(a, map_location="cpu", weights_only=True)
    cb = torch.load(b, map_location="cpu", weights_only=True)
    assert ca["global_step"] == cb["global_step"] == STEPS
    assert ca["epoch"] == cb["epoch"]
    keys = ["state_dict", "optimizer_states", "lr_schedulers", "SRDataModule", "neurop_diff"]
    keys += [k for k in ("current_model_state", "averaging_state") if k in ca]
    for key in keys:
        assert key in cb, key
        _assert_equal(ca[key], cb[key], key)


def _assert_equal(x, y, where: str) -> None:
    if isinstance(x, torch.Tensor):
        assert isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y), where
    elif isinstance(x, dict):
        assert set(x) == set(y), f"{where}: keys {sorted(set(x) ^ set(y))}"
        for k in x:
            _assert_equal(x[k], y[k], f"{where}.{k}")
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            _assert_equal(u, v, f"{where}[{i}]")
    else:
        assert x == y, f"{where}: {x!r} != {y!r}"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Bit-exact comparisons need one reduction order: the killed subprocess runs with OMP_NUM_THREADS=1, so the
    # in-process runs (reference and resume) use one thread too, whatever the caller's setting.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(one_thread, shared_data, tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted fits of both stages (8 steps): their last.ckpt files."""
    out = tmp_path_factory.mktemp("reference")
    cbs = callbacks_config(out / "callbacks.yaml")
    main([*OPERATOR, "--config", str(cbs), *run_args(shared_data, out, "operator", "v0")])
    operator = out / "operator/v0/checkpoints/last.ckpt"
    cbs_ema = callbacks_config(out / "callbacks_ema.yaml", ema=True)
    main([*diffusion(operator), "--config", str(cbs_ema), *run_args(shared_data, out, "diffusion", "v0")])
    return {"operator": operator, "diffusion": out / "diffusion/v0/checkpoints/last.ckpt"}


@pytest.mark.slow
def test_operator_resume_after_sigterm_is_exact(shared_data, reference, tmp_path):
    # last.ckpt only every 3 steps: the step-5 checkpoint can only come from the SIGTERM.
    extra = f"""    - class_path: test_resume.SigtermAt
      init_args: {{step: {STOP}}}
"""
    cbs = callbacks_config(tmp_path / "callbacks.yaml", every=3, extra=extra)
    args = [*OPERATOR, "--config", str(cbs), *run_args(shared_data, tmp_path, "operator")]  # version_0
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
    }
    env["OMP_NUM_THREADS"] = "1"
    with (tmp_path / "stderr.txt").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "neurop_diff.cli", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        for line in proc.stdout:
            if line.startswith("READY"):
                break
        proc.send_signal(signal.SIGTERM)
        proc.stdin.close()
        rest = proc.stdout.read()
        rc = proc.wait(timeout=300)
    log = (tmp_path / "stderr.txt").read_text()
    assert rc == 0, log[-3000:]  # a clean exit, not a crash
    assert (
        f"SIGTERM received: saved {tmp_path}/operator/version_0/checkpoints/last.ckpt at global step {STOP}"
        in (log + rest)
    )
    last = tmp_path / "operator/version_0/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == STOP

    # `--ckpt_path last` finds it although the logger opens a new folder (version_1), where Lightning alone
    # would find no last.ckpt and silently start from scratch.
    plain = callbacks_config(tmp_path / "plain.yaml")
    main(
        [*OPERATOR, "--config", str(plain), *run_args(shared_data, tmp_path, "operator"), "--ckpt_path=last"]
    )
    assert_same_training_state(reference["operator"], tmp_path / "operator/version_1/checkpoints/last.ckpt")


@pytest.mark.slow
def test_diffusion_resume_after_crash_is_exact(shared_data, reference, tmp_path):
    extra = f"""    - class_path: test_resume.RaiseAt
      init_args: {{step: {STOP}}}
"""
    cbs = callbacks_config(tmp_path / "callbacks.yaml", ema=True, extra=extra)
    args = [*diffusion(reference["operator"]), *run_args(shared_data, tmp_path, "diffusion", "v0")]
    with pytest.raises(RuntimeError, match=f"interrupted at step {STOP}"):
        main([*args[:3], "--config", str(cbs), *args[3:]])
    last = tmp_path / "diffusion/v0/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == STOP - 1  # mid-epoch 1 (3 batches per epoch)

    plain = callbacks_config(tmp_path / "plain.yaml", ema=True)
    main([*args[:3], "--config", str(plain), *args[3:], "--ckpt_path=last"])
    assert_same_training_state(reference["diffusion"], last)
