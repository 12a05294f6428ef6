"""Realism without downloaded weights (method.md section 6): LR consistency, Laplacian-patch SWD, high-band
log-spectral distance and the seed spread. Pure torch; no Lightning, no learned weights.

A posterior sample has twice the squared error of the posterior mean (Blau & Michaeli 2018), so PSNR/SSIM
alone favour blur; these measures say whether the detail an SR adds looks like HR's, and whether it is
consistent with the LR input. Read them together: white noise scores well on neither LR-PSNR nor PSNR, a
blurred image scores badly on SWD and LSD-hi.

* ``lr_psnr``: PSNR (dB, data range 1) of ``degrade(SR)`` against the LR input, where ``degrade`` is the
  training degradation (``data.degradation.bicubic_resize``, antialiased bicubic, to the LR's exact size,
  clamped to [-1, 1]). RGB, no border crop, the degraded image not quantised. The NTIRE 2021/2022
  "Learning the super-resolution space" challenges (Lugmayr et al.) required LR-PSNR >= 45 dB of every sample.
  An SR whose degradation equals the LR exactly (HR itself, when the LR is ``degrade(HR)``) scores inf.
* ``swd``: sliced Wasserstein distance of 7x7 patches of a Laplacian pyramid (Karras et al. 2018, "Progressive
  growing of GANs", appendix D), one number per level and set, reported x1e3. The pyramid is ProGAN's: the
  5-tap binomial filter [1, 4, 6, 4, 1] / 16 (separable, reflect padding), ``down`` = blur then keep every
  second pixel, ``up`` = zero insertion then 4 x blur; ``l0 = x - up(down(x))`` (the finest band, HR pixels),
  ``l1`` the next band at half size, and the last level (``l2`` with 3 levels) the low-pass remainder at a
  quarter size. Unlike ProGAN (each set normalised by its own statistics) both sets are normalised per
  channel by the reference (HR) set's mean and std, so missing amplitude counts.
* ``lsd_hi``: per image, the Hann-windowed periodogram (mean over channels) averaged in 16 radial bins up to
  Nyquist; the mean over the bins above half Nyquist of ``|10 log10 P_SR - 10 log10 P_HR|`` (dB).
* The seed spread (``seed_std``, per texture) lives in ``evaluation/spread.py``.

Patch positions depend only on the seed, the level and the level's size, so every image of a size is read at
the same positions, an image's descriptors do not depend on the other images, and SR and HR of one image are
read at the same places: a set's distance is invariant to the order of its images and batches (up to float
summation order in the normalisation, computed in float64).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from neurop_diff.data.degradation import bicubic_resize, lr_size

LEVELS = 3
PATCHES_PER_IMAGE = 64
PATCH = 7
DIRECTIONS = 4 * 128
SWD_SCALE = 1e3  # SWD is reported x1e3 (as ProGAN)
LSD_BINS = 16
POWER_FLOOR = 1e-10  # -100 dB; 8-bit quantisation noise is ~1.3e-6 (-59 dB)
SWD_KEYS = tuple(f"swd_l{i}" for i in range(LEVELS))
_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)


# ---- LR consistency ------------------------------------------------------------------------------------


def lr_psnr(sr: Tensor, lr: Tensor, scale: float | None = None) -> Tensor:
    """PSNR (dB) of ``degrade(sr)`` against ``lr`` per image: ``(B,)``, float32 (inf where they are equal).

    ``sr`` ``(B, C, H, W)`` in [-1, 1] at HR size, ``lr`` ``(B, C, h, w)`` in [-1, 1]: ``sr`` is resized with
    the training degradation (``bicubic_resize``, antialiased bicubic) to the LR's exact size ``(h, w)`` and
    clamped to [-1, 1]; both are then mapped to [0, 1] and compared with data range 1 in float64. No border
    crop; the degraded image is not quantised (quantise ``sr`` first to score a saved image). ``scale``
    (HR/LR, nominal or true), when given, only checks that ``lr`` has ``lr_size((H, W), scale)``.
    """
    if sr.ndim != 4 or lr.ndim != 4 or sr.shape[:2] != lr.shape[:2]:
        raise ValueError(
            f"lr_psnr: expected (B, C, H, W) and (B, C, h, w), got {tuple(sr.shape)}, {tuple(lr.shape)}"
        )
    if scale is not None and lr_size(tuple(sr.shape[-2:]), scale) != tuple(lr.shape[-2:]):
        raise ValueError(
            f"lr_psnr: an LR of {tuple(lr.shape[-2:])} is not the x{scale:g} degradation of "
            f"{tuple(sr.shape[-2:])}"
        )
    down = bicubic_resize(sr.float(), tuple(lr.shape[-2:])).clamp(-1.0, 1.0)
    mse = ((down.double() - lr.double().clamp(-1.0, 1.0)) / 2).square().mean(dim=(1, 2, 3))
    return (-10 * torch.log10(mse)).float()


# ---- Laplacian pyramid and patch descriptors -----------------------------------------------------------


def _blur(x: Tensor) -> Tensor:
    """Separable 5-tap binomial blur ([1, 4, 6, 4, 1] / 16 per axis) of (B, C, H, W), reflect padding
    (replicate where a side is under 3 pixels)."""
    c = x.shape[1]
    k = x.new_tensor(_BINOMIAL) / 16.0
    mode = "reflect" if min(x.shape[-2:]) >= 3 else "replicate"
    x = F.pad(x, (2, 2, 2, 2), mode=mode)
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def pyr_down(x: Tensor) -> Tensor:
    """Blur, then every second pixel: (B, C, H, W) -> (B, C, ceil(H / 2), ceil(W / 2)) (cv2.pyrDown)."""
    return _blur(x)[..., ::2, ::2]


def pyr_up(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Zero insertion to ``size`` (which holds ``x`` at its even pixels), then 4 x blur (cv2.pyrUp)."""
    up = x.new_zeros((*x.shape[:2], *size))
    up[..., ::2, ::2] = x
    return 4.0 * _blur(up)


def laplacian_pyramid(x: Tensor, levels: int = LEVELS) -> list[Tensor]:
    """ProGAN's Laplacian pyramid of (B, C, H, W): ``levels - 1`` band-pass levels, finest first (``l0`` at
    the input's size), and the low-pass remainder last; the levels sum back to ``x`` after upsampling."""
    if levels < 1:
        raise ValueError(f"laplacian_pyramid: levels must be >= 1, got {levels}")
    out, current = [], x
    for _ in range(levels - 1):
        low = pyr_down(current)
        out.append(current - pyr_up(low, tuple(current.shape[-2:])))
        current = low
    return [*out, current]


def patch_centres(size: tuple[int, int], count: int, patch: int, seed: int, level: int) -> Tensor:
    """``count`` patch centres ``(count, 2)`` (row, column) drawn uniformly with replacement so that the
    ``patch x patch`` patch lies inside an image of ``size``; a function of (size, count, patch, seed, level)
    only. Empty when the image is smaller than the patch."""
    h, w = int(size[0]), int(size[1])
    half = patch // 2
    if h < patch or w < patch:
        return torch.zeros(0, 2, dtype=torch.long)
    g = torch.Generator().manual_seed((seed * 1_000_003 + level * 8191 + h * 131 + w) % (2**63))
    rows = torch.randint(half, h - half, (count,), generator=g)
    cols = torch.randint(half, w - half, (count,), generator=g)
    return torch.stack([rows, cols], dim=1)


def _patches(x: Tensor, centres: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) and (P, 2) centres -> (B * P, C * patch * patch), flattened in (C, y, x) order."""
    b, c = x.shape[:2]
    if centres.shape[0] == 0:
        return x.new_zeros(0, c * patch * patch)
    half = patch // 2
    offs = torch.arange(-half, half + 1, device=x.device)
    centres = centres.to(x.device)
    rows = (centres[:, 0].view(-1, 1, 1) + offs.view(1, -1, 1)).expand(-1, patch, patch)
    cols = (centres[:, 1].view(-1, 1, 1) + offs.view(1, 1, -1)).expand(-1, patch, patch)
    flat = (rows * x.shape[-1] + cols).reshape(1, 1, -1)  # (1, 1, P * patch * patch)
    vals = x.reshape(b, c, -1).gather(2, flat.expand(b, c, -1))  # (B, C, P * p * p)
    vals = vals.view(b, c, -1, patch * patch).permute(0, 2, 1, 3)  # (B, P, C, p * p)
    return vals.reshape(b * centres.shape[0], c * patch * patch)


def swd_descriptors(
    images: Tensor,
    level_count: int = LEVELS,
    patches_per_image: int = PATCHES_PER_IMAGE,
    patch: int = PATCH,
    seed: int = 0,
) -> list[Tensor]:
    """Laplacian-pyramid patch descriptors of ``images`` (B, C, H, W) in [0, 1]: one float32 tensor per level
    ``(B * patches_per_image, C * patch * patch)`` (image-major; (C, y, x) within a row: 147 values for RGB
    7x7). Positions come from `patch_centres` (the same for every image of a size); a level smaller than the
    patch gives no rows."""
    if images.ndim != 4:
        raise ValueError(f"swd_descriptors: expected (B, C, H, W), got shape {tuple(images.shape)}")
    pyramid = laplacian_pyramid(images.float(), level_count)
    return [
        _patches(band, patch_centres(tuple(band.shape[-2:]), patches_per_image, patch, seed, i), patch)
        for i, band in enumerate(pyramid)
    ]


def normalise_descriptors(desc: Tensor, reference: Tensor, channels: int) -> Tensor:
    """``desc`` (N, C * p * p) minus the reference set's per-channel mean, over its per-channel std (both over
    the reference's patches and pixels: ProGAN's statistics, taken from ``reference`` only); float64."""
    ref = reference.double().reshape(reference.shape[0], channels, -1)
    mean = ref.mean(dim=(0, 2))
    std = ref.std(dim=(0, 2), correction=0).clamp_min(1e-12)
    x = desc.double().reshape(desc.shape[0], channels, -1)
    return ((x - mean.view(1, -1, 1)) / std.view(1, -1, 1)).reshape(desc.shape[0], -1)


def _quantiles(sorted_x: np.ndarray, n: int) -> np.ndarray:
    """(D, M) sorted along axis 1 -> (D, n): the empirical quantile function (a step function) at the levels
    (i + 0.5) / n; the identity when M == n, and exact for W1 when M divides n."""
    m = sorted_x.shape[1]
    if m == n:
        return sorted_x
    return sorted_x[:, ((np.arange(n) + 0.5) * m / n).astype(np.int64)]


def sliced_wasserstein(
    a: Tensor, b: Tensor, directions: int = DIRECTIONS, generator: torch.Generator | None = None
) -> float:
    """Sliced Wasserstein distance (W1) between descriptor sets ``a`` (N, D) and ``b`` (M, D): both projected
    on ``directions`` random unit vectors (Gaussian, normalised; from ``generator``, default seeded 0 per call),
    each projection sorted, the mean absolute difference over sorted points and directions (ProGAN's
    ``sliced_wasserstein``). Unequal N and M compare the empirical quantile functions at levels
    (i + 0.5) / max(N, M) (exact when the smaller count divides the larger). Float64 on the CPU (numpy's
    sort: several times faster than torch's here)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"sliced_wasserstein: expected (N, D) and (M, D), got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise ValueError("sliced_wasserstein: an empty descriptor set")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    dirs = torch.randn(a.shape[1], directions, generator=g, dtype=torch.float64)
    dirs = (dirs / dirs.norm(dim=0, keepdim=True)).numpy()
    xa, xb = a.detach().double().cpu().numpy(), b.detach().double().cpu().numpy()
    n, total = max(a.shape[0], b.shape[0]), 0.0
    for start in range(0, directions, 128):  # 128 directions at a time bound the memory
        chunk = dirs[:, start : start + 128]
        pa = _quantiles(np.sort(np.ascontiguousarray((xa @ chunk).T), axis=1), n)
        pb = _quantiles(np.sort(np.ascontiguousarray((xb @ chunk).T), axis=1), n)
        total += float(np.abs(pa - pb).mean(axis=1).sum())
    return total / directions


def swd_from_descriptors(
    sr: Sequence[Tensor], hr: Sequence[Tensor], channels: int, directions: int = DIRECTIONS, seed: int = 0
) -> dict[str, float | None]:
    """{"swd_l0": ..., ...} x1e3 from per-level descriptors of the SR and HR sets, both normalised by HR's
    per-channel statistics; None for a level without descriptors (images smaller than the patch there)."""
    out: dict[str, float | None] = {}
    for i, (a, b) in enumerate(zip(sr, hr, strict=True)):
        if a.shape[0] == 0 or b.shape[0] == 0:
            out[f"swd_l{i}"] = None
            continue
        g = torch.Generator().manual_seed(seed)
        d = sliced_wasserstein(
            normalise_descriptors(a, b, channels), normalise_descriptors(b, b, channels), directions, g
        )
        out[f"swd_l{i}"] = SWD_SCALE * d
    return out


def swd(
    sr_set: Tensor | Sequence[Tensor],
    hr_set: Tensor | Sequence[Tensor],
    level_count: int = LEVELS,
    patches_per_image: int = PATCHES_PER_IMAGE,
    patch: int = PATCH,
    directions: int = DIRECTIONS,
    seed: int = 0,
) -> dict[str, float | None]:
    """SWD (x1e3) per pyramid level, ``{"swd_l0", "swd_l1", "swd_l2"}`` (3 levels), between an SR set and the
    HR set of the same images: (N, C, H, W) in [0, 1] (the images the metric convention prepares), or lists
    of such batches (sizes may differ between batches). 0 for identical sets; order-invariant."""
    sr_list = [sr_set] if isinstance(sr_set, Tensor) else list(sr_set)
    hr_list = [hr_set] if isinstance(hr_set, Tensor) else list(hr_set)
    channels = hr_list[0].shape[1]

    def collect(images: list[Tensor]) -> list[Tensor]:
        per_batch = [swd_descriptors(x, level_count, patches_per_image, patch, seed) for x in images]
        return [torch.cat([d[i] for d in per_batch]) for i in range(level_count)]

    return swd_from_descriptors(collect(sr_list), collect(hr_list), channels, directions, seed)


class SetSWD:
    """SWD per (method, scale) over an epoch: descriptors per image (on the CPU, float32: 113 KB per image and
    method for RGB), the reference's per (scale, image name); `compute` pairs each method's images with the
    reference's of the same names, in name order, so the value does not depend on batches, ranks or order."""

    def __init__(
        self,
        level_count: int = LEVELS,
        patches_per_image: int = PATCHES_PER_IMAGE,
        patch: int = PATCH,
        directions: int = DIRECTIONS,
        seed: int = 0,
    ) -> None:
        self.level_count, self.patches_per_image, self.patch = level_count, patches_per_image, patch
        self.directions, self.seed = directions, seed
        self.desc: dict[tuple[str, float, str], list[Tensor]] = {}
        self.reference: dict[tuple[float, str], list[Tensor]] = {}
        self.channels: int | None = None

    def _split(self, images: Tensor) -> list[list[Tensor]]:
        levels = swd_descriptors(images, self.level_count, self.patches_per_image, self.patch, self.seed)
        b = images.shape[0]
        # One CPU copy per image (not views of the batch): what is kept and gathered is that image's own.
        return [[lv.view(b, -1, lv.shape[1])[i].cpu().clone() for lv in levels] for i in range(b)]

    def add(self, method: str, scale: float, names: Sequence[str], images: Tensor) -> None:
        """An SR batch (B, C, H, W) in [0, 1] of ``method`` at ``scale``, images named ``names``."""
        self.channels = images.shape[1]
        for name, d in zip(names, self._split(images), strict=True):
            self.desc[(method, scale, name)] = d

    def add_reference(self, scale: float, names: Sequence[str], images: Tensor) -> None:
        """The HR batch (B, C, H, W) in [0, 1] at ``scale``."""
        self.channels = images.shape[1]
        for name, d in zip(names, self._split(images), strict=True):
            self.reference[(scale, name)] = d

    def state(self) -> tuple:
        """What another rank needs (`merge`)."""
        return self.desc, self.reference, self.channels

    def merge(self, states: Sequence[tuple]) -> None:
        """Add other ranks' `state`s (repeats of a key, from padded distributed shares, are one image)."""
        for desc, reference, channels in states:
            for k, v in desc.items():
                self.desc.setdefault(k, v)
            for k, v in reference.items():
                self.reference.setdefault(k, v)
            self.channels = self.channels or channels

    def compute(self) -> dict[tuple[str, float], dict[str, float | None]]:
        """{(method, scale): {"swd_l0": ..., ...}} over the images that have a reference."""
        groups: dict[tuple[str, float], list[str]] = {}
        for method, scale, name in self.desc:
            if (scale, name) in self.reference:
                groups.setdefault((method, scale), []).append(name)
        out = {}
        for (method, scale), names in groups.items():
            names = sorted(names)
            sr = [
                torch.cat([self.desc[(method, scale, n)][i] for n in names]) for i in range(self.level_count)
            ]
            hr = [torch.cat([self.reference[(scale, n)][i] for n in names]) for i in range(self.level_count)]
            out[(method, scale)] = swd_from_descriptors(
                sr, hr, self.channels or 3, self.directions, self.seed
            )
        return out


# ---- spectrum and seed spread --------------------------------------------------------------------------


def radial_power(x: Tensor, bins: int = LSD_BINS) -> Tensor:
    """Hann-windowed periodogram of (B, C, H, W), mean removed per channel, averaged over channels and over
    ``bins`` radial bins of equal width up to Nyquist (corners beyond it left out): (B, bins), float64,
    normalised so that white noise of variance v has power v in every bin; NaN in a bin no frequency
    falls in."""
    x = x.double()
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    h, w = x.shape[-2:]
    window = _hann(h, x).view(h, 1) * _hann(w, x).view(1, w)
    power = torch.fft.fft2(x * window).abs().square().mean(1) / window.square().sum()  # (B, H, W)
    fy = torch.fft.fftfreq(h, device=x.device, dtype=x.dtype).view(h, 1) / 0.5
    fx = torch.fft.fftfreq(w, device=x.device, dtype=x.dtype).view(1, w) / 0.5
    r = (fy.square() + fx.square()).sqrt()
    index = (r * bins).floor().long().clamp(max=bins - 1)  # r == 1 (the Nyquist row) in the last bin
    inside = (r <= 1.0).flatten()
    index = index.flatten()[inside]
    flat = power.flatten(1)[:, inside]
    sums = flat.new_zeros(flat.shape[0], bins).index_add_(1, index, flat)
    counts = torch.bincount(index, minlength=bins).to(flat.dtype)
    return sums / counts  # 0 / 0 = NaN in an empty bin


def _hann(n: int, like: Tensor) -> Tensor:
    if n < 2:
        return torch.ones(n, device=like.device, dtype=like.dtype)
    return torch.hann_window(n, periodic=True, device=like.device, dtype=like.dtype)


def lsd_hi(sr: Tensor, hr: Tensor, bins: int = LSD_BINS) -> Tensor:
    """Log-spectral distance (dB) above half Nyquist per image: (B,), float32, >= 0, 0 for identical images.

    ``sr``, ``hr`` (B, C, H, W) in [0, 1] (the images PSNR sees): `radial_power` of each, then the mean over
    the bins whose lower edge is at or above half Nyquist (bins 8..15 of 16) of
    ``|10 log10(P_SR + floor) - 10 log10(P_HR + floor)|``, floor = 1e-10 (-100 dB; 8-bit quantisation noise
    is -59 dB). A blurred SR lacks high-band power; noise adds it."""
    if sr.shape != hr.shape or sr.ndim != 4:
        raise ValueError(
            f"lsd_hi: expected two (B, C, H, W) of one shape, got {tuple(sr.shape)}, {tuple(hr.shape)}"
        )
    ps, ph = radial_power(sr, bins), radial_power(hr, bins)
    db = (10 * torch.log10(ps + POWER_FLOOR) - 10 * torch.log10(ph + POWER_FLOOR)).abs()[:, bins // 2 :]
    return db.nanmean(dim=1).float()
