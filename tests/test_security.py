"""A checkpoint never runs code: one malicious file, tried at every entry point; a marker file proves nothing ran.
Also: a corrupt file and a file holding objects get different messages."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

import neurop_diff
from neurop_diff.checkpointing import AtomicCheckpointIO
from neurop_diff.cli import main
from neurop_diff.inference import clear_model_cache
from neurop_diff.lit import OperatorModule
from neurop_diff.weights import CorruptCheckpointError, UnsafeCheckpointError, read_checkpoint
from test_cli import TINY_OPERATOR

REPO = Path(__file__).resolve().parents[1]
#: The CPU-sized operator: the base config and the small overlay.
OPERATOR_CFG = [
    "--config",
    str(REPO / "configs/operator.yaml"),
    "--config",
    str(REPO / "configs/model/small.yaml"),
]
DIFFUSION_CFG = str(REPO / "configs/diffusion_small.yaml")
UNSAFE = "holds Python objects, refused: would execute code"


class Evil:
    """Unpickles as `os.system("touch <marker>")`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    """(a Lightning-looking checkpoint with an Evil object inside, the marker it would create)."""
    marker = tmp_path / "code_ran"
    module = OperatorModule(
        **{f.split("=")[0].rsplit(".", 1)[-1]: int(f.split("=")[1]) for f in TINY_OPERATOR[:4]}
    )
    ckpt = {
        "state_dict": module.state_dict(),
        "hyper_parameters": {**dict(module.hparams), "_class_path": "neurop_diff.lit.OperatorModule"},
        "x": Evil(marker),
    }
    path = tmp_path / "evil.ckpt"
    torch.save(ckpt, path)
    return path, marker


def test_the_payload_is_real(evil):
    path, marker = evil
    torch.load(path, weights_only=False)  # what the old `upscale` did before its safe loader
    assert marker.exists()


def test_malicious_file_at_every_entry_point(evil, tmp_path, shared_data, capsys):
    path, marker = evil
    image = shared_data / "aid_150px" / "Airport" / "airport_1.png"
    run = tmp_path / "runs" / "op" / "v0" / "checkpoints"
    run.mkdir(parents=True)
    (run / "last.ckpt").write_bytes(path.read_bytes())
    logger = [
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        "--trainer.logger.init_args.name=op",
    ]
    entry_points = {
        "upscale CLI": lambda: main(
            [
                "upscale",
                str(image),
                "--checkpoint",
                str(path),
                "--scale",
                "2",
                "--out",
                str(tmp_path / "up"),
                "--no-progress",
            ]
        ),
        "Python API": lambda: neurop_diff.upscale(str(image), 2, checkpoint=path, device="cpu"),
        "import-weights": lambda: main(["import-weights", str(path), "--out", str(tmp_path / "x.ckpt")]),
        "--ckpt_path PATH": lambda: main(["test", *OPERATOR_CFG, f"--ckpt_path={path}"]),
        "--ckpt_path PATH --weights_only false": lambda: main(
            ["fit", *OPERATOR_CFG, f"--ckpt_path={path}", "--weights_only=false"]
        ),
        "--ckpt_path last": lambda: main(
            [
                "fit",
                *OPERATOR_CFG,
                *logger,
                "--trainer.logger.init_args.version=v0",
                "--ckpt_path=last",
            ]
        ),
        "--ckpt_path last (unversioned)": lambda: main(["fit", *OPERATOR_CFG, *logger, "--ckpt_path=last"]),
        "operator_ckpt": lambda: main(
            ["fit", "--config", DIFFUSION_CFG, f"--model.init_args.operator_ckpt={path}"]
        ),
        "weights": lambda: main(["fit", *OPERATOR_CFG, f"--model.init_args.weights={path}"]),
        "load_from_checkpoint": lambda: OperatorModule.load_from_checkpoint(path, weights_only=False),
        "CheckpointIO": lambda: AtomicCheckpointIO().load_checkpoint(path, weights_only=False),
    }
    for name, call in entry_points.items():
        clear_model_cache()
        with pytest.raises((ValueError, SystemExit)) as err:
            call()
        said = str(err.value) if err.type is not SystemExit else capsys.readouterr().err
        assert UNSAFE in said, (name, said)
        assert re.search(r"(evil|last)\.ckpt", said), (name, said)  # names the file
        assert not marker.exists(), name


@pytest.mark.parametrize("content", ["truncated", "random", "empty", "text"])
def test_corrupt_and_unsafe_files_are_told_apart(tmp_path, content, evil):
    path = tmp_path / f"{content}.ckpt"
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.arange(1000.0)}}, good)
    data = {
        "truncated": good.read_bytes()[:700],
        "random": bytes(range(256)) * 8,
        "empty": b"",
        "text": b"not a checkpoint\n",
    }[content]
    path.write_bytes(data)
    with pytest.raises(
        CorruptCheckpointError, match=rf"{re.escape(str(path))}: not a checkpoint: truncated or corrupt"
    ):
        read_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError, match=UNSAFE):
        read_checkpoint(evil[0])
    assert torch.equal(read_checkpoint(good, mmap=True)["state_dict"]["w"], torch.arange(1000.0))
