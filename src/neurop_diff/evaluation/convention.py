"""The metric convention, made explicit: value range, quantisation, RGB or Y (BT.601), border crop.

Papers of the field disagree (method.md section 5): the authors use RGB on the whole image, RS SR papers crop
`scale` pixels, LIIF/SRNO use Y with shave = scale. Every number we report therefore comes with
`MetricConvention.describe()`. PSNR and SSIM follow BasicSR's definitions (the reference of our tests):
data range [0, 1] (identical to BasicSR's 0..255), per image, SSIM with an 11x11 Gaussian window (sigma 1.5)
over the 'valid' region, averaged over channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

CropBorder = Literal["none", "scale", "scale+6"] | int

# BT.601 "studio swing" luma as BasicSR's rgb2ycbcr(y_only=True): Y = 16 + 65.481 R + 128.553 G + 24.966 B
# for R, G, B in [0, 1], on the 0..255 scale.
_Y_WEIGHTS = (65.481, 128.553, 24.966)
_Y_OFFSET = 16.0


def format_scale(scale: float) -> str:
    """Scale as written in metric keys and file names: 4.0 -> "4", 2.5 -> "2.5", 3.14159 -> "3.14"."""
    text = f"{round(float(scale), 2):.2f}".rstrip("0").rstrip(".")
    return text


def rgb_to_y(x: Tensor) -> Tensor:
    """Luma Y (BT.601, BasicSR's `rgb2ycbcr(y_only=True)`) of RGB `(B, 3, H, W)` in [0, 1] -> `(B, 1, H, W)`.

    The result lies in [16/255, 235/255] (studio swing), as in BasicSR; it is not re-quantised.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"rgb_to_y expects an RGB batch (B, 3, H, W), got shape {tuple(x.shape)}")
    w = x.new_tensor(_Y_WEIGHTS).view(1, 3, 1, 1)
    return ((x * w).sum(dim=1, keepdim=True) + _Y_OFFSET) / 255.0


def border_pixels(crop: CropBorder, scale: float) -> int:
    """Pixels cut from each side before PSNR/SSIM: "none" -> 0, "scale" -> ceil(scale), "scale+6" -> ceil(scale)+6.

    BasicSR crops the integer scale; for a non-integer scale (x3.1) we round up so the crop still covers
    the border the interpolation kernel reaches. `scale` is the nominal scale (the listed one); a tolerance of
    1e-6 keeps 4.0000001 at 4. An int crops that many pixels.
    """
    if isinstance(crop, bool):
        raise ValueError(f"crop_border must be 'none', 'scale', 'scale+6' or an int >= 0, got {crop!r}")
    if isinstance(crop, int):
        if crop < 0:
            raise ValueError(f"crop_border must be >= 0 pixels, got {crop}")
        return crop
    if crop == "none":
        return 0
    base = math.ceil(float(scale) - 1e-6)
    if crop == "scale":
        return base
    if crop == "scale+6":
        return base + 6
    raise ValueError(f"crop_border must be 'none', 'scale', 'scale+6' or an int >= 0, got {crop!r}")


def crop_border(x: Tensor, pixels: int) -> Tensor:
    """Cut `pixels` from each side of the last two axes of `(..., H, W)`."""
    if pixels < 0:
        raise ValueError(f"crop_border pixels must be >= 0, got {pixels}")
    if pixels == 0:
        return x
    h, w = x.shape[-2:]
    if 2 * pixels >= min(h, w):
        raise ValueError(f"cannot crop {pixels} pixels from each side of a {h}x{w} image")
    return x[..., pixels : h - pixels, pixels : w - pixels]


def quantize(x: Tensor) -> Tensor:
    """Round [0, 1] values to the 256 levels of an 8-bit image (what a saved PNG holds); clamps first."""
    return torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0


def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


@dataclass(frozen=True)
class MetricConvention:
    """How images become numbers: channel (RGB or BT.601 Y), border crop, 8-bit quantisation; data range [0, 1]."""

    channel: Literal["rgb", "y"] = "rgb"
    crop_border: CropBorder = "none"
    quantize: bool = True

    def __post_init__(self) -> None:
        if self.channel not in ("rgb", "y"):
            raise ValueError(f"MetricConvention.channel must be 'rgb' or 'y', got {self.channel!r}")
        border_pixels(self.crop_border, 4.0)  # validates crop_border

    def describe(self) -> str:
        """One line printed with every result, e.g. "RGB, no border crop, 8-bit quantised, data range [0,1]"."""
        channel = "RGB" if self.channel == "rgb" else "Y (BT.601)"
        if self.crop_border == "none" or self.crop_border == 0:
            crop = "no border crop"
        elif isinstance(self.crop_border, int):
            crop = f"border crop {self.crop_border} px"
        else:
            crop = f"border crop {'ceil(scale)' if self.crop_border == 'scale' else 'ceil(scale)+6'} px"
        quant = "8-bit quantised" if self.quantize else "not quantised"
        return f"{channel}, {crop}, {quant}, data range [0,1]"

    def prepare(self, x: Tensor, scale: float) -> Tensor:
        """Images `(B, 3, H, W)` in [-1, 1] -> what PSNR/SSIM see: [0, 1], quantised, RGB or Y, cropped."""
        x = to_unit(x.float())
        if self.quantize:
            x = quantize(x)
        if self.channel == "y":
            x = rgb_to_y(x)
        return crop_border(x, border_pixels(self.crop_border, scale))


def psnr_per_image(pred: Tensor, target: Tensor) -> Tensor:
    """PSNR in dB per image of `(B, C, H, W)` in [0, 1] (BasicSR: 10 log10(1 / mse)), computed in float64."""
    return peak_signal_noise_ratio(
        pred.double(), target.double(), data_range=1.0, reduction="none", dim=(1, 2, 3)
    ).float()


def ssim_per_image(pred: Tensor, target: Tensor) -> Tensor:
    """SSIM per image of `(B, C, H, W)` in [0, 1]: 11x11 Gaussian (sigma 1.5), valid region, mean over channels.

    torchmetrics reflect-pads and averages the map over the whole image; BasicSR (like skimage and Wang et al.)
    averages only where the window fits ('valid'), so the 5-pixel margin of the full map is cut here.
    """
    half = 5
    if min(pred.shape[-2:]) <= 2 * half:
        raise ValueError(f"SSIM needs images larger than 11x11, got {tuple(pred.shape[-2:])}")
    _, ssim_map = structural_similarity_index_measure(
        pred.double(),
        target.double(),
        gaussian_kernel=True,
        sigma=1.5,
        kernel_size=11,
        data_range=1.0,
        k1=0.01,
        k2=0.03,
        reduction="none",
        return_full_image=True,
    )
    return ssim_map[..., half:-half, half:-half].mean(dim=(1, 2, 3)).float()


def image_metrics(sr: Tensor, hr: Tensor, convention: MetricConvention, scale: float) -> dict[str, Tensor]:
    """Per-image PSNR (dB) and SSIM of SR against HR, both `(B, 3, H, W)` in [-1, 1], under `convention`."""
    if sr.shape != hr.shape:
        raise ValueError(f"SR shape {tuple(sr.shape)} differs from HR shape {tuple(hr.shape)}")
    p, t = convention.prepare(sr, scale), convention.prepare(hr, scale)
    return {"psnr": psnr_per_image(p, t), "ssim": ssim_per_image(p, t)}
