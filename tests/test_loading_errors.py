"""Safe and clear loading: the wrong stage's checkpoint, another architecture, a truncated file, pickled code,
a config key that does not exist. Each error names the file or key and what was expected."""

from __future__ import annotations

import os
import re
from pathlib import Path

import lightning as L
import pytest
import torch

from neurop_diff.checkpointing import AtomicCheckpointIO
from neurop_diff.cli import main
from neurop_diff.lit import DiffusionModule, OperatorModule
from neurop_diff.weights import load_operator
from test_cli import TINY_DATA, TINY_OPERATOR, TINY_UNET

REPO = Path(__file__).resolve().parents[1]
#: The CPU-sized operator: the base config and the small overlay.
OPERATOR_CFG = [
    "--config",
    str(REPO / "configs/operator.yaml"),
    "--config",
    str(REPO / "configs/model/small.yaml"),
]
DIFFUSION_CFG = str(REPO / "configs/diffusion_small.yaml")


def _args(flags: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for flag in flags:
        if flag.startswith("--model.init_args."):
            key, value = flag[len("--model.init_args.") :].split("=", 1)
            out[key] = eval(value, {})  # the TINY_* values are Python literals
    return out


def _save(module: L.LightningModule, path: Path) -> Path:
    """A checkpoint as the CLI writes it: state dict plus hyper-parameters with the class path."""
    hparams = {"_class_path": f"neurop_diff.lit.{type(module).__name__}", **dict(module.hparams)}
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": hparams,
            "pytorch-lightning_version": L.__version__,
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ckpts")
    operator = OperatorModule(**_args(TINY_OPERATOR))
    diffusion = DiffusionModule(condition="bicubic", **_args(TINY_UNET))
    op = _save(operator, folder / "operator.ckpt")
    data = op.read_bytes()
    (folder / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (folder / "empty.ckpt").write_bytes(b"")
    return {
        "operator": op,
        "diffusion": _save(diffusion, folder / "diffusion.ckpt"),
        "truncated": folder / "truncated.ckpt",
        "empty": folder / "empty.ckpt",
    }


def test_operator_checkpoint_where_a_diffusion_one_is_expected(ckpts):
    with pytest.raises(ValueError) as err:
        main(["test", "--config", DIFFUSION_CFG, f"--ckpt_path={ckpts['operator']}"])
    text = str(err.value)
    assert str(ckpts["operator"]) in text
    assert "is an OperatorModule checkpoint (stage 1" in text
    assert (
        "a DiffusionModule checkpoint (stage 2, the generative model: configs/diffusion*.yaml, flow*.yaml) is expected"
        in text
    )
    assert "--model.init_args.operator_ckpt" in text  # what to do instead


def test_diffusion_checkpoint_where_an_operator_one_is_expected(ckpts):
    # One message, made in one place (weights.checkpoint.Checkpoint.require), wherever the file is given:
    # to the command line ...
    path = re.escape(str(ckpts["diffusion"]))
    wrong = r"is a DiffusionModule checkpoint \(stage 2[^)]*\); an OperatorModule checkpoint \(stage 1"
    with pytest.raises(ValueError, match=path + " " + wrong):
        main(["test", *OPERATOR_CFG, f"--ckpt_path={ckpts['diffusion']}"])
    # ... as the diffusion stage's operator
    with pytest.raises(
        ValueError, match=path + r" is a DiffusionModule checkpoint .*; an operator checkpoint"
    ):
        load_operator(ckpts["diffusion"])
    # ... and through the Python API
    with pytest.raises(ValueError, match=path + ": this checkpoint " + wrong):
        OperatorModule.load_from_checkpoint(ckpts["diffusion"])


def test_another_architecture_names_the_parameters_and_settings(ckpts, tmp_path):
    with pytest.raises(ValueError) as err:
        OperatorModule.load_from_checkpoint(ckpts["operator"], width=24)
    text = str(err.value)
    assert "does not fit OperatorModule" in text
    # torch's own strict-loading report, with the settings that differ
    assert re.search(
        r"size mismatch for model\.[\w.]+: .* torch\.Size\(\[16[,\]].* torch\.Size\(\[24[,\]]", text
    ), text
    # A module built with other settings (as `trainer.fit(model, ckpt_path=...)` restores into it).
    other = OperatorModule(**{**_args(TINY_OPERATOR), "width": 24, "heads": 4})
    with pytest.raises(ValueError) as err:
        ckpt = torch.load(ckpts["operator"], weights_only=True)
        other.on_load_checkpoint(ckpt)  # then Lightning loads the weights (torch's strict loading)
        other.load_state_dict(ckpt["state_dict"])
    assert (
        "the architecture settings differ (width: checkpoint 16 vs model 24, heads: checkpoint 2 vs model 4)"
        in (str(err.value))
    )

    # A checkpoint from another code version (a renamed and a resized parameter), through the CLI's test.
    ckpt = torch.load(ckpts["operator"], weights_only=True)
    sd = ckpt["state_dict"]
    first, second = list(sd)[:2]
    sd["model.renamed_in_another_version"] = sd.pop(first)
    sd[second] = torch.zeros(3, 3)
    torch.save(ckpt, tmp_path / "edited.ckpt")
    root = Path(os.environ.get("NEUROP_DIFF_DATA", REPO.parent / "shared" / "data")) / "rsscn7"
    with pytest.raises(ValueError) as err:
        main(
            [
                "test",
                *OPERATOR_CFG,
                *TINY_OPERATOR,  # the checkpoint's architecture (another one is an error of its own)
                f"--data.init_args.root={root}",
                *TINY_DATA,
                "--data.init_args.max_eval_images=1",
                "--trainer.logger=false",
                f"--trainer.default_root_dir={tmp_path}",
                f"--ckpt_path={tmp_path / 'edited.ckpt'}",
            ]
        )
    text = str(err.value)
    assert (
        f"size mismatch for {second}: copying a param with shape torch.Size([3, 3]) from checkpoint" in text
    )
    assert f'Missing key(s) in state_dict: "{first}"' in text
    assert 'Unexpected key(s) in state_dict: "model.renamed_in_another_version"' in text


@pytest.mark.parametrize("which", ["truncated", "empty"])
def test_truncated_file_is_named(ckpts, which):
    path = ckpts[which]
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: not a checkpoint: truncated or corrupt"):
        main(["test", *OPERATOR_CFG, f"--ckpt_path={path}"])
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: not a checkpoint: truncated or corrupt"):
        main(["fit", "--config", DIFFUSION_CFG, f"--model.init_args.operator_ckpt={path}"])
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: not a checkpoint: truncated or corrupt"):
        AtomicCheckpointIO().load_checkpoint(path)


class _Payload:
    """Pickles as a call that would create `marker` on loading."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_third_party_weights_never_run_code(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "srno_weight.pth"
    torch.save({"model": {"sd": {"encoder.head.0.weight": torch.zeros(1)}}, "extra": _Payload(marker)}, path)
    for load in (
        lambda: load_operator(path),
        lambda: main(["test", *OPERATOR_CFG, f"--ckpt_path={path}"]),
    ):
        with pytest.raises(
            ValueError, match=rf"{re.escape(str(path))}: holds Python objects, refused: would execute code"
        ):
            load()
    assert not marker.exists()


def test_unknown_config_keys_suggest_the_closest(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["fit", *OPERATOR_CFG, "--model.init_args.widht=3"])
    assert "'widht' is not an argument of neurop_diff.lit.OperatorModule: did you mean 'width'?" in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main(["fit", *OPERATOR_CFG, "--data.init_args.batchsize=3"])
    assert "did you mean 'batch_size'?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", *OPERATOR_CFG, "--trainer.max_stepz=3"])
    assert "'trainer.max_stepz' does not exist: did you mean 'trainer.max_steps'?" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  gradient_clip_vall: 1.0\n")
    with pytest.raises(SystemExit):
        main(["fit", *OPERATOR_CFG, "--config", str(bad)])
    assert "did you mean 'trainer.gradient_clip_val'?" in capsys.readouterr().err
