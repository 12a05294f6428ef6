"""Pure degradation helpers: scale sampling, bicubic (antialiased) downsampling (and, re-exported from
``neurop_diff.coords``, the coordinate grid and cell).

Conventions (docs/architecture.md): images are float BCHW in [-1, 1]; a scale is HR/LR (> 1 is upsampling);
an LR made at nominal scale ``s`` from an HR of height ``H`` has height ``round(H / s)`` and its *true* scale
``H / round(H / s)`` is what coordinates and cells use. No Lightning here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# Re-exported: the coordinate helpers live in neurop_diff.coords (shared with models/).
from neurop_diff.coords import make_cell, make_coord, pixel_centres

__all__ = [
    "bicubic_resize",
    "degrade",
    "lr_size",
    "make_cell",
    "make_coord",
    "pixel_centres",
    "sample_scale",
    "validate_scale_range",
]


def lr_size(hr_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """LR size for an HR of ``(H, W)`` at scale ``s`` (HR/LR): ``(round(H / s), round(W / s))``, each >= 1.

    Python's ``round`` (half to even) is used; it only matters when ``H / s`` is exactly ``k + 0.5``.
    """
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"lr_size: scale must be a finite positive number, got {scale!r}")
    return tuple(max(1, round(int(v) / scale)) for v in hr_size)  # type: ignore[return-value]


def bicubic_resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bicubic resize of a float ``(B, C, H, W)`` tensor to ``size`` with antialiasing (PIL-like, a = -0.5).

    Values are not clamped (bicubic overshoots); the caller clamps to its range.
    """
    if x.ndim != 4:
        raise ValueError(f"bicubic_resize: expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x.clone()
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)


def degrade(hr: Tensor, scale: float) -> tuple[Tensor, float]:
    """LR from HR ``(B, 3, H, W)`` in [-1, 1] at nominal scale ``scale``: bicubic antialiased, clamped to [-1, 1].

    Returns ``(lr, true_scale)`` with ``lr`` of size ``lr_size((H, W), scale)`` and ``true_scale = H / h``.
    """
    if not hr.is_floating_point():
        raise ValueError(f"degrade: expected a float tensor in [-1, 1], got dtype {hr.dtype}")
    h, w = hr.shape[-2:]
    size = lr_size((h, w), scale)
    lr = bicubic_resize(hr, size).clamp_(-1.0, 1.0)
    return lr, h / size[0]


def sample_scale(scale_min: float, scale_max: float, generator: torch.Generator | None = None) -> float:
    """One scale drawn uniformly from ``[scale_min, scale_max]`` with ``generator`` (CPU)."""
    u = torch.rand((), generator=generator, dtype=torch.float64).item()
    return scale_min + (scale_max - scale_min) * u


def validate_scale_range(scale_min: float, scale_max: float) -> None:
    """Raise ``ValueError`` unless ``1 <= scale_min <= scale_max`` and both are finite."""
    for name, value in (("scale_min", scale_min), ("scale_max", scale_max)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1 (scale is HR/LR), got {value!r}")
    if scale_max < scale_min:
        raise ValueError(f"scale_max ({scale_max!r}) must be >= scale_min ({scale_min!r})")
