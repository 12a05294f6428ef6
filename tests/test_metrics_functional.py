"""PSNR/SSIM through our convention path against BasicSR's definitions re-implemented here in numpy float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from neurop_diff.evaluation.convention import (
    MetricConvention,
    border_pixels,
    crop_border,
    format_scale,
    image_metrics,
    quantize,
    rgb_to_y,
)

# ---- BasicSR reference (basicsr/metrics/psnr_ssim.py, basicsr/utils/color_util.py), HWC, 0..255 float64 ----


def ref_rgb2y(img255: np.ndarray) -> np.ndarray:
    """BasicSR to_y_channel on an RGB image: rgb2ycbcr(img / 255, y_only=True) * 255, i.e. 16 + (65.481 R + ...)."""
    x = img255 / 255.0
    return (x @ np.array([65.481, 128.553, 24.966]) + 16.0)[..., None]


def ref_psnr(a: np.ndarray, b: np.ndarray, border: int) -> float:
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10.0 * np.log10(255.0**2 / mse))


def _gaussian_window() -> np.ndarray:
    d = np.arange(11) - 5.0
    g = np.exp(-(d**2) / (2 * 1.5**2))
    g /= g.sum()
    return np.outer(g, g)


def _filter_valid(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    views = np.lib.stride_tricks.sliding_window_view(img, window.shape)
    return np.einsum("ijkl,kl->ij", views, window)


def ref_ssim(a: np.ndarray, b: np.ndarray, border: int) -> float:
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    w = _gaussian_window()
    vals = []
    for c in range(a.shape[2]):
        x, y = a[..., c].astype(np.float64), b[..., c].astype(np.float64)
        mu1, mu2 = _filter_valid(x, w), _filter_valid(y, w)
        s11 = _filter_valid(x * x, w) - mu1**2
        s22 = _filter_valid(y * y, w) - mu2**2
        s12 = _filter_valid(x * y, w) - mu1 * mu2
        m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s11 + s22 + c2))
        vals.append(m.mean())
    return float(np.mean(vals))


# ---- data: two real images (HR) and an SR-like degraded version (float, not 8-bit) ----


@pytest.fixture(scope="module")
def pairs(shared_data):
    files = [
        shared_data / "rsscn7" / "aGrass" / "a001.jpg",
        shared_data / "rsscn7" / "cIndustry" / "c001.jpg",
    ]
    files = [f for f in files if f.is_file()] or sorted((shared_data / "rsscn7").rglob("*.jpg"))[:2]
    hr = np.stack(
        [np.asarray(Image.open(f).convert("RGB"))[100:196, 60:156] for f in files]
    )  # (2, 96, 96, 3)
    hr_t = torch.from_numpy(hr).permute(0, 3, 1, 2).double() / 127.5 - 1.0
    lr = F.interpolate(hr_t, scale_factor=0.25, mode="bicubic", antialias=True, align_corners=False)
    g = torch.Generator().manual_seed(1)
    sr = F.interpolate(lr, size=hr_t.shape[-2:], mode="bicubic", align_corners=False)
    sr = (sr + 0.02 * torch.randn(sr.shape, generator=g, dtype=sr.dtype)).clamp(-1, 1)
    return hr_t.float(), sr.float()


def _ref_uint8_like(x: torch.Tensor, quantised: bool) -> np.ndarray:
    """[-1,1] BCHW -> BHWC on 0..255 float64, rounded to integers as a saved PNG would hold."""
    a = ((x.double() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255.0
    return np.round(a) if quantised else a


@pytest.mark.parametrize("channel", ["rgb", "y"])
@pytest.mark.parametrize(("crop", "border"), [("none", 0), ("scale", 4), ("scale+6", 10), (3, 3)])
def test_psnr_ssim_match_basicsr(pairs, channel, crop, border):
    hr, sr = pairs
    conv = MetricConvention(channel=channel, crop_border=crop, quantize=True)
    got = image_metrics(sr, hr, conv, scale=4.0)
    a, b = _ref_uint8_like(sr, True), _ref_uint8_like(hr, True)
    for i in range(hr.shape[0]):
        ai, bi = (ref_rgb2y(a[i]), ref_rgb2y(b[i])) if channel == "y" else (a[i], b[i])
        assert got["psnr"][i].item() == pytest.approx(ref_psnr(ai, bi, border), abs=1e-3)
        assert got["ssim"][i].item() == pytest.approx(ref_ssim(ai, bi, border), abs=1e-4)
    assert got["psnr"].min() > 15 and got["psnr"].max() < 40  # a real degradation, not a degenerate pair


def test_quantisation_changes_the_numbers_and_off_matches_float(pairs):
    hr, sr = pairs
    q = image_metrics(sr, hr, MetricConvention(quantize=True), 4.0)["psnr"]
    f = image_metrics(sr, hr, MetricConvention(quantize=False), 4.0)["psnr"]
    a, b = _ref_uint8_like(sr, False), _ref_uint8_like(hr, False)
    assert f[0].item() == pytest.approx(ref_psnr(a[0], b[0], 0), abs=1e-3)
    assert not torch.allclose(q, f, atol=1e-4, rtol=0)


def test_non_integer_scale_crops_ceil(pairs):
    hr, sr = pairs
    got = image_metrics(sr, hr, MetricConvention(crop_border="scale"), scale=3.1)
    a, b = _ref_uint8_like(sr, True), _ref_uint8_like(hr, True)
    assert got["psnr"][1].item() == pytest.approx(ref_psnr(a[1], b[1], 4), abs=1e-3)


def test_format_scale():
    assert format_scale(4.0) == "4"
    assert format_scale(2.5) == "2.5"
    assert format_scale(3.1) == "3.1"
    assert format_scale(10) == "10"
    assert format_scale(3.14159) == "3.14"
    assert format_scale(2.999) == "3"
    assert format_scale(1.25) == "1.25"


def test_border_pixels_and_crop():
    assert border_pixels("none", 4.0) == 0
    assert border_pixels("scale", 4.0) == 4
    assert border_pixels("scale", 4.0000001) == 4
    assert border_pixels("scale", 2.5) == 3
    assert border_pixels("scale+6", 2.0) == 8
    assert border_pixels(5, 2.0) == 5
    for bad in ("edge", -1, True):
        with pytest.raises(ValueError, match="crop_border"):
            border_pixels(bad, 2.0)
    x = torch.arange(2 * 3 * 8 * 9.0).view(2, 3, 8, 9)
    assert torch.equal(crop_border(x, 2), x[..., 2:6, 2:7])
    assert crop_border(x, 0) is x
    with pytest.raises(ValueError, match="4x4"):
        crop_border(x[..., :4, :4], 2)


def test_rgb_to_y_and_quantize():
    x = torch.tensor([[[[0.0, 1.0]], [[0.0, 1.0]], [[0.0, 0.5]]]])  # (1, 3, 1, 2)
    y = rgb_to_y(x)
    assert y.shape == (1, 1, 1, 2)
    assert y[0, 0, 0, 0].item() == pytest.approx(16 / 255)
    assert y[0, 0, 0, 1].item() == pytest.approx((16 + 65.481 + 128.553 + 24.966 * 0.5) / 255, abs=1e-6)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        rgb_to_y(x[:, :1])
    q = quantize(torch.tensor([-0.1, 0.3, 0.5, 1.2]))
    assert torch.allclose(q * 255, torch.tensor([0.0, 76.0, 128.0, 255.0]))  # 127.5 rounds half to even


def test_convention_describe_and_validation():
    assert MetricConvention().describe() == "RGB, no border crop, 8-bit quantised, data range [0,1]"
    text = MetricConvention(channel="y", crop_border="scale", quantize=False).describe()
    assert text.startswith("Y (BT.601), border crop ceil(scale) px, not quantised")
    assert "border crop 2 px" in MetricConvention(crop_border=2).describe()
    with pytest.raises(ValueError, match="channel"):
        MetricConvention(channel="lab")
    with pytest.raises(ValueError, match="crop_border"):
        MetricConvention(crop_border="edge")
