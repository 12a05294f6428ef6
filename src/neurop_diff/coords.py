"""Pixel-centre coordinates and cells on [-1, 1]: the one convention shared by the data and the models.

Pixel ``i`` of ``n`` has centre ``-1 + (2 i + 1) / n`` (``align_corners=False``); coordinate grids are
``(H, W, 2)`` with the last axis ``(y, x)`` (row then column, as LIIF/SRNO). Pure torch, no Lightning.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["make_cell", "make_coord", "pixel_centres"]


def pixel_centres(
    n: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Centres of ``n`` pixels on [-1, 1]: ``-1 + (2 i + 1) / n`` (computed in float64, then cast)."""
    return (-1 + (2 * torch.arange(n, device=device, dtype=torch.float64) + 1) / n).to(dtype)


def make_coord(
    size: tuple[int, int], device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Pixel-centre grid of an ``(H, W)`` image in [-1, 1], shape ``(H, W, 2)``, last axis ``(y, x)``.

    Pixel ``i`` of ``n`` has centre ``-1 + (2 i + 1) / n`` (align_corners=False). ``grid_sample`` wants
    ``(x, y)``: pass ``coord.flip(-1)``.
    """
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"make_coord: size must be positive, got {tuple(size)}")
    ys, xs = pixel_centres(h, device, dtype), pixel_centres(w, device, dtype)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)


def make_cell(
    size: tuple[int, int],
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Cell of an ``(H, W)`` HR grid: ``(2 / H, 2 / W)``, shape ``(2,)`` or ``(batch_size, 2)``."""
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"make_cell: size must be positive, got {tuple(size)}")
    cell = torch.tensor([2.0 / h, 2.0 / w], device=device, dtype=dtype)
    return cell if batch_size is None else cell.expand(batch_size, 2).clone()
