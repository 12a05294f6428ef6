"""Seed spread: how much K samples of one input differ, overall and split by HR's texture (a posterior sample
should vary where the LR leaves detail open, and not on flat ground). Pure torch; [0, 1] units.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["seed_std", "seed_std_by_texture", "texture_masks"]


def seed_std(samples: Tensor) -> Tensor:
    """Seed spread: ``samples`` (K, B, C, H, W) in [-1, 1] (K >= 2 samples of each of B inputs) -> (B,), the
    per-pixel standard deviation over K (unbiased variance, square-rooted) in [0, 1] units (samples mapped
    by (x + 1) / 2, clamped), averaged over channels and pixels. 0 for identical samples."""
    if samples.ndim != 5 or samples.shape[0] < 2:
        raise ValueError(f"seed_std: expected (K >= 2, B, C, H, W), got shape {tuple(samples.shape)}")
    unit = ((samples.double() + 1) / 2).clamp(0, 1)
    return unit.std(dim=0, correction=1).mean(dim=(1, 2, 3)).float()


def texture_masks(hr: Tensor, window: int = 7, quantile: float = 0.25) -> tuple[Tensor, Tensor]:
    """(textured, flat) boolean masks ``(B, 1, H, W)`` of ``hr`` ``(B, C, H, W)`` in [-1, 1]: per image, the
    pixels whose local luminance standard deviation (``window`` x ``window``, reflect padding) is in the top /
    bottom ``quantile`` of that image's."""
    luma = hr.double().mean(dim=1, keepdim=True)
    pad = window // 2
    padded = F.pad(luma, (pad, pad, pad, pad), mode="reflect")
    mean = F.avg_pool2d(padded, window, stride=1)
    local = (F.avg_pool2d(padded**2, window, stride=1) - mean**2).clamp(min=0).sqrt()
    flat_local = local.flatten(1)
    hi = flat_local.quantile(1 - quantile, dim=1).view(-1, 1, 1, 1)
    lo = flat_local.quantile(quantile, dim=1).view(-1, 1, 1, 1)
    return local >= hi, local <= lo


def seed_std_by_texture(samples: Tensor, hr: Tensor, quantile: float = 0.25) -> tuple[Tensor, Tensor]:
    """``seed_std`` split by HR's texture: (textured, flat), each ``(B,)`` in [0, 1] units, the per-pixel seed
    spread of ``samples`` (K, B, C, H, W) averaged over the pixels of ``texture_masks(hr)``. A posterior sample
    should vary more where HR has detail the LR cannot pin down than on flat ground."""
    if samples.ndim != 5 or samples.shape[0] < 2:
        raise ValueError(f"seed_std_by_texture: expected (K >= 2, B, C, H, W), got {tuple(samples.shape)}")
    spread = ((samples.double() + 1) / 2).clamp(0, 1).std(dim=0, correction=1).mean(dim=1, keepdim=True)
    textured, flat = texture_masks(hr, quantile=quantile)

    def masked_mean(mask: Tensor) -> Tensor:
        return ((spread * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3)).clamp(min=1)).float()

    return masked_mean(textured), masked_mean(flat)
