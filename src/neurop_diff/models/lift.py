"""SRNO's lift (Wei & Zhang 2023, the kernel integral over the LR features before the Galerkin blocks).

Each query point takes its 4 nearest LR features (one per diagonal shift, in the reference's loop order: y
shift outer), weights each by the area of the diagonally opposite rectangle, and concatenates its coordinates
relative to each (in LR pixels), the 4 weighted features and the relative cell; one ``Linear`` maps that to
``width`` channels. Shared by the reference forward (``SRNO.reference``) and the chunked evaluator; the
neighbour lookup (``lr_grid``, ``neighbours``: the 4 shifts, relative coordinates, swapped area weights) is
also LIIF's (``models/liif.py``), which weights predictions instead of features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neurop_diff.coords import pixel_centres

# (dy, dx) of the four feature queries, in the reference's loop order (y shift outer).
SHIFTS = ((-1, -1), (-1, 1), (1, -1), (1, 1))
_EPS_SHIFT = 1e-6


@dataclass(frozen=True)
class LRFeatures:
    """The LR feature map as rows, with the geometry a point lookup needs."""

    h: int
    w: int
    rows: Tensor  # (B*h*w, C) features, channels last
    index_map: Tensor  # (B, 1, h, w) float linear pixel index, sampled with nearest like the reference
    ys: Tensor  # (h,) pixel centres
    xs: Tensor  # (w,)
    offsets: Tensor  # (B, 1) start of each batch item in ``rows``
    rel_cell: Tensor  # (B, 2) the HR cell in LR pixels


class Neighbours(NamedTuple):
    """The 4 neighbours of n query points: LR rows (B*n, 4), area weights (B*n, 4), rel coords (B, n, 8)."""

    rows: Tensor
    weights: Tensor
    rel: Tensor


def lr_features(feat: Tensor, cell: Tensor, lift: nn.Linear) -> LRFeatures:
    """``feat`` (B, C, h, w) and ``cell`` (B, 2) (HR pixel size in [-1, 1] units) ready for point lookups."""
    c = feat.shape[1]
    if 4 * (c + 2) + 2 != lift.in_features:
        raise ValueError(f"SRNO: feat has {c} channels, the lift expects {(lift.in_features - 2) // 4 - 2}")
    return lr_grid(feat, cell)


def lr_grid(feat: Tensor, cell: Tensor) -> LRFeatures:
    """Any per-LR-pixel map ``feat`` (B, C, h, w) as the rows that :func:`neighbours` indexes, with ``cell``
    (B, 2); shared by SRNO's lift and LIIF (whose rows are its first MLP layer at every LR pixel)."""
    b, c, h, w = feat.shape
    if h * w >= 2**24:
        raise ValueError(f"LR feature map {h}x{w} too large (index map limited to 2**24 pixels)")
    dev = feat.device
    return LRFeatures(
        h=h,
        w=w,
        rows=feat.permute(0, 2, 3, 1).reshape(b * h * w, c),
        index_map=torch.arange(h * w, device=dev, dtype=torch.float32).view(1, 1, h, w).expand(b, 1, h, w),
        ys=pixel_centres(h, dev, feat.dtype),
        xs=pixel_centres(w, dev, feat.dtype),
        offsets=torch.arange(b, device=dev).unsqueeze(1) * (h * w),
        rel_cell=cell * cell.new_tensor([h, w]),
    )


def neighbours(grid: LRFeatures, coord: Tensor) -> Neighbours:
    """The 4 LR neighbours of ``coord`` (B, n, 2) (y, x) in [-1, 1], their area weights and rel coords."""
    b, n, _ = coord.shape
    h, w = grid.h, grid.w
    rels, rows, areas = [], [], []
    for dy, dx in SHIFTS:
        shifted = coord + coord.new_tensor([dy / h + _EPS_SHIFT, dx / w + _EPS_SHIFT])
        shifted = shifted.clamp(-1 + 1e-6, 1 - 1e-6)
        # Nearest sampling of the index map selects exactly the pixel the reference's grid_sample does.
        idx = F.grid_sample(
            grid.index_map, shifted.flip(-1).unsqueeze(1).float(), mode="nearest", align_corners=False
        )
        idx = idx.view(-1).long()
        rel_y = (coord[..., 0] - grid.ys.index_select(0, idx // w).view(b, n)) * h
        rel_x = (coord[..., 1] - grid.xs.index_select(0, idx % w).view(b, n)) * w
        rels += [rel_y, rel_x]
        rows.append((idx.view(b, n) + grid.offsets).view(-1))
        areas.append((rel_y * rel_x).abs() + 1e-9)
    total = areas[0] + areas[1] + areas[2] + areas[3]
    weights = torch.stack([areas[3 - k] / total for k in range(4)], -1)  # the diagonally opposite area
    return Neighbours(torch.stack(rows, 1), weights.view(-1, 4), torch.stack(rels, dim=-1))


def lift_direct(lift: nn.Linear, grid: LRFeatures, nb: Neighbours) -> Tensor:
    """Lifted features (B, n, width): ``lift([rel coords | 4 weighted features | rel cell])``."""
    b, n, _ = nb.rel.shape
    feats = [
        grid.rows.index_select(0, nb.rows[:, k]).view(b, n, -1) * nb.weights[:, k].view(b, n, 1)
        for k in range(4)
    ]
    return lift(torch.cat([nb.rel, *feats, grid.rel_cell.unsqueeze(1).expand(b, n, 2)], dim=-1))
