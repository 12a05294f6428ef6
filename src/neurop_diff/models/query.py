"""Query grids and chunk sizes shared by the operators (SRNO, LIIF): pixel-centre grids, cells, input checks.

Coordinates are (y, x) in [-1, 1] (``coords.make_coord``); a cell is the HR pixel size ``(2 / H, 2 / W)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from neurop_diff.coords import make_coord

# chunk_size="auto": all points at once up to this many (B * H * W), else chunks of this many per batch.
AUTO_FULL_POINTS = 2**18
AUTO_CHUNK_POINTS = 2**13

ChunkSize = int | Literal["auto"] | None


def query_grid(
    lr: Tensor, size: tuple[int, int] | None, coord: Tensor | None, cell: Tensor | None
) -> tuple[Tensor, Tensor]:
    """``coord`` (B, H, W, 2) (default: the pixel centres of ``size``) and ``cell`` (B, 2) of a grid query."""
    check_image(lr)
    b = lr.shape[0]
    if coord is None:
        if size is None:
            raise ValueError("give either size=(H, W) or coord=(B, H, W, 2)")
        hh, ww = check_size(size)
        coord = make_coord((hh, ww), lr.device, lr.dtype).expand(b, hh, ww, 2)
    else:
        if coord.dim() == 3:
            coord = coord.unsqueeze(0).expand(b, *coord.shape)
        if coord.dim() != 4 or coord.shape[-1] != 2 or coord.shape[0] != b:
            raise ValueError(f"coord must be (B={b}, H, W, 2) or (H, W, 2), got {tuple(coord.shape)}")
        hh, ww = coord.shape[1:3]
        if size is not None and tuple(size) != (hh, ww):
            raise ValueError(f"size {tuple(size)} does not match coord grid {(hh, ww)}")
    if cell is None:
        cell = torch.tensor([2.0 / hh, 2.0 / ww], device=lr.device, dtype=lr.dtype)
    return coord, batch_cell(cell, b, coord)


def check_image(lr: Tensor) -> None:
    """Raise unless ``lr`` is an image batch (B, 3, h, w)."""
    if lr.dim() != 4 or lr.shape[1] != 3:
        raise ValueError(f"expected an LR image (B, 3, h, w) in [-1, 1], got shape {tuple(lr.shape)}")


def check_size(size) -> tuple[int, int]:
    """``size`` as two positive ints (H, W), else ValueError."""
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"size must be two positive ints (H, W), got {size!r}")
    return int(size[0]), int(size[1])


def batch_cell(cell: Tensor, b: int, like: Tensor) -> Tensor:
    """``cell`` (2,) or (B, 2) as (B, 2) on ``like``'s device and dtype."""
    cell = torch.as_tensor(cell, device=like.device, dtype=like.dtype)
    if cell.shape == (2,):
        cell = cell.expand(b, 2)
    if cell.shape != (b, 2):
        raise ValueError(f"cell must be (2,) or (B={b}, 2), got {tuple(cell.shape)}")
    return cell


def resolve_chunk(chunk_size: ChunkSize, b: int, n: int) -> int | None:
    """Points per image and chunk for ``b`` images of ``n`` points (None: all at once); checks the value."""
    if chunk_size == "auto":
        return None if b * n <= AUTO_FULL_POINTS else max(1, AUTO_CHUNK_POINTS // b)
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, 'auto' or None, got {chunk_size!r}")
    return chunk_size


def on_grid(
    lr: Tensor,
    size: tuple[int, int] | None,
    coord: Tensor | None,
    cell: Tensor | None,
    chunk_size: ChunkSize,
    points: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """A grid query of an operator: ``points(coord (B, N, 2), cell (B, 2)) -> (B, N, C)`` evaluated on the grid
    of ``size`` (or ``coord``, see :func:`query_grid`), returned as (B, C, H, W)."""
    coord, cell = query_grid(lr, size, coord, cell)
    b, h, w, _ = coord.shape
    resolve_chunk(chunk_size, b, h * w)  # a bad chunk_size fails before the encoder runs
    out = points(coord.reshape(b, h * w, 2), cell)
    return out.view(b, h, w, -1).permute(0, 3, 1, 2).contiguous()
