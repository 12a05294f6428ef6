"""The neural-operator interface: what NeurOp-Diff needs of its frozen prior, met by SRNO (``models/srno.py``)
and LIIF (``models/liif.py``) alike.

An operator maps an LR image (B, 3, h, w) in [-1, 1] to SR values at any query points (any real scale HR/LR):
``encode`` once per image, ``query`` at points ``coord`` (B, N, 2) (y, x) in [-1, 1] with their HR pixel size
``cell``, or the whole pixel-centre grid of a size by calling it. Each decodes its own way (SRNO: Galerkin
attention over the queried points, a pointwise head plus the bilinear LR; LIIF: an MLP per neighbour, blended
by area), so ``decode`` is not part of the shared interface.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

from torch import Tensor, nn

from .query import ChunkSize

__all__ = ["Operator"]


@runtime_checkable
class Operator(Protocol):
    """A continuous-scale SR operator (structural: SRNO and LIIF need not inherit it)."""

    #: ``srno`` or ``liif``: the name checkpoints and OperatorModule record.
    arch: ClassVar[str]
    #: The EDSR-baseline encoder (``encoder.n_feats`` channels at LR resolution).
    encoder: nn.Module

    def encode(self, lr: Tensor) -> Tensor:
        """LR (B, 3, h, w) in [-1, 1] -> features (B, C, h, w)."""
        ...

    def query(
        self, feat: Tensor, lr: Tensor, coord: Tensor, cell: Tensor, *, chunk_size: ChunkSize = None
    ) -> Tensor:
        """RGB (B, N, 3) in about [-1, 1] at ``coord`` (B, N, 2) from ``feat = encode(lr)``."""
        ...

    def __call__(
        self,
        lr: Tensor,
        size: tuple[int, int] | None = None,
        *,
        coord: Tensor | None = None,
        cell: Tensor | None = None,
        chunk_size: ChunkSize = None,
    ) -> Tensor:
        """SR image (B, 3, H, W) in about [-1, 1] on the pixel-centre grid of ``size``."""
        ...
