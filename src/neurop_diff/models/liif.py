"""LIIF (Chen, Liu & Wang, CVPR 2021): the local implicit image function, the paper's Table 4 comparator.

Structure (docs: ../shared/reference/method.md, section 2b): EDSR-baseline features at LR resolution
(``encode``); every feature replaced by its 3x3 neighbourhood (zero padding: 9 C channels, "feature
unfolding"); at a query point, for each of its 4 nearest LR pixels (the lookup SRNO's lift uses:
``models/lift.py``), an MLP maps [unfolded feature, coordinates relative to that pixel, cell] (both in LR
pixels) to an RGB prediction; the 4 predictions are blended with the diagonally opposite areas ("local
ensemble"). No LR skip is added.

The MLP's first layer, applied to an unfolded feature, is a 3x3 convolution of the features (the unfold order
is the conv weight's (C, 3, 3)): it is computed once per LR pixel (the "table"), so a query point costs a
gather and a 4-input product instead of a 580-input one, with the same numbers up to float rounding. Points
are independent, so evaluating them in chunks is exact.
"""

from __future__ import annotations

from itertools import pairwise
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .chunked import PIECE_POINTS
from .encoder import EDSREncoder
from .lift import LRFeatures, lr_grid, neighbours
from .query import ChunkSize, batch_cell, check_image, on_grid, resolve_chunk

__all__ = ["LIIF"]


class LIIF(nn.Module):
    """Local implicit image function; images in [-1, 1] (the authors' sub 0.5, div 0.5), scale = HR/LR any real.

    Args:
        encoder_blocks, encoder_width: EDSR-baseline depth and channels (16, 64).
        mlp_width: hidden width of the MLP (256); mlp_depth: its hidden layers (4): Linear(9 C + 4, width),
            ReLU, ..., Linear(width, 3).
    """

    #: The ``arch`` name of this operator (OperatorModule, checkpoints, error messages).
    arch: ClassVar[str] = "liif"

    def __init__(
        self, encoder_blocks: int = 16, encoder_width: int = 64, mlp_width: int = 256, mlp_depth: int = 4
    ) -> None:
        super().__init__()
        if mlp_depth < 1 or mlp_width < 1:
            raise ValueError(f"LIIF: mlp_depth and mlp_width must be >= 1, got {mlp_depth}, {mlp_width}")
        self.encoder = EDSREncoder(encoder_blocks, encoder_width)
        dims = [9 * encoder_width + 4] + [mlp_width] * mlp_depth
        layers: list[nn.Module] = []
        for d_in, d_out in pairwise(dims):
            layers += [nn.Linear(d_in, d_out), nn.ReLU()]
        # Indices 0, 2, ..., 2 * mlp_depth hold the Linear layers, as the authors' imnet.layers.
        self.mlp = nn.Sequential(*layers, nn.Linear(mlp_width, 3))

    def forward(
        self,
        lr: Tensor,
        size: tuple[int, int] | None = None,
        *,
        coord: Tensor | None = None,
        cell: Tensor | None = None,
        chunk_size: ChunkSize = None,
    ) -> Tensor:
        """SR image (B, 3, H, W) in about [-1, 1] on the pixel-centre grid of ``size`` = (H, W), or at
        ``coord`` (B, H, W, 2) / (H, W, 2) with ``cell`` (default ``(2/H, 2/W)``).

        ``chunk_size``: query points per image evaluated at once: an int, "auto" (as SRNO's) or None (all, in
        cache-sized pieces when no gradient is needed). Points are independent: every choice gives the same
        numbers; memory beyond the encoder is bounded by the chunk.
        """

        def points(c: Tensor, k: Tensor) -> Tensor:
            return self.query(self.encode(lr), lr, c, k, chunk_size=chunk_size)

        return on_grid(lr, size, coord, cell, chunk_size, points)

    def encode(self, lr: Tensor) -> Tensor:
        """LR image (B, 3, h, w) in [-1, 1] -> features (B, encoder_width, h, w)."""
        check_image(lr)
        return self.encoder(lr)

    def query(
        self, feat: Tensor, lr: Tensor, coord: Tensor, cell: Tensor, *, chunk_size: ChunkSize = None
    ) -> Tensor:
        """RGB (B, N, 3) in about [-1, 1] at ``coord`` (B, N, 2) (y, x) in [-1, 1] with ``cell`` (B, 2) or
        (2,) (HR pixel size in [-1, 1] units), from ``feat = encode(lr)`` (``lr`` is unused: no skip)."""
        if coord.dim() != 3 or coord.shape[-1] != 2 or coord.shape[0] != feat.shape[0]:
            raise ValueError(f"LIIF.query: coord must be (B={feat.shape[0]}, N, 2), got {tuple(coord.shape)}")
        b, n, _ = coord.shape
        chunk = resolve_chunk(chunk_size, b, n)
        grid = self.table(feat, batch_cell(cell, b, coord))
        if chunk is None and torch.is_grad_enabled():
            return self.decode(grid, coord)  # training: one differentiable pass
        out = coord.new_empty(b, n, 3)
        step = chunk if chunk is not None else max(1, PIECE_POINTS // b)
        for start in range(0, n, step):
            out[:, start : start + step] = self.decode(grid, coord[:, start : start + step])
        return out

    def table(self, feat: Tensor, cell: Tensor) -> LRFeatures:
        """The MLP's first layer without its relative-coordinate term at every LR pixel (B*h*w, mlp_width):
        the 3x3 conv of ``feat`` (B, C, h, w) that equals it on the unfolded features, plus the cell term
        and the bias (``cell`` (B, 2), one per image)."""
        first = self.mlp[0]
        c = feat.shape[1]
        if first.in_features != 9 * c + 4:
            raise ValueError(f"LIIF: feat has {c} channels, the MLP expects {(first.in_features - 4) // 9}")
        w_feat = first.weight[:, : 9 * c].reshape(first.out_features, c, 3, 3)
        h, w = feat.shape[-2:]
        rel_cell = cell * cell.new_tensor([h, w])
        const = F.linear(rel_cell, first.weight[:, 9 * c + 2 :], first.bias)  # (B, mlp_width)
        rows = F.conv2d(feat, w_feat, padding=1) + const[:, :, None, None]
        return lr_grid(rows, cell)

    def decode(self, grid: LRFeatures, coord: Tensor) -> Tensor:
        """RGB (B, n, 3) at ``coord`` (B, n, 2): the 4 neighbours' MLP predictions blended by area."""
        b, n, _ = coord.shape
        nb = neighbours(grid, coord)
        c9 = self.mlp[0].in_features - 4
        w_rel = self.mlp[0].weight[:, c9 : c9 + 2]
        x = grid.rows.index_select(0, nb.rows.reshape(-1)).view(b, n, 4, -1)
        x = x + torch.matmul(nb.rel.view(b, n, 4, 2), w_rel.t())
        pred = self.mlp[1:](x)  # (B, n, 4, 3): one prediction per neighbour
        return (pred * nb.weights.view(b, n, 4, 1)).sum(2)
