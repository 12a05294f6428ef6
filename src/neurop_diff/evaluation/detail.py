"""How much detail an image carries, with no learned weights: its spectral energy above half the Nyquist
frequency, and PSNR / SSIM of its high-pass band against HR's.

Inputs are the images PSNR/SSIM see (``MetricConvention.prepare``: [0, 1], 8-bit quantised, RGB or Y, border
cropped), ``(B, C, H, W)``; every measure is per image, computed in float64.

* ``hf_share``: per channel, the mean removed and a (periodic) Hann window applied (so the wrap-around jump
  at the image border does not land in the high band), the 2-D DFT's energy ``|X|^2`` at radial frequencies
  above ``cut`` (0.5) of Nyquist, ``sqrt((fy / 0.5)^2 + (fx / 0.5)^2) > cut`` with ``f`` in cycles/pixel,
  over the total energy, summed over the channels. In [0, 1]; 0 for a flat image. A sample that restores
  texture moves toward HR's share; a smooth (operator, bicubic) output has a lower one.
* ``high_pass``: ``x - gaussian_blur(x)``, sigma 1.5 px (11 taps, reflect padding). Its gain is 1/2 at
  0.125 cycles/px (a quarter of Nyquist: the LR Nyquist at x4) and above 0.93 beyond half Nyquist.
* ``hf_psnr``: ``10 log10(1 / mse(high_pass(sr), high_pass(hr)))`` (data range 1, as the images; inf when
  equal); ``hf_ssim``: SSIM of the two bands (the convention's SSIM: 11x11 Gaussian window, valid region).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from neurop_diff.evaluation.convention import ssim_per_image

HF_CUT = 0.5  # fraction of the Nyquist frequency
HP_SIGMA = 1.5  # pixels
DETAIL_METRICS = ("hf_share", "hf_psnr", "hf_ssim")


def hf_share(x: Tensor, cut: float = HF_CUT) -> Tensor:
    """Share of spectral energy above ``cut`` * Nyquist (radial) of ``x`` (B, C, H, W) -> (B,) in [0, 1]."""
    if x.ndim != 4:
        raise ValueError(f"hf_share expects (B, C, H, W), got shape {tuple(x.shape)}")
    x = x.double()
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    h, w = x.shape[-2:]
    window = _hann(h, x).view(h, 1) * _hann(w, x).view(1, w)
    energy = torch.fft.fft2(x * window).abs().square().sum(1)  # (B, H, W), channels summed
    fy = torch.fft.fftfreq(h, device=x.device, dtype=x.dtype).view(h, 1) / 0.5
    fx = torch.fft.fftfreq(w, device=x.device, dtype=x.dtype).view(1, w) / 0.5
    high = (fy.square() + fx.square()).sqrt() > cut
    total = energy.sum((-2, -1))
    share = (energy * high).sum((-2, -1)) / total.clamp_min(torch.finfo(x.dtype).tiny)
    return torch.where(total > 0, share, torch.zeros_like(share)).float()


def _hann(n: int, like: Tensor) -> Tensor:
    if n < 2:
        return torch.ones(n, device=like.device, dtype=like.dtype)
    return torch.hann_window(n, periodic=True, device=like.device, dtype=like.dtype)


def high_pass(x: Tensor, sigma: float = HP_SIGMA) -> Tensor:
    """``x - gaussian_blur(x, sigma)`` of ``x`` (B, C, H, W) (separable, ``2 ceil(3 sigma) + 1`` taps, reflect
    padding; images smaller than the kernel are replicate-padded)."""
    radius = math.ceil(3 * sigma)
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    mode = "reflect" if min(x.shape[-2:]) > radius else "replicate"
    blurred = F.pad(x, (radius, radius, radius, radius), mode=mode)
    blurred = F.conv2d(blurred, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    blurred = F.conv2d(blurred, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x - blurred


def detail_metrics(pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Per image of ``pred`` against ``target`` (B, C, H, W) in [0, 1]: ``hf_share`` (of ``pred``),
    ``hf_psnr`` (dB) and ``hf_ssim`` of the high-pass bands (module doc)."""
    if pred.shape != target.shape:
        raise ValueError(f"detail_metrics: shapes differ, {tuple(pred.shape)} vs {tuple(target.shape)}")
    hp, ht = high_pass(pred.double()), high_pass(target.double())
    mse = (hp - ht).square().mean(dim=(1, 2, 3))
    return {
        "hf_share": hf_share(pred),
        "hf_psnr": (10 * torch.log10(1.0 / mse)).float(),  # inf when the bands are equal
        "hf_ssim": ssim_per_image(hp, ht),
    }
