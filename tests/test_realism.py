"""Realism without downloaded weights (evaluation/realism.py) on known cases, with real 96 px images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from neurop_diff.data.degradation import degrade
from neurop_diff.evaluation.convention import quantize
from neurop_diff.evaluation.realism import (
    SetSWD,
    laplacian_pyramid,
    lr_psnr,
    lsd_hi,
    normalise_descriptors,
    patch_centres,
    pyr_up,
    radial_power,
    sliced_wasserstein,
    swd,
    swd_descriptors,
)
from neurop_diff.evaluation.spread import seed_std, seed_std_by_texture, texture_masks


@pytest.fixture(scope="module")
def hr(shared_data) -> torch.Tensor:
    """16 real 96 px crops in [0, 1] (8-bit: JPEG decoded), from the seven RSSCN7 classes."""
    classes = sorted(d for d in (shared_data / "rsscn7").iterdir() if d.is_dir())
    files = [sorted(c.glob("*.jpg"))[k] for k in range(3) for c in classes][:16]
    crops = [np.asarray(Image.open(f).convert("RGB"))[100:196, 60:156] for f in files]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = math.ceil(3 * sigma)
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    y = F.pad(x, (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def noisy(x: torch.Tensor, std: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + std * torch.randn(x.shape, generator=g)).clamp(0, 1)


# ---- SWD ----------------------------------------------------------------------------------------------


def test_descriptors_shape_and_positions_depend_on_the_image_alone(hr):
    desc = swd_descriptors(hr)
    assert [tuple(d.shape) for d in desc] == [(16 * 64, 147)] * 3
    alone = swd_descriptors(hr[5:6])
    for d, a in zip(desc, alone, strict=True):
        assert torch.equal(d[5 * 64 : 6 * 64], a)  # the same patches, batch or not
    # positions: a function of the level's size only; each patch lies inside the level
    assert torch.equal(patch_centres((96, 96), 64, 7, 0, 0), patch_centres((96, 96), 64, 7, 0, 0))
    assert not torch.equal(patch_centres((96, 96), 64, 7, 0, 0), patch_centres((96, 96), 64, 7, 1, 0))
    c = patch_centres((24, 30), 500, 7, 0, 2)
    assert c[:, 0].min() >= 3 and c[:, 0].max() <= 20 and c[:, 1].min() >= 3 and c[:, 1].max() <= 26
    # a patch of row 0 is the 7x7x3 neighbourhood of its centre in l0, flattened (C, y, x)
    l0 = laplacian_pyramid(hr[:1])[0]
    y, x = patch_centres((96, 96), 64, 7, 0, 0)[0].tolist()
    assert torch.equal(desc[0][0], l0[0, :, y - 3 : y + 4, x - 3 : x + 4].reshape(-1))
    # a level smaller than the patch gives no rows (and no SWD there)
    tiny = torch.rand(2, 3, 20, 20)
    assert [d.shape[0] for d in swd_descriptors(tiny)] == [128, 128, 0]
    assert swd(tiny, tiny)["swd_l2"] is None


def test_pyramid_is_band_pass_with_a_low_pass_remainder():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 96, 90, generator=g, dtype=torch.float64)
    l0, l1, l2 = laplacian_pyramid(x)
    assert l0.shape[-2:] == (96, 90) and l1.shape[-2:] == (48, 45) and l2.shape[-2:] == (24, 23)
    # the levels sum back to the image (the pyramid loses nothing)
    back = l0 + pyr_up(l1 + pyr_up(l2, tuple(l1.shape[-2:])), tuple(l0.shape[-2:]))
    assert torch.allclose(back, x, atol=1e-12)
    # a flat image: the bands are zero, the remainder holds the value (the binomial filter sums to 1)
    flat = torch.full((1, 3, 32, 32), 0.3, dtype=torch.float64)
    f0, f1, f2 = laplacian_pyramid(flat)
    assert f0.abs().max() < 1e-12 and f1.abs().max() < 1e-12 and torch.allclose(f2, flat[..., :8, :8])


def test_sliced_wasserstein_known_values():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 1, generator=g, dtype=torch.float64)
    # in one dimension every direction is +-1: the distance of a shifted copy is the shift
    assert sliced_wasserstein(a, a + 0.3) == pytest.approx(0.3, abs=1e-12)
    assert sliced_wasserstein(a, a[torch.randperm(200, generator=g)]) == 0.0
    # unequal sizes: a set repeated twice is the same distribution
    b = torch.randn(100, 5, generator=g, dtype=torch.float64)
    assert sliced_wasserstein(b, torch.cat([b, b])) == pytest.approx(0.0, abs=1e-12)
    assert sliced_wasserstein(b, torch.cat([b, b]) + 1.0) > 0.3
    with pytest.raises(ValueError, match="empty"):
        sliced_wasserstein(b[:0], b)


def test_identical_sets_give_zero(hr):
    assert swd(hr, hr) == {"swd_l0": 0.0, "swd_l1": 0.0, "swd_l2": 0.0}
    assert torch.equal(lsd_hi(hr, hr), torch.zeros(16))


def test_blur_is_farther_than_hr_and_more_blur_farther(hr):
    # measured: l0 135 / 358 / 510, l1 39 / 142 / 323 for sigma 0.5 / 1 / 2 (x1e3); LSD-hi 4.0 / 19.9 / 29.0 dB
    sigmas = (0.5, 1.0, 2.0)
    d = [swd(quantize(gaussian_blur(hr, s)), hr) for s in sigmas]
    lsd = [lsd_hi(quantize(gaussian_blur(hr, s)), hr).mean().item() for s in sigmas]
    assert d[0]["swd_l0"] > 50 and lsd[0] > 2.0  # a light blur is already far from 0
    for level in ("swd_l0", "swd_l1"):
        assert d[0][level] < d[1][level] < d[2][level]
    assert d[0]["swd_l0"] > d[0]["swd_l1"] > d[0]["swd_l2"]  # a blur removes the finest band first
    assert lsd[0] < lsd[1] < lsd[2]
    assert (lsd_hi(quantize(gaussian_blur(hr, 1.0)), hr) > 5).all()  # every image, not only on average


def test_white_noise_is_far(hr):
    pure = torch.rand(hr.shape, generator=torch.Generator().manual_seed(3))
    strong = noisy(hr, 0.1)
    blur = swd(quantize(gaussian_blur(hr, 2.0)), hr)
    # measured: pure noise 3863 / 783 / 729, HR + N(0, 0.1) 1076 / 209 / 17
    assert swd(pure, hr)["swd_l0"] > 5 * blur["swd_l0"]
    assert swd(strong, hr)["swd_l0"] > 2 * blur["swd_l0"]
    assert swd(pure, hr)["swd_l2"] > 20 * blur["swd_l2"]  # wrong colours and means: the low-pass level
    assert lsd_hi(pure, hr).mean() > 10 and lsd_hi(strong, hr).mean() > 5  # too much high-band power
    assert swd(noisy(hr, 0.02), hr)["swd_l0"] < swd(strong, hr)["swd_l0"]


def test_values_are_invariant_to_image_order_and_batching(hr):
    sr = quantize(gaussian_blur(hr, 1.0))
    ref = swd(sr, hr)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    for got in (swd(sr[perm], hr[perm]), swd(sr[perm], hr), swd([sr[:5], sr[5:]], [hr[:11], hr[11:]])):
        for k, v in ref.items():
            assert got[k] == pytest.approx(v, rel=1e-9)
    assert torch.equal(lsd_hi(sr[perm], hr[perm]), lsd_hi(sr, hr)[perm])
    # SetSWD (the callback's): batches, names and order do not matter
    a, b = SetSWD(), SetSWD()
    names = [f"img{i:02d}" for i in range(16)]
    a.add_reference(4.0, names, hr)
    a.add("m", 4.0, names, sr)
    for part in (perm[:7], perm[7:]):
        b.add("m", 4.0, [names[i] for i in part], sr[part])
        b.add_reference(4.0, [names[i] for i in part], hr[part])
    assert a.compute()[("m", 4.0)] == pytest.approx(ref, rel=1e-12)
    assert b.compute()[("m", 4.0)] == pytest.approx(ref, rel=1e-12)
    # two ranks' halves merged, one image repeated (a padded distributed share): the same value
    c, d = SetSWD(), SetSWD()
    c.add_reference(4.0, names[:9], hr[:9])
    c.add("m", 4.0, names[:9], sr[:9])
    d.add_reference(4.0, names[8:], hr[8:])
    d.add("m", 4.0, names[8:], sr[8:])
    c.merge([d.state()])
    assert c.compute()[("m", 4.0)] == pytest.approx(ref, rel=1e-12)


def test_hr_statistics_make_missing_amplitude_count(hr):
    """ProGAN normalises each set by its own statistics: an SR at half HR's contrast would score ~0. With
    HR's statistics it does not."""
    mean = hr.mean(dim=(-2, -1), keepdim=True)
    faint = mean + 0.5 * (hr - mean)
    a, b = swd_descriptors(faint)[0], swd_descriptors(hr)[0]
    per_set = sliced_wasserstein(normalise_descriptors(a, a, 3), normalise_descriptors(b, b, 3))
    by_hr = sliced_wasserstein(normalise_descriptors(a, b, 3), normalise_descriptors(b, b, 3))
    assert per_set < 1e-3 and by_hr > 0.1
    assert swd(faint, hr)["swd_l0"] == pytest.approx(1e3 * by_hr)


# ---- LSD-hi -------------------------------------------------------------------------------------------


def test_lsd_hi_of_an_amplitude_change_is_exact(hr):
    # a contrast change by a scales every power by a^2: |10 log10 a^2| dB in every bin (no clamp, no quantise)
    mean = hr.mean(dim=(-2, -1), keepdim=True)
    half = (mean + 0.5 * (hr - mean)).double()
    assert lsd_hi(half, hr.double()).tolist() == pytest.approx([20 * math.log10(2)] * 16, abs=1e-4)
    # white noise of variance v has power v in every bin (the periodogram's normalisation)
    g = torch.Generator().manual_seed(0)
    p = radial_power(0.1 * torch.randn(64, 1, 96, 96, generator=g, dtype=torch.float64)).mean(0)
    assert p[4:].tolist() == pytest.approx([0.01] * 12, rel=0.03)  # the low bins hold few frequencies
    with pytest.raises(ValueError, match="one shape"):
        lsd_hi(hr, hr[:, :, :90])


# ---- LR-PSNR ------------------------------------------------------------------------------------------


def test_lr_psnr_of_hr_and_of_worse_images(hr):
    x = hr * 2 - 1
    for s in (2, 3, 4, 8):
        lr, _ = degrade(x, s)
        assert torch.isinf(lr_psnr(x, lr, s)).all()  # HR degraded is exactly the LR: inf
        # an 8-bit LR (as saved): uniform rounding error of 1/255, 10 log10(12 * 255^2) = 58.92 dB
        lr8 = quantize((lr + 1) / 2) * 2 - 1
        assert lr_psnr(x, lr8).mean().item() == pytest.approx(10 * math.log10(12 * 255**2), abs=0.5)
    # measured means: blur (sigma 1) 36.1 dB at x2, 45.6 at x4 (38-54 over the images); noise (std 0.1 in
    # [0, 1]) 28.0 at x2, 33.8 at x4. A larger scale averages more of the error away.
    for s, blur_max, noise_max in ((2, 40, 31), (4, 48, 37)):
        lr, _ = degrade(x, s)
        blurred = lr_psnr(gaussian_blur(hr, 1.0) * 2 - 1, lr)
        noise = lr_psnr(noisy(hr, 0.1) * 2 - 1, lr)
        assert blurred.mean() < blur_max and noise.mean() < noise_max and (noise < blurred).all()
    lr, _ = degrade(x, 4)
    # the definition: PSNR (data range 1) of the clamped antialiased-bicubic downsampling against the LR
    sr = noisy(hr, 0.1)[:2] * 2 - 1
    down = F.interpolate(sr, size=lr.shape[-2:], mode="bicubic", antialias=True, align_corners=False)
    mse = ((down.clamp(-1, 1).double() - lr[:2].double()) / 2).square().mean(dim=(1, 2, 3))
    assert lr_psnr(sr, lr[:2]).tolist() == pytest.approx((-10 * torch.log10(mse)).tolist(), abs=1e-4)
    with pytest.raises(ValueError, match="degradation"):
        lr_psnr(x, lr, 2)


# ---- seed spread --------------------------------------------------------------------------------------


def test_seed_std_known_cases(hr):
    x = hr[:4] * 2 - 1
    assert torch.equal(seed_std(x.expand(5, *x.shape)), torch.zeros(4))
    g = torch.Generator().manual_seed(0)
    base = torch.zeros(1, 2, 3, 48, 48)  # mid-grey: no clamping at 0.05 std
    samples = base + 0.05 * torch.randn(64, 2, 3, 48, 48, generator=g)
    # std 0.05 in [-1, 1] units is 0.025 in [0, 1]; the std estimate over 64 samples is ~0.4% low
    assert seed_std(samples).tolist() == pytest.approx([0.025, 0.025], rel=0.01)
    with pytest.raises(ValueError, match="K >= 2"):
        seed_std(samples[:1])


def test_seed_std_by_texture(hr):
    """Noise scaled by HR's local detail varies more on textured pixels; uniform noise gives equal halves."""
    x = hr[:4] * 2 - 1
    textured, flat = texture_masks(x)
    assert textured.shape == flat.shape == (4, 1, 96, 96)
    assert not (textured & flat).any()
    frac = textured.double().mean(dim=(1, 2, 3))
    assert frac.tolist() == pytest.approx([0.25] * 4, abs=0.02)
    g = torch.Generator().manual_seed(0)
    detail = (
        (x - F.avg_pool2d(F.pad(x, (3, 3, 3, 3), mode="reflect"), 7, stride=1)).abs().mean(1, keepdim=True)
    )
    noise = torch.randn(8, *x.shape, generator=g)
    hi, lo = seed_std_by_texture(0.2 * noise * detail / detail.amax(), x)
    assert (hi > 2 * lo).all()
    same_hi, same_lo = seed_std_by_texture(0.05 * noise, x)
    assert same_hi.tolist() == pytest.approx(same_lo.tolist(), rel=0.1)
    assert torch.equal(seed_std_by_texture(x.expand(3, *x.shape), x)[0], torch.zeros(4))
    with pytest.raises(ValueError, match="K >= 2"):
        seed_std_by_texture(noise[:1], x)
