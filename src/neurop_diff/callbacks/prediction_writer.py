"""SRPredictionWriter: ``neurop-diff predict`` writes its SR images, one 8-bit PNG per image and scale."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from neurop_diff.evaluation.convention import format_scale


class SRPredictionWriter(BasePredictionWriter):
    """Writes every predicted image to ``<out_dir>/x<scale>/<name>.png`` (uint8 RGB), as the batch arrives.

    Reads ``predict_step``'s output ``{"sr": (B, 3, H, W) in [0, 1], "name": [str], "scale": (B,)}`` (and, with
    several samples per image, ``"seed_std": (B,)``, appended to ``<out_dir>/seed_std.csv``) and the
    batch's ``nominal_scale`` (the listed scale, as in the metric keys; the true scale otherwise). Names such
    as ``<class>/<stem>`` become sub-folders. Under DDP every rank writes its own images (Lightning's
    prediction sampler does not repeat any).

    Args:
        out_dir: folder for the images; default ``<trainer.log_dir or default_root_dir>/predictions``.
    """

    def __init__(self, out_dir: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.out_dir = out_dir

    def resolve_out_dir(self, trainer: L.Trainer) -> Path:
        if self.out_dir:
            return Path(self.out_dir)
        return Path(trainer.log_dir or trainer.default_root_dir) / "predictions"

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(prediction, dict) or "sr" not in prediction:
            raise ValueError(
                "SRPredictionWriter expects predict_step to return {'sr': (B,3,H,W) in [0,1], 'name', 'scale'}"
            )
        sr = prediction["sr"]
        names = prediction.get("name") or [f"batch{batch_idx}_{i}" for i in range(sr.shape[0])]
        scales = batch.get("nominal_scale", prediction.get("scale")) if isinstance(batch, dict) else None
        scales = torch.as_tensor(scales if scales is not None else prediction["scale"]).reshape(-1).tolist()
        pixels = torch.round(sr.detach().float().clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()
        out = self.resolve_out_dir(trainer)
        for image, name, scale in zip(pixels.numpy(), names, scales, strict=True):
            path = out / f"x{format_scale(scale)}" / f"{_safe(name)}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)
        if prediction.get("seed_std") is not None:
            self._write_spread(trainer, out, names, scales, prediction["seed_std"])

    @staticmethod
    def _write_spread(trainer: L.Trainer, out: Path, names: list, scales: list, spread: torch.Tensor) -> None:
        """Appends `scale,name,seed_std` rows to `seed_std.csv` (one file per rank under DDP)."""
        path = out / (
            "seed_std.csv" if trainer.world_size == 1 else f"seed_std.rank{trainer.global_rank}.csv"
        )
        new = not path.is_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["scale", "name", "seed_std"])
            for name, scale, value in zip(names, scales, spread.reshape(-1).tolist(), strict=True):
                writer.writerow([format_scale(scale), name, f"{value:.6f}"])


def _safe(name: str) -> str:
    """An image name as a relative path that stays inside the output folder."""
    parts = [p for p in str(name).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "image"
