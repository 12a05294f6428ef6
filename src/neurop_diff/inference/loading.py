"""Loading a model for inference: a checkpoint file (read once through ``weights.checkpoint.Checkpoint``: the
plain operator and NeurOp-Diff, no LightningModule) or a module already in memory, cached per (file, device).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from neurop_diff.diffusion.options import SamplingOptions
from neurop_diff.inference.device import resolve_device
from neurop_diff.runtime import tune_cpu_allocator

if TYPE_CHECKING:
    from neurop_diff.lit.diffusion import DiffusionModule
    from neurop_diff.lit.operator import OperatorModule
    from neurop_diff.models.neuropdiff import NeurOpDiff
    from neurop_diff.models.operator import Operator

    Source = str | Path | DiffusionModule | OperatorModule | Operator | "LoadedModel"

__all__ = ["DEFAULT_CHUNK", "DEFAULT_SCALE_MAX", "LoadedModel", "Stage", "clear_model_cache", "load_model"]

Stage = Literal["diffusion", "operator"]
#: Upper end of the training scales when a checkpoint does not record its datamodule (paper: U(1, 8)).
DEFAULT_SCALE_MAX = 8.0
#: Operator query points per chunk when the checkpoint does not say.
DEFAULT_CHUNK = 65536


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A checkpoint ready for inference. ``stage``: the checkpoint's own stage. ``operator``: the operator (None
    for a diffusion model with the bicubic condition). ``diffusion``: the plain NeurOp-Diff model and
    ``sampling`` its recorded sampling options (diffusion checkpoints), ``tile`` the UNet's training size (the
    default tile). ``scale_max``: upper end of the training scales. ``chunk_size``: operator query points per
    chunk."""

    stage: Stage
    operator: Operator | None
    diffusion: NeurOpDiff | None
    scale_max: float
    chunk_size: int | str | None
    device: torch.device
    source: str
    sampling: SamplingOptions | None = None
    tile: int | None = None


def load_model(checkpoint: Source, device: str | torch.device = "auto") -> LoadedModel:
    """A :class:`LoadedModel` from a checkpoint file (OperatorModule or DiffusionModule checkpoint, or the
    authors' SRNO / LIIF weights) or from a module already in memory (moved to ``device``, set to eval).

    Files are cached per (resolved path, modification time, device) for the life of the process. The first
    model loaded for the CPU tunes glibc's allocator as the ``neurop-diff`` command does
    (:func:`neurop_diff.runtime.tune_cpu_allocator`: freed memory is kept for reuse, 1.1-2x faster sampling;
    ``NEUROP_DIFF_MALLOC=default`` before the first call keeps the C library's behaviour).
    """
    dev = resolve_device(device)
    if dev.type == "cpu":
        tune_cpu_allocator()  # once per process; a no-op off glibc
    if isinstance(checkpoint, LoadedModel):
        if checkpoint.device != dev:
            raise ValueError(f"model was loaded on {checkpoint.device}, asked to run on {dev}: reload it")
        return checkpoint
    if isinstance(checkpoint, (str, Path)):
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        stat = path.stat()
        return _load_file(str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(dev))
    return _from_module(checkpoint, dev)


def clear_model_cache() -> None:
    """Forget the checkpoints loaded by :func:`load_model`."""
    _load_file.cache_clear()


def _from_module(module: Any, dev: torch.device) -> LoadedModel:
    from neurop_diff.lit.diffusion import DiffusionModule
    from neurop_diff.lit.operator import OperatorModule
    from neurop_diff.models.operator import Operator

    source = type(module).__name__
    if isinstance(module, DiffusionModule):
        model = module.model.to(dev).eval()
        hp = module.hparams
        return LoadedModel("diffusion", model.operator, model, DEFAULT_SCALE_MAX, hp.chunk_size, dev, source,
                           module.sampling, int(hp.image_size))  # fmt: skip
    if isinstance(module, OperatorModule):
        model = module.model.to(dev).eval()
        return LoadedModel("operator", model, None, DEFAULT_SCALE_MAX, module.hparams.chunk_size, dev, source)
    if isinstance(module, Operator):
        return LoadedModel(
            "operator", module.to(dev).eval(), None, DEFAULT_SCALE_MAX, DEFAULT_CHUNK, dev, source
        )
    raise TypeError(
        "checkpoint must be a path, a DiffusionModule, an OperatorModule or an operator (SRNO, LIIF), got "
        f"{type(module).__name__}"
    )


@functools.lru_cache(maxsize=4)
def _load_file(path: str, mtime_ns: int, size: int, device: str) -> LoadedModel:
    from neurop_diff.weights.checkpoint import Checkpoint

    dev = torch.device(device)
    ckpt = Checkpoint.read(path)  # weights only, memory-mapped; the models copy what they use
    scale_max = float(ckpt.data_hparams.get("scale_max", DEFAULT_SCALE_MAX))
    chunk = ckpt.hparams.get("chunk_size", DEFAULT_CHUNK)
    if ckpt.stage() == "diffusion":  # the authors' NeurOp-Diff list is refused here, with what to do
        model = ckpt.neuropdiff().to(dev)
        tile = int(ckpt.hparams.get("image_size", 256))
        return LoadedModel(
            "diffusion", model.operator, model, scale_max, chunk, dev, path, ckpt.sampling(), tile
        )
    model = ckpt.operator()  # its errors name the file, what it is and what to do
    return LoadedModel("operator", model.to(dev).eval(), None, scale_max, chunk, dev, path)
