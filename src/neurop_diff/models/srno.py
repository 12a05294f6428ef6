"""SRNO (Wei & Zhang, CVPR 2023): a neural operator for continuous-scale super-resolution.

Structure (docs: ../shared/reference/method.md, section 2): EDSR-baseline features at LR resolution
(``encode``); at every query point, the lift of its 4 nearest LR features (``models/lift.py``) to ``width``
channels; Galerkin-type attention blocks (per-head LayerNorm on k and v, ``q (k^T v) / N``, no softmax); a
pointwise head plus the bilinear upsampling of the LR input (``decode``). ``reference`` is that, all points
at once; inference runs the same operator through the exact chunked evaluator (``models/chunked.py``).

Points travel as ``(B, N, C)`` tensors (channels last), so every 1x1 conv of the reference is a ``Linear``;
on CPU that is about twice as fast as ``conv2d`` with 1x1 kernels (measured: 96 vs 46 GFLOP/s on 2 cores).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .chunked import Output, evaluate
from .encoder import EDSREncoder
from .galerkin import GalerkinBlock
from .lift import lift_direct, lr_features, neighbours
from .query import (
    ChunkSize,
    batch_cell,
    check_image,
    on_grid,
    resolve_chunk,
)


class SRNO(nn.Module):
    """Super-Resolution Neural Operator; images in [-1, 1], scale = HR/LR any real (also < 1).

    Args:
        encoder_blocks, encoder_width: EDSR-baseline depth and channels (16, 64).
        width: operator channels (256); blocks: Galerkin blocks (2); heads: attention heads (16).
        head_width: hidden channels of the output head (256 in the reference for any ``width``).
    """

    #: The ``arch`` name of this operator (OperatorModule, checkpoints, error messages).
    arch: ClassVar[str] = "srno"

    def __init__(
        self,
        encoder_blocks: int = 16,
        encoder_width: int = 64,
        width: int = 256,
        blocks: int = 2,
        heads: int = 16,
        head_width: int = 256,
    ) -> None:
        super().__init__()
        if blocks < 1:
            raise ValueError(f"SRNO: blocks must be >= 1, got {blocks}")
        self.width = width
        self.encoder = EDSREncoder(encoder_blocks, encoder_width)
        self.lift = nn.Linear(4 * (encoder_width + 2) + 2, width)
        self.blocks = nn.ModuleList(GalerkinBlock(width, heads) for _ in range(blocks))
        self.head = nn.Sequential(nn.Linear(width, head_width), nn.GELU(), nn.Linear(head_width, 3))

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

        ``chunk_size``: None evaluates all points at once; an int evaluates exactly in chunks of that many
        points per image (memory bounded by the chunk); "auto" chunks (``models.query.AUTO_CHUNK_POINTS``) only when
        B*H*W > ``AUTO_FULL_POINTS``.
        """
        return self._grid(lr, size, coord, cell, chunk_size, "rgb")

    def features(self, lr: Tensor, size: tuple[int, int], *, chunk_size: ChunkSize = None) -> Tensor:
        """Operator features after the last Galerkin block, before the head: (B, width, H, W)."""
        return self._grid(lr, size, None, None, chunk_size, "features")

    def encode(self, lr: Tensor) -> Tensor:
        """LR image (B, 3, h, w) in [-1, 1] -> features (B, encoder_width, h, w)."""
        check_image(lr)
        return self.encoder(lr)

    def query(
        self, feat: Tensor, lr: Tensor, coord: Tensor, cell: Tensor, *, chunk_size: ChunkSize = None
    ) -> Tensor:
        """RGB (B, N, 3) in about [-1, 1] at ``coord`` (B, N, 2) (y, x) in [-1, 1] with ``cell`` (B, 2) or
        (2,) (HR pixel size in [-1, 1] units); the attention quadrature runs over exactly these N points."""
        if coord.dim() != 3 or coord.shape[-1] != 2 or coord.shape[0] != feat.shape[0]:
            raise ValueError(f"SRNO.query: coord must be (B={feat.shape[0]}, N, 2), got {tuple(coord.shape)}")
        return self._points(feat, lr, coord, batch_cell(cell, coord.shape[0], coord), chunk_size, "rgb")

    def reference(
        self, feat: Tensor, lr: Tensor, coord: Tensor, cell: Tensor, output: Output = "rgb"
    ) -> Tensor:
        """The operator as in the paper, all N points of ``coord`` (B, N, 2) at once (differentiable):
        lift, Galerkin blocks, head + bilinear skip. ``cell`` (B, 2); output (B, N, 3) or (B, N, width)."""
        grid = lr_features(feat, cell, self.lift)
        x = lift_direct(self.lift, grid, neighbours(grid, coord))  # (B, N, width)
        for block in self.blocks:
            x = block(x)  # x + MLP(x + q (k^T v) / N)
        return x if output == "features" else self.decode(x, lr, coord)

    def decode(self, x: Tensor, lr: Tensor, coord: Tensor) -> Tensor:
        """RGB (B, n, 3): the pointwise head of ``x`` (B, n, width) plus the bilinear LR at ``coord``."""
        skip = F.grid_sample(
            lr, coord.flip(-1).unsqueeze(1), mode="bilinear", padding_mode="border", align_corners=False
        )
        return self.head(x) + skip.squeeze(2).transpose(1, 2)

    def _points(self, feat, lr, coord, cell, chunk_size: ChunkSize, output: Output) -> Tensor:
        """Training (autograd, no chunking): the reference pass; otherwise the exact chunked evaluator."""
        chunk = resolve_chunk(chunk_size, *coord.shape[:2])
        if chunk is None and torch.is_grad_enabled():
            return self.reference(feat, lr, coord, cell, output)
        return evaluate(self, feat, lr, coord, cell, chunk=chunk, output=output)

    def _grid(self, lr, size, coord, cell, chunk_size: ChunkSize, output: Output) -> Tensor:
        def points(c: Tensor, k: Tensor) -> Tensor:
            return self._points(self.encode(lr), lr, c, k, chunk_size, output)

        return on_grid(lr, size, coord, cell, chunk_size, points)
