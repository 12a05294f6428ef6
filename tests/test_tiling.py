"""Tiled diffusion sampling: tile grid, blending windows, agreement with the untiled sampler, no seams."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from neurop_diff.diffusion.parameterisation import to_x0
from neurop_diff.diffusion.sampling import get_sigmas, sample_ddim
from neurop_diff.diffusion.schedule import make_schedule, sigma_to_gamma
from neurop_diff.diffusion.tiling import (
    blend_window,
    make_tile_grid,
    pad_for_tiles,
    plan_tiles,
    tile_starts,
    tiled_denoiser,
)
from neurop_diff.models.srno import SRNO
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


def _unet_denoiser(unet: UNet, blur: bool = False):
    """The clean estimate of a random eps UNet on the VE state, clamped (NeurOpDiff.denoised's shape); with
    ``blur``: the condition plus a blurred UNet output instead, a smooth tile-context-dependent correction."""

    def denoiser(x, sigma, c):
        g = sigma_to_gamma(sigma)
        x_t = g.view(-1, 1, 1, 1).to(x.dtype) * x
        out = unet(torch.cat([x_t, c], dim=1), g)
        return (c + _blur(out) if blur else to_x0("eps", out, x_t, g)).clamp(-1, 1)

    return denoiser


def _start(shape, sigmas, seed):
    """The VE starting state of a canvas: N(0, I) / gamma_max from ``seed``, and that generator."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen) * float((1 + sigmas[0] ** 2).sqrt()), gen


def test_one_tile_covering_everything_equals_the_untiled_sampler():
    unet, _ = _tiny_pair()
    sigmas = get_sigmas(make_schedule(), 3, "trailing")
    cond = torch.rand(1, 3, 32, 32) * 2 - 1
    denoise = _unet_denoiser(unet)
    x, gen = _start((1, 3, 32, 32), sigmas, 7)
    ref = sample_ddim(denoise, x, sigmas, condition=cond, eta=0.5, generator=gen)
    counted = _Counting(denoise)
    _, _, grid = pad_for_tiles(cond, (32, 32), 32, 8, 2)
    assert len(grid) == 1
    x, gen = _start((1, 3, 32, 32), sigmas, 7)
    out = sample_ddim(tiled_denoiser(counted, grid), x, sigmas, condition=cond, eta=0.5, generator=gen)
    assert torch.equal(out, ref)
    assert counted.shapes == [(1, 3, 32, 32)] * 3
    ticks = []
    x, gen = _start((1, 3, 32, 32), sigmas, 7)
    with_progress = tiled_denoiser(denoise, grid, on_tiles=ticks.append)
    assert torch.equal(sample_ddim(with_progress, x, sigmas, condition=cond, eta=0.5, generator=gen), ref)
    assert ticks == [1, 1, 1]


def test_small_canvas_is_padded_to_the_unet_multiple():
    sigmas = get_sigmas(make_schedule(), 3)

    def pointwise(x, sigma, c):
        if x.shape[-2] % 8 or x.shape[-1] % 8:
            raise AssertionError(f"tile {tuple(x.shape)} not a multiple of 8")
        return 0.5 * x - 0.1 * c

    cond = torch.rand(1, 3, 20, 28)
    padded_cond, canvas, grid = pad_for_tiles(cond, (20, 28), 32, 8, 8)
    assert canvas == (24, 32) and grid.size == (24, 32) and len(grid) == 1
    padded = F.pad(cond, (0, 4, 0, 4), mode="replicate")
    assert torch.equal(padded_cond, padded)
    x, gen = _start((1, 3, 24, 32), sigmas, 1)
    out = sample_ddim(tiled_denoiser(pointwise, grid), x, sigmas, condition=padded_cond, generator=gen)
    x, gen = _start((1, 3, 24, 32), sigmas, 1)
    ref = sample_ddim(pointwise, x, sigmas, condition=padded, generator=gen)
    torch.testing.assert_close(out, ref)
    with pytest.raises(ValueError, match="does not match the grid"):
        tiled_denoiser(pointwise, make_tile_grid((48, 48), 32, 8))(
            torch.zeros(1, 3, 24, 32), torch.ones(1), None
        )


def _tiled_run(denoise, prior, overlap: int, seed: int = 0) -> tuple[torch.Tensor, object]:
    """A 4-step DDIM run over the 96x96 canvas with 32-px tiles, the starting noise drawn for the whole canvas."""
    _, grid = plan_tiles((96, 96), 32, overlap, 2)
    sigmas = get_sigmas(make_schedule(), 4)
    x, gen = _start((1, 3, 96, 96), sigmas, seed)
    return sample_ddim(tiled_denoiser(denoise, grid), x, sigmas, condition=prior, generator=gen), grid


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
    out, grid = _tiled_run(
        _unet_denoiser(unet), prior, 8
    )  # the DiffusionModule's denoiser with random weights
    assert len(grid) == 16
    assert _seam_ratio(out, grid) <= 1.5


def test_seam_statistic_catches_unblended_tiles_and_blending_removes_them(prior):
    """A random UNet's output is white-noise-like, which hides seams; a trained model's is structured. Here
    the random UNet's (blurred) output is a smooth, tile-context-dependent x0 correction (GroupNorm statistics,
    zero padding): independent tiles then show clear seams, and blending removes them."""
    unet, _ = _tiny_pair()
    ratios = {}
    for overlap in (0, 8):  # overlap 0: hard-pasted independent tiles (the noise is global either way)
        out, grid = _tiled_run(_unet_denoiser(unet, blur=True), prior, overlap)
        ratios[overlap] = _seam_ratio(out, grid)
    assert ratios[0] > 2.0, ratios
    assert ratios[8] <= 1.5, ratios
