"""The Python API of the upscaler: `upscale(image, scale=3.7, checkpoint=...)` for any real scale >= 1.

Stages: ``operator`` evaluates the operator (SRNO or LIIF) exactly over the whole scene (chunked: memory bounded by the chunk
size, result identical to one full evaluation); ``diffusion`` computes the operator prior once for the
whole scene, then samples on overlapping UNet-sized tiles blended at every step (``diffusion.tiling``);
``samples=K`` averages K samples and maps their spread (``inference.ensemble``, ``inference.uncertainty``).
Models are loaded by ``inference/loading.py`` (cached per (file, device) in the process).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from neurop_diff.diffusion.tiling import plan_tiles
from neurop_diff.inference import io
from neurop_diff.inference.device import resolve_device, sampling_autocast
from neurop_diff.inference.ensemble import mean_std
from neurop_diff.inference.loading import (
    DEFAULT_SCALE_MAX,
    LoadedModel,
    Stage,
    clear_model_cache,
    load_model,
)
from neurop_diff.inference.memory import check_memory
from neurop_diff.inference.uncertainty import STD_MAX, check_samples, grey_channel, write_std

if TYPE_CHECKING:
    from neurop_diff.inference.loading import Source

__all__ = [
    "DEFAULT_SCALE_MAX",
    "LoadedModel",
    "OutOfDistributionScaleWarning",
    "clear_model_cache",
    "iter_samples",
    "load_model",
    "output_size",
    "resolve_device",
    "upscale",
    "upscale_file",
    "upscale_tensor",
]


class OutOfDistributionScaleWarning(UserWarning):
    """The requested scale is above the checkpoint's training range: allowed, but out of distribution."""


def output_size(
    in_size: tuple[int, int], scale: float | None = None, size: tuple[int, int] | None = None
) -> tuple[int, int]:
    """Output (H, W) from exactly one of ``scale`` (any real >= 1: ``round(h * scale)``) and ``size``."""
    h, w = in_size
    if (scale is None) == (size is None):
        raise ValueError(f"give exactly one of scale and size, got scale={scale!r}, size={size!r}")
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise ValueError(f"scale must be a finite real number >= 1, got {scale!r}")
        if scale < 1:
            raise ValueError(f"scale must be >= 1 (HR/LR; this is an upscaler), got {scale!r}")
        return max(1, round(h * scale)), max(1, round(w * scale))
    if len(size) != 2 or any(isinstance(v, bool) or int(v) != v for v in size):
        raise ValueError(f"size must be two ints (H, W), got {size!r}")
    out = int(size[0]), int(size[1])
    if out[0] < h or out[1] < w:
        raise ValueError(
            f"size {out} is smaller than the input {in_size}: the scale must be >= 1 on both axes"
        )
    return out


def _pick_stage(model: LoadedModel, stage: str | None) -> Stage:
    if stage is None:
        return model.stage
    if stage not in ("diffusion", "operator"):
        raise ValueError(f"stage must be 'diffusion' or 'operator', got {stage!r}")
    if stage == "diffusion" and model.diffusion is None:
        raise ValueError(
            f"{model.source} is an operator checkpoint: it has no diffusion model; use stage='operator' "
            "(or leave stage unset) or give a DiffusionModule checkpoint"
        )
    if stage == "operator" and model.operator is None:
        raise ValueError(f"{model.source} has no operator (a diffusion model with the bicubic condition)")
    return stage


@torch.inference_mode()
def upscale_tensor(
    lr: Tensor, size: tuple[int, int], model: LoadedModel, stage: Stage | None = None, *, seed: int = 0, **kwargs: Any
) -> Tensor:  # fmt: skip
    """SR of ``lr`` (1, 3, h, w) in [-1, 1] to ``size`` = (H, W); returns (1, 3, H, W) in [-1, 1] on the CPU.

    ``operator``: the operator's exact chunked evaluation (SRNO or LIIF). ``diffusion``: the model's own ``NeurOpDiff.sample``
    (``sampler`` and ``steps`` default to the checkpoint's), starting noise from ``starting_noise(seed)``, on
    tiles of ``tile`` HR pixels (default: the UNet's training ``image_size``) overlapping by ``overlap``
    (default ``tile // 4``), ``tile_batch`` tiles per UNet call. With one tile covering the image this is
    exactly what ``neurop-diff test`` samples for the same image and seed. ``kwargs``: :func:`iter_samples`'s.
    """
    return next(iter_samples(lr, size, model, stage, seeds=(seed,), **kwargs))


@torch.inference_mode()
def iter_samples(
    lr: Tensor,
    size: tuple[int, int],
    model: LoadedModel,
    stage: Stage | None = None,
    *,
    seeds: Sequence[int] = (0,),
    steps: int | None = None,
    sampler: str | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    tile_batch: int = 4,
    progress: bool = False,
) -> Iterator[Tensor]:
    """One SR (1, 3, H, W) in [-1, 1] on the CPU per seed in ``seeds``, as :func:`upscale_tensor` gives for
    that seed, made when asked for (a generator: the caller decides how many are alive). The condition (the
    operator prior) is computed once for all of them. The operator stage yields its one deterministic result.
    """
    stage = _pick_stage(model, stage)
    lr = lr.to(model.device, torch.float32)
    if stage == "operator":
        yield model.operator(lr, tuple(size), chunk_size=model.chunk_size).clamp(-1, 1).cpu()
        return
    method, opts = model.diffusion, model.sampling.replace(sampler=sampler, steps=steps)
    tile = int(model.tile) if tile is None else int(tile)
    overlap = tile // 4 if overlap is None else int(overlap)
    _, grid = plan_tiles(tuple(size), tile, overlap, method.unet.factor)  # checks them before the prior
    n_steps = opts.calls(method.schedule.T)  # UNet evaluations per tile
    seeds = [int(s) for s in seeds]
    bar = tqdm(
        total=n_steps * len(grid) * len(seeds),
        desc=f"diffusion: {opts.sampler} {n_steps} UNet calls x {len(grid)} tile(s)"
        + (f" x {len(seeds)} samples" if len(seeds) > 1 else ""),
        unit="tile",
        disable=not progress,
        leave=False,
    )
    with bar:
        cond = method.condition(lr, tuple(size), with_prior=False)  # once, not once per sample
        for seed in seeds:
            with sampling_autocast(lr.device):
                sample = method.sample(
                    lr, tuple(size), **opts.sample_kwargs(), seed=seed, condition=cond, tile=tile,
                    overlap=overlap, tile_batch=tile_batch, on_tiles=bar.update,
                )  # fmt: skip
            yield sample.float().clamp(-1, 1).cpu()


def _upscale_raster(
    raster: io.Raster, scale: float | None, size: tuple[int, int] | None, model: LoadedModel, *,
    stage: Stage | None = None, samples: int = 1, seed: int = 0, **kwargs: Any,
) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """Model output (H, W, 3) float32 in [0, 1] for a raster, and None; for ``samples`` K > 1 the per-pixel
    mean of K samples (seeds ``seed .. seed + K - 1``) and their std (C, H, W) float32 in [0, 1] units (C = 1
    for grey: the std of the grey output). Warns once when out of distribution."""
    stage = _pick_stage(model, stage)
    check_samples(samples, stage, model.source)
    h, w = raster.rgb.shape[:2]
    out_size = output_size((h, w), scale, size)
    check_memory(out_size, stage, f"{w}x{h} input", samples)  # before any work
    true_scale = max(out_size[0] / h, out_size[1] / w)
    if true_scale > model.scale_max + 1e-9:
        warnings.warn(
            f"scale x{true_scale:.3g} is above the training range of {model.source} (scales up to "
            f"x{model.scale_max:g}): out of distribution, expect lower fidelity",
            OutOfDistributionScaleWarning,
            stacklevel=3,
        )
    lr = torch.from_numpy(raster.rgb).permute(2, 0, 1)[None] * 2 - 1
    draws = iter_samples(lr, out_size, model, stage, seeds=range(seed, seed + samples), **kwargs)
    if samples == 1:
        sr, std = next(draws), None
    else:  # running mean / std: never K canvases at once; grey: the spread of the written (channel-mean) band
        sr, std, _ = mean_std(draws, grey_channel if raster.gray else None)
        sr, std = sr.float().expand(-1, 3, -1, -1), (std[0] / 2).float().numpy()  # [-1, 1] -> [0, 1] units
    return ((sr[0] + 1) / 2).permute(1, 2, 0).numpy(), std


def upscale(
    image: str | Path | np.ndarray | Image.Image,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    *,
    checkpoint: Source,
    stage: Stage | None = None,
    steps: int | None = None,
    sampler: str | None = None,
    seed: int = 0,
    tile: int | None = None,
    overlap: int | None = None,
    tile_batch: int = 4,
    bands: tuple[int, ...] | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
    samples: int = 1,
    return_std: bool = False,
) -> np.ndarray | Image.Image | tuple[np.ndarray | Image.Image, np.ndarray]:
    """Upscales an image by any real ``scale`` >= 1, or to ``size`` = (H, W).

    Args:
        image: a file path (PNG, JPEG, TIFF, GeoTIFF), a PIL image or an (H, W[, C]) numpy array (uint8, other
            integer dtypes: stretched as files are, float: in [0, 1]).
        scale, size: exactly one. Scales above the checkpoint's training range (its datamodule's
            ``scale_max``, default 8) run with an :class:`OutOfDistributionScaleWarning`.
        checkpoint: a checkpoint path (OperatorModule or DiffusionModule, or the authors' SRNO / LIIF weights), a
            module in memory, or a :class:`LoadedModel`.
        stage: ``"diffusion"`` or ``"operator"``; default the checkpoint's own stage. A diffusion checkpoint
            can also give its operator's output; an operator checkpoint cannot give ``"diffusion"``.
        steps, sampler, seed: sampling steps and sampler (``ddim``, ``ddpm``, ``euler``, ``heun``,
            ``dpmpp_2m``; a flow: ``euler``, ``heun``, ``ddim``; default: the checkpoint's own)
            and the noise seed (diffusion; the same seed gives what ``neurop-diff test`` gives).
        tile, overlap, tile_batch: diffusion tiles in HR pixels (default: the UNet's training size, overlap
            a quarter of it), tiles per UNet call. The operator stage is always exact and ignores them.
        bands: 1-based bands to use (three as RGB, or one as grey); see :mod:`neurop_diff.inference.io`.
        device: ``"auto"`` (CUDA, MPS, else CPU) or a torch device.
        progress: a tqdm bar over the diffusion steps and tiles.
        samples: K >= 1 diffusion samples, seeds ``seed, seed + 1, ..., seed + K - 1`` (sample k is exactly the
            single sample of seed ``seed + k``); for K > 1 the result is their per-pixel mean (computed
            running: memory does not grow with K, time is K x one sample). The operator stage needs K = 1.
        return_std: also return the per-pixel standard deviation of the K > 1 samples (unbiased, K - 1).

    Returns:
        A PIL image for a PIL input (same mode family: L or RGB), else a numpy array (H, W, 3) or (H, W) in the
        input's dtype (uint8 for 8-bit images; float32 in [0, 1] for float arrays). Only the chosen bands.
        With ``return_std``: ``(image, std)``, std float32 (H, W, 3) or (H, W) (grey) in [0, 1] image units.
    """
    if return_std and samples < 2:
        raise ValueError(f"return_std needs samples >= 2 (a spread), got samples={samples!r}")
    model = load_model(checkpoint, device)
    if isinstance(image, (str, Path)):
        raster = io.read_image(image, bands)
    elif isinstance(image, Image.Image):
        raster = io.from_array(io.pil_array(image), "PIL image", bands)
    elif isinstance(image, np.ndarray):
        raster = io.from_array(image, "array", bands)
    else:
        raise TypeError(f"image must be a path, a PIL image or a numpy array, got {type(image).__name__}")
    rgb, std = _upscale_raster(
        raster, scale, size, model, stage=stage, steps=steps, sampler=sampler, seed=seed, tile=tile, overlap=overlap,
        tile_batch=tile_batch, progress=progress, samples=samples,
    )  # fmt: skip
    data = io.to_array(rgb, raster)
    arr = data[0] if raster.gray else np.ascontiguousarray(data.transpose(1, 2, 0))
    out = Image.fromarray(arr) if isinstance(image, Image.Image) else arr
    return (out, std[0] if raster.gray else std.transpose(1, 2, 0)) if return_std else out


def upscale_file(
    src: str | Path,
    dst: str | Path,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    *,
    checkpoint: Source,
    bands: tuple[int, ...] | None = None,
    device: str | torch.device = "auto",
    std_max: float = STD_MAX,
    report: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> Path:
    """Upscales the file ``src`` into ``dst`` in the same form (a GeoTIFF stays a GeoTIFF: same CRS and bounds,
    scaled transform, nodata kept, input dtype). ``kwargs``: those of :func:`upscale` (but ``return_std``).

    With ``samples`` K > 1, ``dst`` is the mean of the K samples and the std map goes beside it
    (:func:`neurop_diff.inference.uncertainty.write_std`: ``<dst stem>_std.png`` colour-mapped over
    0..``std_max`` plus ``_std.npy``, or for a GeoTIFF a float32 ``<dst stem>_std.tif``); ``report`` gets
    its one-line summary (files, units, scale)."""
    model = load_model(checkpoint, device)
    raster = io.read_image(src, bands)
    rgb, std = _upscale_raster(raster, scale, size, model, **kwargs)
    path = io.write_image(dst, rgb, raster)
    if std is not None:
        seed = int(kwargs.get("seed", 0))
        write_std(path, std, raster, range(seed, seed + kwargs["samples"]), std_max, report)
    return path
