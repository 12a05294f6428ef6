"""The `neurop-diff` command end to end on real images: fit and test both stages with tiny models."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neurop_diff.cli import main

REPO = Path(__file__).resolve().parents[1]

TINY_DATA = [
    "--data.init_args.hr_size=48",
    "--data.init_args.max_train_images=32",
    "--data.init_args.max_eval_images=2",
    "--data.init_args.batch_size=4",
    "--data.init_args.eval_batch_size=2",
    "--data.init_args.num_workers=0",
]
TINY_OPERATOR = [
    "--model.init_args.encoder_blocks=1",
    "--model.init_args.encoder_width=8",
    "--model.init_args.width=16",
    "--model.init_args.heads=2",
    "--model.init_args.sample_q=64",
    "--data.init_args.lr_patch=12",
]
TINY_UNET = [
    "--model.init_args.base_channels=8",
    "--model.init_args.channel_mults=[1, 2]",
    "--model.init_args.attn_resolutions=[24]",
    "--model.init_args.image_size=48",
    "--model.init_args.norm_groups=4",
    "--model.init_args.sampling_steps=3",
]


def _trainer_args(tmp_path: Path, name: str, steps: int) -> list[str]:
    return [
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        f"--trainer.logger.init_args.name={name}",
        "--trainer.logger.init_args.version=v0",
        f"--trainer.max_steps={steps}",
        f"--trainer.val_check_interval={steps}",
    ]


def _metrics(log_dir: Path) -> dict[str, float]:
    rows = list(csv.DictReader((log_dir / "metrics.csv").open()))
    out: dict[str, float] = {}
    for row in rows:
        out.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return out


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for sub in ("fit", "validate", "test", "predict", "import-weights"):
        assert sub in text


def test_console_script_help():
    exe = Path(sys.executable).with_name("neurop-diff")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    assert "fit" in out and "import-weights" in out


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_print_config(config, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(REPO / "configs" / config), "--print_config"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "class_path: neurop_diff.lit." in text
    assert "class_path: neurop_diff.data.SRDataModule" in text


def test_unknown_config_key_names_it(capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                "--config",
                str(REPO / "configs/operator.yaml"),
                "--config",
                str(REPO / "configs/model/small.yaml"),
                "--model.init_args.widht=3",
            ]
        )
    assert "widht" in capsys.readouterr().err


@pytest.mark.slow
def test_fit_and_test_both_stages(tmp_path, shared_data):
    data = [f"--data.init_args.root={shared_data / 'rsscn7'}", *TINY_DATA]
    op_cfg = [
        "--config",
        str(REPO / "configs/operator.yaml"),
        "--config",
        str(REPO / "configs/model/small.yaml"),
    ]
    main(["fit", *op_cfg, *data, *TINY_OPERATOR, *_trainer_args(tmp_path, "operator", 4)])
    op_ckpt = tmp_path / "operator/v0/checkpoints/last.ckpt"
    assert op_ckpt.is_file()
    ckpt = torch.load(op_ckpt, weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == 4
    assert ckpt["hyper_parameters"]["width"] == 16
    metrics = _metrics(tmp_path / "operator/v0")
    for key in ("val/psnr_x2", "val/psnr_x8", "val/psnr_bicubic_x4", "val/ssim_x4", "val/psnr"):
        assert key in metrics, key
    assert 5 < metrics["val/psnr_x2"] < 60

    # test from the checkpoint: what is typed wins, the rest comes from it; its architecture must be typed alike
    main(
        [
            "test",
            *op_cfg,
            *data,
            *TINY_OPERATOR,  # the checkpoint's architecture: the config's other sizes would be an error
            *_trainer_args(tmp_path, "operator_test", 1),
            "--data.init_args.test_scales=[2, 9.5]",
            f"--ckpt_path={op_ckpt}",
        ]
    )
    test_metrics = _metrics(tmp_path / "operator_test/v0")
    assert {"test/psnr_x2", "test/psnr_x9.5", "test/psnr_bicubic_x9.5"} <= set(test_metrics)

    diff_cfg = str(REPO / "configs/diffusion_small.yaml")
    main(
        [
            "fit",
            "--config",
            diff_cfg,
            *data,
            *TINY_UNET,
            *_trainer_args(tmp_path, "diffusion", 3),
            f"--model.init_args.operator_ckpt={op_ckpt}",
        ]
    )
    diff_ckpt = tmp_path / "diffusion/v0/checkpoints/last.ckpt"
    ckpt = torch.load(diff_ckpt, weights_only=True, map_location="cpu")
    assert ckpt["hyper_parameters"]["operator_args"]["width"] == 16
    # EMA weights in state_dict, raw weights kept beside them
    assert "current_model_state" in ckpt
    assert any(k.startswith("model.operator.") for k in ckpt["state_dict"])
    assert not any(v.requires_grad for v in ckpt["state_dict"].values())

    # the diffusion checkpoint is self-contained: the operator file is no longer needed
    op_ckpt.unlink()
    main(
        [
            "test",
            "--config",
            diff_cfg,
            *data,
            *TINY_UNET,  # the checkpoint's architecture (and steps)
            *_trainer_args(tmp_path, "diffusion_test", 1),
            "--data.init_args.test_scales=[4, 10]",
            f"--ckpt_path={diff_ckpt}",
        ]
    )
    m = _metrics(tmp_path / "diffusion_test/v0")
    for key in ("test/psnr_x4", "test/psnr_x10", "test/psnr_operator_x10", "test/psnr_bicubic_x4"):
        assert key in m, key

    # and the trained run upscales a real scene at a non-integer scale through the same command
    image = shared_data / "ucmerced" / "airplane" / "airplane00.png"
    main(["upscale", str(image), "--checkpoint", str(diff_ckpt), "--scale", "1.5", "--steps", "2",
          "--out", str(tmp_path / "up"), "--no-progress"])  # fmt: skip
    from PIL import Image

    (out,) = (tmp_path / "up").iterdir()
    assert Image.open(out).size == (384, 384)
