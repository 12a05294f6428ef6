"""Shared plumbing of the two LightningModules: one eval step for val/test/predict, schedules."""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor


class SRTask(L.LightningModule):
    """Base of `OperatorModule` and `DiffusionModule`.

    Subclasses implement `super_resolve(batch, batch_idx) -> {method: (B,3,H,W) in [-1,1]}` (their own method
    first); validation, test and predict all go through it, and the `SRMetrics` callback reads the result.
    """

    #: Metric that ModelCheckpoint / early stopping watch (logged by the SRMetrics callback).
    monitor = "val/psnr"
    mode = "max"

    def super_resolve(self, batch: dict, batch_idx: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def _eval_step(self, batch: dict, batch_idx: int) -> dict[str, dict[str, Tensor]]:
        return {"sr": self.super_resolve(batch, batch_idx)}

    def validation_step(self, batch: dict, batch_idx: int) -> dict[str, dict[str, Tensor]]:
        return self._eval_step(batch, batch_idx)

    def test_step(self, batch: dict, batch_idx: int) -> dict[str, dict[str, Tensor]]:
        return self._eval_step(batch, batch_idx)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Returns the SR images in [0, 1] (B,3,H,W) on the CPU with their names and scales."""
        sr = self.super_resolve(batch, batch_idx)
        own = next(iter(sr.values()))
        return {
            "sr": ((own.clamp(-1, 1) + 1) / 2).cpu(),
            "name": batch.get("name"),
            "scale": batch["scale"].cpu(),
        }

    def _check_finite(self, loss: Tensor, batch: dict) -> None:
        # Stop before a NaN reaches the weights: the last good checkpoint stays the newest one.
        if not torch.isfinite(loss):
            scale = float(batch["scale"][0])
            raise FloatingPointError(
                f"non-finite training loss ({loss.item()}) at global step {self.global_step}, "
                f"batch {self.trainer.fit_loop.epoch_loop.batch_idx if self._trainer else '?'}, scale x{scale:.3f}; "
                "try a lower learning rate or gradient clipping (trainer.gradient_clip_val)"
            )


def warmup_cosine(warmup_steps: int, total_steps: int, start_factor: float = 0.1) -> Callable[[int], float]:
    """LR multiplier: linear warm-up from `start_factor` to 1 over `warmup_steps`, then cosine to 0 (SRNO).

    SRNO warms up x10 (GradualWarmupScheduler, multiplier 10) over 50 of 1000 epochs, then anneals by cosine.
    """
    total_steps = max(total_steps, 1)
    warmup_steps = min(max(warmup_steps, 0), total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return start_factor + (1.0 - start_factor) * step / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def stepwise(values: list[float], every: int) -> Callable[[int], float]:
    """LR multiplier for the authors' step decay: `values[k] / values[0]` during steps [k*every, (k+1)*every)."""
    if not values or values[0] <= 0:
        raise ValueError(f"lr_schedule must be a non-empty list of positive learning rates, got {values}")
    if every < 1:
        raise ValueError(f"lr_step_every must be >= 1, got {every}")

    def factor(step: int) -> float:
        return values[min(step // every, len(values) - 1)] / values[0]

    return factor
