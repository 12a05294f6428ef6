"""Pure tiling for large scenes: tile grid, smooth blending windows, and a tiled denoiser.

The diffusion UNet is trained on HR crops of ``image_size`` pixels; a large scene is sampled on overlapping
tiles of that size **jointly**: at every sampler step the denoiser runs on every tile (in batches) and the
per-tile clean estimates are blended into one full-canvas estimate with smooth raised-cosine windows before
the (global) sampler update, so the tiles agree at every step and no seam forms (MultiDiffusion, Bar-Tal et al.
2023). The initial noise and any step noise are drawn for the whole canvas.

Images are float ``(B, C, H, W)``; nothing here knows about the networks or Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from neurop_diff.diffusion.sampling import Denoiser

__all__ = [
    "TileGrid",
    "blend_window",
    "check_tile_size",
    "make_tile_grid",
    "pad_for_tiles",
    "plan_tiles",
    "tile_starts",
    "tiled_denoiser",
]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``[0, length)``; neighbours share >= ``overlap`` pixels.

    The first tile starts at 0, the last ends at ``length``, the others are spread evenly between them (so all
    overlaps are about equal). ``tile >= length`` gives one tile at 0.
    """
    if length < 1 or tile < 1:
        raise ValueError(f"tile_starts: length and tile must be >= 1, got length={length}, tile={tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, tile={tile}), got {overlap}")
    if tile >= length:
        return [0]
    n = math.ceil((length - tile) / (tile - overlap)) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _ramp(n: int, device: torch.device | None, dtype: torch.dtype) -> Tensor:
    """Rising raised-cosine ramp of ``n`` samples strictly inside (0, 1); ``ramp + ramp.flip(0) == 1``."""
    i = torch.arange(1, n + 1, device=device, dtype=torch.float64)
    return torch.sin(0.5 * math.pi * i / (n + 1)).pow(2).to(dtype)


def blend_window(
    length: int, rise: int, fall: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """1-D window of ``length`` samples: raised-cosine rise over the first ``rise`` samples and fall over the
    last ``fall`` ones (0 = flat at that side, for canvas borders), 1 elsewhere; always > 0.

    Two neighbours whose overlap is exactly the fall of one and the rise of the other sum to 1 there.
    """
    w = torch.ones(length, device=device, dtype=dtype)
    if rise > 0:
        w[:rise] *= _ramp(rise, device, dtype)
    if fall > 0:
        w[length - fall :] *= _ramp(fall, device, dtype).flip(0)
    return w


@dataclass(frozen=True)
class TileGrid:
    """Tiles of ``tile = (th, tw)`` pixels over a canvas of ``size = (H, W)``: rows start at ``ys``, columns
    at ``xs``; tile ``k`` is row ``k // len(xs)``, column ``k % len(xs)``."""

    size: tuple[int, int]
    tile: tuple[int, int]
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    def boxes(self) -> list[tuple[int, int]]:
        """Top-left corners ``(y, x)`` of all tiles, row-major."""
        return [(y, x) for y in self.ys for x in self.xs]

    def windows(self, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Blending weights of every tile, ``(len(self), 1, th, tw)``: ramps over the overlaps with the
        actual neighbours, flat at the canvas borders."""
        rows = _axis_windows(self.ys, self.tile[0], device, dtype)
        cols = _axis_windows(self.xs, self.tile[1], device, dtype)
        return torch.stack([r[:, None] * c[None, :] for r in rows for c in cols]).unsqueeze(1)

    def seams(self) -> tuple[list[int], list[int]]:
        """Rows and columns where a tile begins or ends inside the canvas: index ``i`` means the boundary
        between pixel ``i - 1`` and ``i`` (where an unblended tiling would show a seam)."""

        def cuts(starts: tuple[int, ...], t: int, n: int) -> list[int]:
            return sorted({s for s in starts if s > 0} | {s + t for s in starts if s + t < n})

        return cuts(self.ys, self.tile[0], self.size[0]), cuts(self.xs, self.tile[1], self.size[1])


def _axis_windows(
    starts: Sequence[int], t: int, device: torch.device | None, dtype: torch.dtype
) -> list[Tensor]:
    out = []
    for k, s in enumerate(starts):
        rise = starts[k - 1] + t - s if k > 0 else 0
        fall = s + t - starts[k + 1] if k + 1 < len(starts) else 0
        out.append(blend_window(t, min(rise, t), min(fall, t), device, dtype))
    return out


def make_tile_grid(size: tuple[int, int], tile: int | tuple[int, int], overlap: int) -> TileGrid:
    """Grid of tiles over ``size = (H, W)``; a tile larger than the canvas is cut to the canvas."""
    h, w = (int(v) for v in size)
    th, tw = (tile, tile) if isinstance(tile, int) else (int(tile[0]), int(tile[1]))
    th, tw = min(th, h), min(tw, w)
    ys = tile_starts(h, th, min(overlap, th - 1))
    xs = tile_starts(w, tw, min(overlap, tw - 1))
    return TileGrid((h, w), (th, tw), tuple(ys), tuple(xs))


def tiled_denoiser(
    denoise: Denoiser,
    grid: TileGrid,
    *,
    tile_batch: int = 4,
    on_tiles: Callable[[int], None] | None = None,
) -> Denoiser:
    """Full-canvas denoiser from a tile denoiser: runs ``denoise`` on every tile of ``grid`` (``tile_batch``
    tiles of all B images per call) and blends the predictions with the grid's windows.

    A grid of one tile covering the canvas returns ``denoise`` itself (identical results). ``on_tiles(n)`` is
    called after each batch of ``n`` tiles (progress).
    """
    if tile_batch < 1:
        raise ValueError(f"tile_batch must be >= 1, got {tile_batch}")
    if len(grid) == 1 and grid.tile == grid.size:
        if on_tiles is None:
            return denoise

        def single(x: Tensor, level: Tensor, condition: Tensor | None) -> Tensor:
            out = denoise(x, level, condition)
            on_tiles(1)
            return out

        return single

    boxes = grid.boxes()
    th, tw = grid.tile
    cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def weights(like: Tensor) -> tuple[Tensor, Tensor]:
        key = (like.device, like.dtype)
        if key not in cache:
            win = grid.windows(like.device, like.dtype)
            norm = torch.zeros(grid.size, device=like.device, dtype=like.dtype)
            for (y, x), wk in zip(boxes, win, strict=True):
                norm[y : y + th, x : x + tw] += wk[0]
            cache[key] = (win, norm)
        return cache[key]

    def blended(x: Tensor, level: Tensor, condition: Tensor | None) -> Tensor:
        if tuple(x.shape[-2:]) != grid.size:
            raise ValueError(
                f"tiled denoiser: canvas {tuple(x.shape[-2:])} does not match the grid {grid.size}"
            )
        b = x.shape[0]
        win, norm = weights(x)
        out: Tensor | None = None
        for first in range(0, len(boxes), tile_batch):
            group = boxes[first : first + tile_batch]
            xs = torch.cat([x[..., y : y + th, c : c + tw] for y, c in group])
            cs = (
                None
                if condition is None
                else torch.cat([condition[..., y : y + th, c : c + tw] for y, c in group])
            )
            est = denoise(xs, level.repeat(len(group)), cs)
            if out is None:
                out = est.new_zeros(b, est.shape[1], *grid.size)
            for k, (y, c) in enumerate(group):
                out[..., y : y + th, c : c + tw] += est[k * b : (k + 1) * b] * win[first + k]
            if on_tiles is not None:
                on_tiles(len(group))
        return out / norm

    return blended


def check_tile_size(tile: int, multiple: int = 1) -> None:
    """Raises ``ValueError`` unless ``tile`` is a positive multiple of ``multiple`` (the UNet's downsampling)."""
    if tile < 1 or tile % multiple:
        raise ValueError(
            f"tile must be a positive multiple of {multiple} (the UNet's downsampling), got {tile}"
        )


def plan_tiles(
    size: tuple[int, int], tile: int, overlap: int, multiple: int = 1
) -> tuple[tuple[int, int], TileGrid]:
    """Padded canvas and tile grid for sampling a ``size = (H, W)`` image with tiles of ``tile`` pixels that
    must be multiples of ``multiple``: a side shorter than ``tile`` is padded up to a multiple and becomes one
    tile; a longer side is covered by overlapping tiles (no padding)."""
    check_tile_size(tile, multiple)
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, tile={tile}), got {overlap}")
    padded = tuple(n if n >= tile else -(-n // multiple) * multiple for n in (int(v) for v in size))
    return padded, make_tile_grid(padded, tile, overlap)  # type: ignore[return-value]


def pad_for_tiles(
    condition: Tensor | None, size: tuple[int, int], tile: int, overlap: int, multiple: int = 1
) -> tuple[Tensor | None, tuple[int, int], TileGrid]:
    """(condition padded to the canvas of :func:`plan_tiles` by edge replication, that canvas, its grid) for
    sampling a ``size = (H, W)`` image; ``condition`` (B, C', H, W) must cover the image."""
    h, w = int(size[0]), int(size[1])
    (hp, wp), grid = plan_tiles((h, w), tile, overlap, multiple)
    if condition is not None and tuple(condition.shape[-2:]) != (h, w):
        raise ValueError(f"condition has size {tuple(condition.shape[-2:])}, expected the canvas {(h, w)}")
    if condition is not None and (hp, wp) != (h, w):
        condition = F.pad(condition, (0, wp - w, 0, hp - h), mode="replicate")
    return condition, (hp, wp), grid
