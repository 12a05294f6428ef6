"""Shared plumbing of the two LightningModules: one eval step for val/test/predict, schedules, the training
random stream, the non-finite loss stop and clear architecture errors when loading a checkpoint."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor

#: Checkpoint key of the SRTask state (the count of training batches that seeds the training random stream).
STATE_KEY = "neurop_diff"
#: Hyper-parameters that do not set parameter shapes (left out of the error when a checkpoint does not fit).
_NON_ARCH_HPARAMS = {"lr", "warmup_fraction", "weight_decay", "chunk_size", "weights", "operator_ckpt", "seed",
                     "sample_q", "sampling_steps", "eta", "spacing", "loss", "lr_schedule", "lr_step_every",
                     "dropout", "_instantiator"}  # fmt: skip


#: What each module's checkpoint is, for error messages.
STAGES = {
    "OperatorModule": "stage 1, the neural operator: configs/operator*.yaml",
    "DiffusionModule": "stage 2, the diffusion model: configs/diffusion*.yaml",
}


def checkpoint_kind(checkpoint: dict[str, Any]) -> str | None:
    """ "OperatorModule" / "DiffusionModule" (from the recorded class or the parameter names), or None."""
    hp = checkpoint.get("hyper_parameters") or {}
    class_path = hp.get("_class_path") if isinstance(hp, dict) else None
    if isinstance(class_path, str):
        return class_path.rsplit(".", 1)[-1]
    sd = checkpoint.get("state_dict")
    if isinstance(sd, dict):
        if any(k.startswith("unet.") for k in sd):
            return "DiffusionModule"
        if any(k.startswith("model.") for k in sd):
            return "OperatorModule"
    return None


def stream_seed(*parts: object) -> int:
    """A 63-bit seed from any values (stable across runs, processes and machines: no Python hash salt)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class SRTask(L.LightningModule):
    """Base of `OperatorModule` and `DiffusionModule`.

    Subclasses implement `super_resolve(batch, batch_idx) -> {method: (B,3,H,W) in [-1,1]}` (their own method
    first); validation, test and predict all go through it, and the `SRMetrics` callback reads the result.

    Training randomness is counter-based: before every training batch the global torch generators are seeded
    from (`hparams.seed`, global rank, number of training batches so far), so dropout, the operator's point
    subsets and the diffusion noise differ per rank and per batch, and a resumed run (the counter is in the
    checkpoint) draws exactly what the uninterrupted run draws, on every rank.
    """

    #: Metric that ModelCheckpoint / early stopping watch (logged by the SRMetrics callback).
    monitor = "val/psnr"
    mode = "max"

    _train_batches: int = 0

    def super_resolve(self, batch: dict, batch_idx: int) -> dict[str, Tensor]:
        raise NotImplementedError

    # --- the training random stream ----------------------------------------------------------------------
    def training_seed(self, stream: str = "global") -> int:
        """Seed of this training batch for `stream` (call within a training step)."""
        rank = self.global_rank if self._trainer is not None else 0
        return stream_seed(stream, self.hparams.get("seed", 0), rank, self._train_batches - 1)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._train_batches += 1
        torch.manual_seed(self.training_seed())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[STATE_KEY] = {"train_batches": self._train_batches}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._train_batches = int(checkpoint.get(STATE_KEY, {}).get("train_batches", 0))
        self._check_fits(checkpoint)

    def _check_fits(self, checkpoint: dict[str, Any]) -> None:
        """Raises ValueError naming the parameters of `checkpoint` that do not fit this module, and why."""
        theirs = checkpoint.get("state_dict")
        if not isinstance(theirs, dict):
            raise ValueError(
                "the checkpoint has no 'state_dict': not a neurop-diff training checkpoint (the authors' weights "
                "are converted with `neurop-diff import-weights`)"
            )
        own = self.state_dict()
        shapes = [
            f"{k}: checkpoint {tuple(theirs[k].shape)} vs model {tuple(v.shape)}"
            for k, v in own.items()
            if k in theirs and hasattr(theirs[k], "shape") and tuple(theirs[k].shape) != tuple(v.shape)
        ]
        strict = getattr(self, "strict_loading", True)
        missing = sorted(set(own) - set(theirs)) if strict else []
        unexpected = sorted(set(theirs) - set(own)) if strict else []
        if not (shapes or missing or unexpected):
            return
        hp = checkpoint.get("hyper_parameters", {}) or {}
        kind = checkpoint_kind(checkpoint)
        if kind is not None and kind != type(self).__name__:
            raise ValueError(
                f"this is a {kind} checkpoint ({STAGES.get(kind, 'another model')}); "
                f"a {type(self).__name__} checkpoint ({STAGES.get(type(self).__name__, '')}) is expected here"
            )
        differ = [
            f"{k}: checkpoint {hp[k]!r} vs model {self.hparams[k]!r}"
            for k in self.hparams
            if k in hp and k not in _NON_ARCH_HPARAMS and hp[k] != self.hparams[k]
        ]
        parts = [f"{len(shapes)} parameter(s) of another shape: {shapes[:10]}"] if shapes else []
        if missing:
            parts.append(f"{len(missing)} parameter(s) missing from the checkpoint: {missing[:10]}")
        if unexpected:
            parts.append(f"{len(unexpected)} parameter(s) the model does not have: {unexpected[:10]}")
        why = (
            f"; the architecture settings differ ({', '.join(differ)})"
            if differ
            else "; the checkpoint was made by another architecture or code version"
        )
        raise ValueError(
            f"the checkpoint does not fit {type(self).__name__}: "
            + "; ".join(parts)
            + why
            + ". Build the model with the checkpoint's settings (`--ckpt_path` does so by itself unless "
            "they are overridden)"
        )

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
            "sr": ((own.float().clamp(-1, 1) + 1) / 2).cpu(),
            "name": batch.get("name"),
            "scale": batch["scale"].cpu(),
        }

    def _check_finite(self, loss: Tensor, batch: dict) -> None:
        # Stop before a NaN reaches the weights: the last good checkpoint stays the newest one. Under DDP every
        # rank learns of a non-finite loss on any rank (one scalar all-reduce), so all stop together instead of
        # the others waiting for the gradients forever.
        bad = (~torch.isfinite(loss.detach())).float()
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            bad = trainer.strategy.reduce(bad, reduce_op="sum")
        if float(bad) == 0:
            return
        scale = float(batch["scale"][0])
        where = "" if torch.isfinite(loss.detach()) else f" ({loss.item()})"
        batch_idx = trainer.fit_loop.epoch_loop.batch_idx if trainer is not None else "?"
        last = getattr(trainer.checkpoint_callback, "last_model_path", "") if trainer is not None else ""
        raise FloatingPointError(
            f"non-finite training loss{where or ' on another rank'} at global step {self.global_step}, "
            f"batch {batch_idx}, scale x{scale:.3f}: training stopped before updating the weights"
            + (f"; the last good checkpoint is {last}" if last else "")
            + "; try a lower learning rate or gradient clipping (trainer.gradient_clip_val)"
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
