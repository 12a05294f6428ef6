"""Shared plumbing of the two LightningModules: one eval step for val/test/predict, schedules, the training
random stream, the non-finite loss stop and clear architecture errors when loading a checkpoint."""

from __future__ import annotations

import hashlib
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from os import PathLike
from typing import Any, ClassVar

import lightning as L
import torch
from torch import Tensor

from neurop_diff.compat import attached_trainer
from neurop_diff.weights.checkpoint import Checkpoint, read_checkpoint

#: Checkpoint key of the SRTask state (the count of training batches that seeds the training random stream).
STATE_KEY = "neurop_diff"
__all__ = [
    "STATE_KEY",
    "SRTask",
    "plain_value",
    "stepwise",
    "stream_seed",
    "warmup_cosine",
]


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

    #: Hyper-parameters that set the weights (shapes, meaning): a checkpoint's value wins; see neurop_diff.cli.
    ARCH_HPARAMS: ClassVar[frozenset[str]] = frozenset()

    _train_batches: int = 0

    @classmethod
    def weight_hparams(cls, hparams: Mapping[str, Any]) -> frozenset[str]:
        """The hyper-parameters that set the weights of a model with ``hparams`` (default: ``ARCH_HPARAMS``; a
        module whose architectures take different sizes narrows it to the one ``hparams`` builds)."""
        return cls.ARCH_HPARAMS

    def super_resolve(self, batch: dict, batch_idx: int) -> dict[str, Tensor]:
        raise NotImplementedError

    # --- the training random stream ----------------------------------------------------------------------
    def training_seed(self, stream: str = "global") -> int:
        """Seed of this training batch for `stream` (call within a training step)."""
        rank = self.global_rank if attached_trainer(self) is not None else 0
        return stream_seed(stream, self.hparams.get("seed", 0), rank, self._train_batches - 1)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._train_batches += 1
        torch.manual_seed(self.training_seed())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[STATE_KEY] = {"train_batches": self._train_batches}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._train_batches = int(checkpoint.get(STATE_KEY, {}).get("train_batches", 0))
        Checkpoint.of(checkpoint).require(type(self).__name__)  # a training checkpoint of this stage
        # Read by load_state_dict (which Lightning calls next) for the hint of a strict-loading error.
        self._loading_hparams = dict(checkpoint.get("hyper_parameters") or {})

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """torch's strict loading; its report (missing, unexpected, mis-shaped parameters) comes with the
        architecture settings that differ from the checkpoint being loaded, if any."""
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        except RuntimeError as err:
            hp, self._loading_hparams = getattr(self, "_loading_hparams", {}), {}
            keys = self.weight_hparams(hp) & set(hp)
            differ = [
                f"{k}: checkpoint {hp[k]!r} vs model {self.hparams[k]!r}"
                for k in self.hparams
                if k in keys and plain_value(hp[k]) != plain_value(self.hparams[k])
            ]
            why = (
                f"the architecture settings differ ({', '.join(differ)})"
                if differ
                else "the checkpoint was made by another architecture or code version"
            )
            raise ValueError(
                f"the checkpoint does not fit {type(self).__name__}: {why}. Build the model with the "
                f"checkpoint's settings (`--ckpt_path` does so by itself). {err}"
            ) from err

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | PathLike[str],
        map_location: Any = None,
        hparams_file: Any = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> SRTask:
        """Lightning's `load_from_checkpoint`, reading the file with `neurop_diff.weights.read_checkpoint`
        (weights only, whatever `weights_only` says). `kwargs` override the stored hyper-parameters."""
        if hparams_file is not None:
            raise ValueError("hparams_file is not supported: the checkpoint holds the hyper-parameters")
        checkpoint = read_checkpoint(checkpoint_path, mmap=True)  # load_state_dict copies what it needs
        try:
            module = cls.from_checkpoint(checkpoint, strict=strict, **kwargs)
        except ValueError as err:
            raise ValueError(f"{checkpoint_path}: {err}") from err
        if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
            module = module.to(map_location)
        return module

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], strict: bool | None = None, **kwargs: Any) -> SRTask:
        """The module of a checkpoint already read (``read_checkpoint``), on the CPU; ``kwargs`` override the
        stored hyper-parameters (those the constructor does not take are left out)."""
        Checkpoint.of(checkpoint).require(cls.__name__)
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
        stored = dict(checkpoint.get("hyper_parameters") or {})
        module = cls(**{k: v for k, v in {**stored, **kwargs}.items() if k in accepted})
        module.on_load_checkpoint(checkpoint)
        module.load_state_dict(
            checkpoint["state_dict"], strict=module.strict_loading if strict is None else strict
        )
        return module

    def _eval_step(self, batch: dict, batch_idx: int) -> dict[str, dict[str, Tensor]]:
        return {"sr": self.super_resolve(batch, batch_idx)}

    def validation_step(self, batch: dict, batch_idx: int) -> dict[str, dict[str, Tensor]]:
        return self._eval_step(batch, batch_idx)

    def test_step(self, batch: dict, batch_idx: int) -> dict[str, dict[str, Tensor]]:
        return self._eval_step(batch, batch_idx)

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Returns the SR images in [0, 1] (B,3,H,W) on the CPU with their names and scales, and the own
        method's (B,) `seed_std` when the eval step gives one (several samples per image)."""
        step = self._eval_step(batch, batch_idx)
        own, image = next(iter(step["sr"].items()))
        out = {
            "sr": ((image.float().clamp(-1, 1) + 1) / 2).cpu(),
            "name": batch.get("name"),
            "scale": batch["scale"].cpu(),
        }
        if own in step.get("seed_std", {}):
            out["seed_std"] = step["seed_std"][own].float().cpu()
        return out

    def _check_finite(self, loss: Tensor, batch: dict) -> None:
        # Stop before a NaN reaches the weights: the last good checkpoint stays the newest one. Under DDP every
        # rank learns of a non-finite loss on any rank (one scalar all-reduce), so all stop together instead of
        # the others waiting for the gradients forever.
        bad = (~torch.isfinite(loss.detach())).float()
        trainer = attached_trainer(self)
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


def adam(params: Iterable[torch.nn.Parameter], **kwargs: Any) -> torch.optim.Adam:
    """``torch.optim.Adam`` over ``params`` (``kwargs`` as Adam's), fused into one kernel over all parameters
    where torch has that for their device (CPU, CUDA): the same update, a third cheaper on the CPU dev box."""
    params = list(params)
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    opt = torch.optim.Adam(params, fused=fused or None, **kwargs)
    if fused:
        opt.register_step_pre_hook(_match_grad_layouts)
    return opt


def _match_grad_layouts(opt: torch.optim.Optimizer, *_: Any) -> None:
    # torch's fused Adam pairs parameter and gradient elements by memory position (torch 2.14, CPU): a gradient
    # laid out otherwise (a contiguous one for a channels_last weight, set by hand) would update the wrong
    # elements. Autograd's gradients follow the parameter's layout, so this copies nothing in training.
    for group in opt.param_groups:
        for p in group["params"]:
            if p.grad is not None and p.grad.stride() != p.stride():
                p.grad = torch.empty_like(p).copy_(p.grad)


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


def plain_value(value: Any) -> Any:
    """Tuples as lists, mappings and namespaces as dicts, recursively: hyper-parameters as comparable values
    (a checkpoint and a config may store either form)."""
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    if hasattr(value, "items"):
        return {k: plain_value(v) for k, v in dict(value.items()).items()}
    return value
