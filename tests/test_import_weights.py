"""`neurop-diff import-weights`: the authors' files become checkpoints that every entry point accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from neurop_diff.cli import main
from neurop_diff.lit import DiffusionModule, OperatorModule
from neurop_diff.lit.operator import SRNO_DEFAULTS
from neurop_diff.weights import convert_srno_state_dict, load_operator
from neurop_diff.weights.unet import convert_unet_state_dict
from test_cli import TINY_DATA, _metrics, _trainer_args
from test_weights_srno import authors_state_dict, containers
from test_weights_unet import random_sd, table_shapes

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind", ["neuropdiff", "srno_repo"])
def test_srno_file_becomes_an_operator_checkpoint(tmp_path, kind, capsys):
    sd = authors_state_dict(seed=3)
    src = tmp_path / "srno_weight.pth"
    torch.save(containers(sd)[kind], src)
    out = tmp_path / "imported" / "srno.ckpt"
    main(["import-weights", str(src), "--out", str(out)])
    assert str(out) in capsys.readouterr().out
    assert not out.with_name("srno.ckpt.tmp").exists()

    expected = convert_srno_state_dict(sd)
    module = OperatorModule.load_from_checkpoint(out, map_location="cpu")
    for name, value in module.model.state_dict().items():
        assert torch.equal(value, expected[name]), name
    operator, args = load_operator(out)
    assert args["width"] == 256 and args["encoder_blocks"] == 16
    assert all(torch.equal(v, expected[k]) for k, v in operator.state_dict().items())


def test_neuropdiff_training_checkpoint_becomes_a_diffusion_checkpoint(tmp_path):
    unet_raw = random_sd(table_shapes(), seed=1, scale=0.01)
    unet_ema = random_sd(table_shapes(), seed=2, scale=0.01)
    srno = authors_state_dict(seed=4)
    state = {"Unet." + k: v for k, v in unet_raw.items()} | {"srno." + k: v for k, v in srno.items()}
    shadow = {"Unet." + k: v for k, v in unet_ema.items()}
    src = tmp_path / "step_best.pth"
    torch.save([state, {"state": {}, "param_groups": []}, 7, 700000, shadow], src)
    out = tmp_path / "neuropdiff.ckpt"
    main(["import-weights", str(src), "--out", str(out)])

    module = DiffusionModule.load_from_checkpoint(out, map_location="cpu")
    assert module.hparams.condition == "operator"
    ema = convert_unet_state_dict(unet_ema)
    for name, value in module.unet.state_dict().items():
        assert torch.equal(value, ema[name]), name
    srno_ours = convert_srno_state_dict(srno)
    assert all(torch.equal(v, srno_ours[k]) for k, v in module.operator.state_dict().items())

    raw = tmp_path / "raw.ckpt"
    main(["import-weights", str(src), "--out", str(raw), "--raw"])
    module = DiffusionModule.load_from_checkpoint(raw, map_location="cpu")
    first = next(iter(module.unet.state_dict()))
    assert torch.equal(module.unet.state_dict()[first], convert_unet_state_dict(unet_raw)[first])


def test_imported_operator_runs_through_cli_test(tmp_path, shared_data):
    src = tmp_path / "srno_weight.pth"
    torch.save({"model": authors_state_dict(seed=5)}, src)
    ckpt = tmp_path / "srno.ckpt"
    main(["import-weights", str(src), "--out", str(ckpt)])
    main(
        [
            "test",
            "--config",
            str(REPO / "configs/operator.yaml"),
            "--config",
            str(REPO / "configs/model/small.yaml"),
            # the imported (authors') size: the small config's contradicts the checkpoint, an error
            *(f"--model.init_args.{k}={v}" for k, v in SRNO_DEFAULTS.items()),
            f"--data.init_args.root={shared_data / 'rsscn7'}",
            *TINY_DATA,
            *_trainer_args(tmp_path, "imported", 1),
            "--data.init_args.test_scales=[3.5]",
            f"--ckpt_path={ckpt}",
        ]
    )
    metrics = _metrics(tmp_path / "imported/v0")
    # random weights: a valid but poor number, computed on the default-size (imported) architecture
    assert "test/psnr_x3.5" in metrics and metrics["test/psnr_x3.5"] > 0


def test_import_rejects_other_files(tmp_path, capsys):
    src = tmp_path / "other.pth"
    torch.save({"weights": {"a": torch.zeros(1)}}, src)
    with pytest.raises(SystemExit) as exc:
        main(["import-weights", str(src), "--out", str(tmp_path / "x.ckpt")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "other.pth" in err and "not an SRNO checkpoint" in err
    assert not (tmp_path / "x.ckpt").exists()
