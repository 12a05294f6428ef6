"""Safe checkpoints: a process killed while saving leaves the previous last.ckpt intact; a non-finite loss stops
training with the step and the scale, before the weights change, and the last good checkpoint stays loadable.
(SIGTERM: tests/test_resume.py, where the run it saves then resumes exactly.)"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from neurop_diff.checkpointing import AtomicCheckpointIO
from neurop_diff.cli import main
from test_cli import TINY_DATA, TINY_OPERATOR
from test_resume import callbacks_config

REPO = Path(__file__).resolve().parents[1]

# Run in a subprocess: the second checkpoint save writes half of its bytes, says so, then waits to be killed.
KILLED_WHILE_SAVING = """
import io, sys
from neurop_diff.checkpointing import AtomicCheckpointIO
from neurop_diff.cli import main

calls = []

def half_then_wait(self, checkpoint, f):
    calls.append(1)
    if len(calls) < 2:
        return torch.save(checkpoint, f)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    f.flush()
    print("HALF", flush=True)
    sys.stdin.readline()

import torch
AtomicCheckpointIO._dump = half_then_wait
main(sys.argv[1:])
"""


def fit_args(root: Path, save_dir: Path, steps: int) -> list[str]:
    return [
        "fit",
        "--config",
        str(REPO / "configs/operator.yaml"),
        "--config",
        str(REPO / "configs/model/small.yaml"),
        *TINY_OPERATOR,
        f"--data.init_args.root={root / 'rsscn7'}",
        *TINY_DATA,
        f"--trainer.max_steps={steps}",
        "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={save_dir}",
        "--trainer.logger.init_args.name=run",
        "--trainer.logger.init_args.version=v0",
    ]


def test_atomic_save_replaces_the_file_in_one_step(tmp_path):
    io = AtomicCheckpointIO()
    target = tmp_path / "sub" / "last.ckpt"
    io.save_checkpoint({"step": torch.tensor(1)}, target)
    io.save_checkpoint({"step": torch.tensor(2)}, target)
    assert int(io.load_checkpoint(target)["step"]) == 2
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]  # no temporary file left
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode == 0o666 & ~_umask()  # an ordinary file, as open() creates it


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.slow
def test_killed_while_saving_keeps_the_previous_last_ckpt(shared_data, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(KILLED_WHILE_SAVING)
    cbs = callbacks_config(tmp_path / "callbacks.yaml")  # last.ckpt after every step
    args = [*fit_args(shared_data, tmp_path, 3)]
    args[3:3] = ["--config", str(cbs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with (tmp_path / "stderr.txt").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
        for line in proc.stdout:
            if line.startswith("HALF"):
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "stderr.txt").read_text()[-3000:]
    folder = tmp_path / "run/v0/checkpoints"
    partial = [p for p in folder.iterdir() if p.name.startswith(".last.ckpt.tmp-")]
    assert len(partial) == 1 and partial[0].stat().st_size > 0  # the kill did hit the middle of a save
    with pytest.raises(ValueError, match="truncated"):
        AtomicCheckpointIO().load_checkpoint(partial[0])
    ckpt = torch.load(folder / "last.ckpt", weights_only=True)  # the previous save, whole
    assert ckpt["global_step"] == 1

    # The run resumes from it; the next save clears the leftover.
    main([*fit_args(shared_data, tmp_path, 2)[:3], "--config", str(cbs), *fit_args(shared_data, tmp_path, 2)[3:],
          "--ckpt_path=last"])  # fmt: skip
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 2
    assert not partial[0].exists()


class NaNAt(L.Callback):
    """Makes the HR of the batch after optimizer step `step` NaN (so that batch's loss is NaN)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            batch["hr"].fill_(float("nan"))
            self.scale = float(batch["scale"][0])


def test_nan_loss_stops_with_step_and_scale(shared_data, tmp_path):
    extra = """    - class_path: test_checkpoint_safety.NaNAt
      init_args: {step: 2}
"""
    cbs = callbacks_config(tmp_path / "callbacks.yaml", extra=extra)
    args = fit_args(shared_data, tmp_path, 4)
    with pytest.raises(FloatingPointError) as err:
        main([*args[:3], "--config", str(cbs), *args[3:]])
    text = str(err.value)
    last = tmp_path / "run/v0/checkpoints/last.ckpt"
    assert "non-finite training loss (nan) at global step 2, batch 2, scale x" in text
    assert f"the last good checkpoint is {last}" in text
    scale = float(text.split("scale x")[1].split(":")[0])
    assert 1.0 <= scale <= 8.0
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    state = [s for opt in ckpt["optimizer_states"] for p in opt["state"].values() for s in p.values()]
    assert state and all(torch.isfinite(s).all() for s in state)
