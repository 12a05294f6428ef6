"""`neurop-diff predict` writes its SR images: one uint8 PNG per image and scale (SRPredictionWriter)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from neurop_diff.callbacks import SRPredictionWriter
from neurop_diff.cli import main
from test_cli import TINY_DATA, TINY_OPERATOR

REPO = Path(__file__).resolve().parents[1]


class Known(L.LightningModule):
    """predict_step's contract (lit/base.py): SR in [0, 1] on the CPU with names and true scales."""

    def predict_step(self, batch, batch_idx):
        return {"sr": batch["sr"], "name": batch["name"], "scale": batch["scale"]}


def test_pixels_names_and_scales_are_written_exactly(tmp_path):
    g = torch.Generator().manual_seed(0)
    sr = torch.rand(2, 3, 5, 7, generator=g) * 1.2 - 0.1  # slightly outside [0, 1]: clamped
    batch = {
        "sr": sr,
        "name": ["cls/a", "../../escape"],
        "scale": torch.tensor([3.2, 3.2]),
        "nominal_scale": torch.tensor([3.0, 3.0]),
    }
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[SRPredictionWriter(out_dir=str(tmp_path / "out"))],
    )  # fmt: skip
    trainer.predict(Known(), DataLoader([batch], batch_size=None), return_predictions=False)
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert files == ["x3/cls/a.png", "x3/escape.png"]  # the nominal scale; names stay inside the folder
    got = np.asarray(Image.open(tmp_path / "out" / "x3" / "cls" / "a.png"))
    expect = np.round(np.clip(sr[0].permute(1, 2, 0).numpy(), 0, 1) * 255).astype(np.uint8)
    assert got.dtype == np.uint8 and np.array_equal(got, expect)


@pytest.mark.slow
def test_cli_predict_writes_every_test_image_at_every_scale(tmp_path, shared_data):
    main([
        "predict",
        "--config", str(REPO / "configs/operator.yaml"), "--config", str(REPO / "configs/model/small.yaml"),
        f"--data.init_args.root={shared_data / 'rsscn7'}",
        *TINY_DATA,
        *TINY_OPERATOR,
        "--data.init_args.test_scales=[2.0, 3.5]",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.logger.init_args.name=op",
        "--trainer.logger.init_args.version=v0",
        "--trainer.enable_progress_bar=false",
    ])  # fmt: skip
    out = tmp_path / "op" / "v0" / "predictions"
    for scale in ("x2", "x3.5"):
        images = sorted((out / scale).rglob("*.png"))
        assert len(images) == 2, sorted(out.rglob("*"))  # max_eval_images=2
        for path in images:
            img = Image.open(path)
            assert img.mode == "RGB" and img.size == (48, 48)  # the HR size of every test image
            assert np.asarray(img).std() > 1  # an image, not a constant
