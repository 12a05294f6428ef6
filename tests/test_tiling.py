"""Tiled diffusion sampling: tile grid, blending windows, agreement with the untiled sampler, no seams."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from neurop_diff.diffusion.sampling import ddim_sample
from neurop_diff.diffusion.schedule import make_schedule
from neurop_diff.diffusion.tiling import (
    blend_window,
    make_tile_grid,
    plan_tiles,
    tile_starts,
    tiled_ddim_sample,
    tiled_denoiser,
)
from neurop_diff.models.operator import SRNO
from neurop_diff.models.unet import UNet


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(96, 32, 8), (100, 32, 8), (33, 32, 0), (256, 64, 31)]
)
def test_tile_starts_cover_with_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()
    shared = [a + tile - b for a, b in itertools.pairwise(starts)]
    assert min(shared) >= overlap
    assert max(shared) - min(shared) <= 1  # spread evenly
    # The fewest tiles that keep the overlap: one fewer would need a smaller overlap.
    n = len(starts)
    if n > 2:
        assert (length - tile) / (n - 2) > tile - overlap


def test_tile_starts_single_and_errors():
    assert tile_starts(20, 32, 8) == [0]
    assert tile_starts(32, 32, 8) == [0]
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(100, 32, 32)
    with pytest.raises(ValueError, match="multiple of 8"):
        plan_tiles((64, 64), 30, 4, multiple=8)


def test_windows_form_a_partition_of_unity():
    grid = make_tile_grid((100, 90), 32, 8)
    win = grid.windows(dtype=torch.float64)
    assert win.shape == (len(grid), 1, 32, 32) and bool((win > 0).all())
    total = torch.zeros(100, 90, dtype=torch.float64)
    for (y, x), w in zip(grid.boxes(), win, strict=True):
        total[y : y + 32, x : x + 32] += w[0]
    # Rise of a tile = fall of its neighbour over their exact overlap: the weights sum to 1 (cos^2 + sin^2).
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-12)
    # Flat at the canvas borders: the first tile's top-left corner has weight 1.
    assert float(win[0, 0, 0, 0]) == 1.0
    w = blend_window(10, 4, 0, dtype=torch.float64)
    assert torch.all(w[4:] == 1) and torch.all(torch.diff(w[:5]) > 0)


def test_tiled_denoiser_is_exact_for_a_pointwise_denoiser():
    # A pointwise function does not care about tiling: the blended result must equal the direct one.
    def pointwise(x, gamma, cond):
        return torch.tanh(2 * x - cond) * gamma.view(-1, 1, 1, 1)

    grid = make_tile_grid((70, 50), 24, 6)
    calls = []
    blended = tiled_denoiser(pointwise, grid, tile_batch=4, on_tiles=calls.append)
    x, cond = torch.randn(2, 3, 70, 50), torch.randn(2, 3, 70, 50)
    gamma = torch.tensor([0.3, 0.9])
    torch.testing.assert_close(blended(x, gamma, cond), pointwise(x, gamma, cond), rtol=1e-5, atol=1e-6)
    assert sum(calls) == len(grid) and max(calls) == 4


class _Counting:
    def __init__(self, fn):
        self.fn, self.shapes = fn, []

    def __call__(self, x, gamma, cond):
        self.shapes.append(tuple(x.shape))
        return self.fn(x, gamma, cond)


def _tiny_pair(seed: int = 0) -> tuple[UNet, SRNO]:
    torch.manual_seed(seed)
    unet = UNet(
        in_channels=6, base_channels=16, channel_mults=(1, 2), attn_resolutions=(16,), image_size=32,
        norm_groups=8, dropout=0.0,
    ).eval()  # fmt: skip
    operator = SRNO(encoder_blocks=1, encoder_width=8, width=16, blocks=1, heads=2).eval()
    return unet, operator


def test_one_tile_covering_everything_equals_the_untiled_sampler():
    unet, _ = _tiny_pair()
    schedule = make_schedule()
    cond = torch.rand(1, 3, 32, 32) * 2 - 1

    def denoise(x, gamma, c):
        return unet(torch.cat([x, c], dim=1), gamma)

    kw = {"steps": 3, "eta": 0.5}
    ref = ddim_sample(
        denoise, cond, (1, 3, 32, 32), schedule, generator=torch.Generator().manual_seed(7), **kw
    )
    counted = _Counting(denoise)
    out = tiled_ddim_sample(
        counted, cond, (1, 3, 32, 32), schedule, tile=32, overlap=8, multiple=2,
        generator=torch.Generator().manual_seed(7), **kw,
    )  # fmt: skip
    assert torch.equal(out, ref)
    assert counted.shapes == [(1, 3, 32, 32)] * 3


def test_small_canvas_is_padded_to_the_unet_multiple():
    schedule = make_schedule()

    def pointwise(x, gamma, c):
        if x.shape[-2] % 8 or x.shape[-1] % 8:
            raise AssertionError(f"tile {tuple(x.shape)} not a multiple of 8")
        return 0.5 * x - 0.1 * c

    cond = torch.rand(1, 3, 20, 28)
    out = tiled_ddim_sample(
        pointwise, cond, (1, 3, 20, 28), schedule, tile=32, overlap=8, multiple=8, steps=3,
        generator=torch.Generator().manual_seed(1),
    )  # fmt: skip
    padded = F.pad(cond, (0, 4, 0, 4), mode="replicate")
    ref = ddim_sample(
        pointwise, padded, (1, 3, 24, 32), schedule, steps=3, generator=torch.Generator().manual_seed(1)
    )
    assert out.shape == (1, 3, 20, 28)
    torch.testing.assert_close(out, ref[..., :20, :28])


def _seam_ratio(x: torch.Tensor, grid) -> float:
    """Mean |difference of adjacent pixels| across the tile borders / the same statistic elsewhere."""
    rows, cols = grid.seams()
    dc = (x[..., 1:] - x[..., :-1]).abs().mean(dim=(0, 1, 2))  # dc[i]: between columns i and i + 1
    dr = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(0, 1, 3))
    sc, sr = [c - 1 for c in cols], [r - 1 for r in rows]
    inner_c = torch.ones_like(dc, dtype=torch.bool)
    inner_c[sc] = False
    inner_r = torch.ones_like(dr, dtype=torch.bool)
    inner_r[sr] = False
    seam = torch.cat([dc[sc], dr[sr]]).mean()
    interior = torch.cat([dc[inner_c], dr[inner_r]]).mean()
    return float(seam / interior)


def _blur(y: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    r = int(3 * sigma)
    t = torch.arange(-r, r + 1, dtype=y.dtype)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    c = y.shape[1]
    y = F.pad(y, (r, r, r, r), mode="reflect")  # reflect: the blur itself adds nothing at tile borders
    y = F.conv2d(y, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


@pytest.fixture(scope="module")
def prior(shared_data):
    """The tiny random operator's prior for a real image: 24x24 LR -> 96x96 canvas (three 32-px tiles a side)."""
    _, operator = _tiny_pair()
    img = (
        Image.open(shared_data / "rsscn7" / "aGrass" / "a001.jpg")
        .convert("RGB")
        .resize((24, 24), Image.BICUBIC)
    )
    lr = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        return operator(lr, (96, 96))


def test_blended_tiles_show_no_seams_with_a_random_unet(prior):
    unet, _ = _tiny_pair()

    def denoise(x, gamma, c):  # the DiffusionModule's denoiser with random weights
        return unet(torch.cat([x, c], dim=1), gamma)

    out = tiled_ddim_sample(
        denoise, prior, (1, 3, 96, 96), make_schedule(), tile=32, overlap=8, multiple=2, steps=4,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    _, grid = plan_tiles((96, 96), 32, 8, 2)
    assert len(grid) == 16
    assert _seam_ratio(out, grid) <= 1.5


def test_seam_statistic_catches_unblended_tiles_and_blending_removes_them(prior):
    """A random UNet's output is white-noise-like, which hides seams; a trained model's is structured. Here
    the random UNet's (blurred) output is a smooth, tile-context-dependent x0 correction (GroupNorm statistics,
    zero padding): independent tiles then show clear seams, and blending removes them."""
    unet, _ = _tiny_pair()

    def denoise(x, gamma, c):
        g = gamma.view(-1, 1, 1, 1)
        x0 = (c + _blur(unet(torch.cat([x, c], dim=1), gamma))).clamp(-1, 1)
        return (x - g * x0) / (1 - g**2).sqrt()

    ratios = {}
    for overlap in (0, 8):  # overlap 0: hard-pasted independent tiles (the noise is global either way)
        out = tiled_ddim_sample(
            denoise, prior, (1, 3, 96, 96), make_schedule(), tile=32, overlap=overlap, multiple=2, steps=4,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        ratios[overlap] = _seam_ratio(out, plan_tiles((96, 96), 32, overlap, 2)[1])
    assert ratios[0] > 2.0, ratios
    assert ratios[8] <= 1.5, ratios
