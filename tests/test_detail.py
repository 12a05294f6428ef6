"""Detail measures without learned weights (evaluation/detail.py): exact values on sinusoids, blur, identity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neurop_diff.evaluation.detail import detail_metrics, hf_share, high_pass


def wave(cycles_y: int, cycles_x: int, n: int = 64, channels: int = 3) -> torch.Tensor:
    """0.5 + 0.4 cos(2 pi (ky y + kx x) / n) on an n x n grid, in [0, 1]."""
    y, x = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    img = 0.5 + 0.4 * torch.cos(2 * math.pi * (cycles_y * y + cycles_x * x) / n)
    return img.double().expand(1, channels, n, n).clone()


def numpy_share(img: np.ndarray) -> float:
    """The definition in numpy: per channel, mean removed, Hann (periodic) window, |FFT|^2 above 0.5 Nyquist."""
    _, h, w = img.shape
    hann = lambda n: 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)  # noqa: E731
    x = (img - img.mean(axis=(1, 2), keepdims=True)) * np.outer(hann(h), hann(w))
    energy = (np.abs(np.fft.fft2(x)) ** 2).sum(0)
    r = np.hypot(*np.meshgrid(np.fft.fftfreq(h) / 0.5, np.fft.fftfreq(w) / 0.5, indexing="ij"))
    return float(energy[r > 0.5].sum() / energy.sum())


def test_share_of_pure_sinusoids_above_and_below_the_cut():
    # 25 cycles / 64 px = 0.39 cycles/px = 0.78 Nyquist: the window spreads it to bins 24..26, all above the cut
    assert hf_share(wave(0, 25)).item() == pytest.approx(1.0, abs=1e-6)
    assert hf_share(wave(25, 0)).item() == pytest.approx(1.0, abs=1e-6)
    # 5 cycles = 0.16 Nyquist: all below
    assert hf_share(wave(5, 0)).item() == pytest.approx(0.0, abs=1e-6)
    # diagonal: (14, 14) cycles -> radial 0.62 Nyquist > 0.5 although each axis (0.44) is below the cut
    assert hf_share(wave(14, 14)).item() == pytest.approx(1.0, abs=1e-6)
    # a sum of one low and one high wave of equal amplitude: half the energy
    mix = (wave(0, 3) + wave(0, 28)) / 2
    assert hf_share(mix).item() == pytest.approx(0.5, abs=1e-6)


def test_share_matches_the_numpy_definition_and_is_zero_for_flat_images():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 40, 52, generator=g, dtype=torch.float64)
    shares = hf_share(img)
    for i in range(2):
        assert shares[i].item() == pytest.approx(numpy_share(img[i].numpy()), rel=1e-6)
    assert hf_share(torch.full((1, 3, 16, 16), 0.7)).item() == 0.0
    assert shares.min() > 0.0 and shares.max() < 1.0
    with pytest.raises(ValueError, match="B, C, H, W"):
        hf_share(img[0])


def test_blurring_lowers_the_share_and_the_high_pass_band():
    g = torch.Generator().manual_seed(1)
    img = torch.rand(1, 3, 64, 64, generator=g, dtype=torch.float64)
    blurred = img - high_pass(img, sigma=1.5)
    assert hf_share(blurred).item() < 0.2 * hf_share(img).item()
    # bicubic upsampling of a downsampled image (what an SR baseline outputs) also has a lower share
    down = F.interpolate(img, scale_factor=0.25, mode="bicubic", antialias=True)
    up = F.interpolate(down, size=(64, 64), mode="bicubic", align_corners=False)
    assert hf_share(up).item() < 0.5 * hf_share(img).item()
    # the high-pass band of a constant is 0; of a fast wave, nearly the wave itself (gain > 0.93 above Nyquist/2)
    assert high_pass(torch.full((1, 1, 20, 20), 0.3, dtype=torch.float64)).abs().max() < 1e-12
    fast = wave(0, 20, channels=1)
    band = high_pass(fast)[..., 8:-8, 8:-8]
    ratio = band.std() / (fast - 0.5)[..., 8:-8, 8:-8].std()
    assert 0.93 < ratio.item() <= 1.0


def test_detail_metrics_of_hr_against_itself_and_of_a_blur():
    g = torch.Generator().manual_seed(2)
    hr = torch.rand(2, 3, 32, 32, generator=g)
    same = detail_metrics(hr, hr)
    assert torch.isinf(same["hf_psnr"]).all() and same["hf_psnr"].min() > 0
    torch.testing.assert_close(same["hf_ssim"], torch.ones(2))
    torch.testing.assert_close(same["hf_share"], hf_share(hr))
    smooth = hr - high_pass(hr.double()).float()
    blur = detail_metrics(smooth, hr)
    assert (blur["hf_share"] < same["hf_share"]).all()
    assert torch.isfinite(blur["hf_psnr"]).all() and (blur["hf_ssim"] < 0.5).all()
    # hf_psnr is the PSNR of the bands: 10 log10(1 / mse), data range 1
    mse = (high_pass(smooth.double()) - high_pass(hr.double())).square().mean((1, 2, 3))
    torch.testing.assert_close(blur["hf_psnr"], (10 * torch.log10(1 / mse)).float())
    with pytest.raises(ValueError, match="shapes differ"):
        detail_metrics(hr, hr[..., :16])


def test_on_real_images_bicubic_has_less_detail_than_hr(shared_data):
    """RSSCN7 scenes: bicubic reconstructions keep a far smaller share of high frequencies than HR, and their
    high-pass band matches HR's worse at x4 than at x2 (what an SR output that restores texture improves)."""
    from PIL import Image

    from neurop_diff.data.degradation import degrade

    paths = [sorted(d.glob("*.jpg"))[0] for d in sorted((shared_data / "rsscn7").iterdir())][:4]
    assert len(paths) == 4
    arrays = [np.asarray(Image.open(p).convert("RGB").resize((128, 128))) for p in paths]
    hr = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1
    unit = lambda x: (x + 1) / 2  # noqa: E731
    found = {}
    for scale in (2.0, 4.0):
        lr, _ = degrade(hr, scale)
        up = F.interpolate(lr, size=(128, 128), mode="bicubic", align_corners=False).clamp(-1, 1)
        found[scale] = detail_metrics(unit(up), unit(hr))
    hr_share = hf_share(unit(hr))
    assert (
        hr_share > 0.02
    ).all()  # natural scenes: a few % of the energy above half Nyquist (measured 4-18 %)
    assert (found[2.0]["hf_share"] < 0.2 * hr_share).all() and (
        found[4.0]["hf_share"] < 0.01 * hr_share
    ).all()
    assert (found[4.0]["hf_ssim"] < found[2.0]["hf_ssim"]).all() and (found[2.0]["hf_ssim"] < 0.95).all()
    assert (found[4.0]["hf_psnr"] < found[2.0]["hf_psnr"]).all()
