"""Exact chunked evaluation of SRNO at many query points: memory bounded by the chunk, same numbers.

The attention couples all N query points only through the per-head ``k^T v`` sums. ``evaluate`` therefore
runs one accumulation pass per attention block over chunks of points, then a final pass producing the output
chunk by chunk: memory is bounded by the chunk size and the result equals the all-at-once evaluation
(``SRNO.reference``) up to float summation order. Each block folds its q projection, the attention and its
first MLP layer into one affine map once ``k^T v`` is known (``GalerkinBlock.fold``), so the final pass never
computes q. That refolding is exact algebra: ``(x + (x Wq^T + bq) M) W1^T + b1``.

Lift (``lift=``): ``"direct"`` gathers the 4 features of a point and applies the lift (266 -> width);
``"table"`` precomputes, at LR resolution, the lift of every LR pixel's feature for each of the 4 shifts plus
the constant part (row = pixel * 4 + shift); since the 4 area weights sum to 1, a point's lift is then the
weighted sum of 4 rows plus its relative-coordinate term (worth it when the points outnumber the LR pixels).
``"auto"`` picks the table when it pays and fits, and then tabulates block 0's k/v projection and, once its
``k^T v`` is known, its first MLP input the same way, so block 0 costs gathers instead of products.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .lift import LRFeatures, Neighbours, lift_direct, lr_features, neighbours

if TYPE_CHECKING:
    from .operator import SRNO

LiftMode = Literal["auto", "table", "direct"]
Output = Literal["rgb", "features"]
# Points per piece (all batch items together) when evaluating without a chunk size: cache-sized.
PIECE_POINTS = 2048
# The LR-resolution lift table is used ("auto") only below this size; block 0's tables below the second.
TABLE_MAX_BYTES = 1 << 30
BLOCK0_TABLE_MAX_BYTES = 1 << 28


def evaluate(
    model: SRNO,
    feat: Tensor,
    lr: Tensor,
    coord: Tensor,
    cell: Tensor,
    *,
    chunk: int | None = None,
    lift: LiftMode = "auto",
    output: Output = "rgb",
) -> Tensor:
    """``model``'s output (B, N, 3) ("rgb") or last-block features (B, N, width) ("features") at ``coord``
    (B, N, 2) from ``feat = model.encode(lr)`` and ``cell`` (B, 2), equal to ``model.reference``.

    ``chunk`` None keeps every cache-sized piece's activations between passes (no recomputation: the fastest
    exact evaluation, memory ~ N * width floats); an int recomputes them in each pass (memory bounded by the
    chunk, points per image)."""
    if lift not in ("auto", "table", "direct"):
        raise ValueError(f"evaluate: lift must be 'auto', 'table' or 'direct', got {lift!r}")
    n = coord.shape[1]
    store = chunk is None
    chunks = coord.split(max(1, PIECE_POINTS // coord.shape[0]) if store else chunk, dim=1)
    blocks = model.blocks
    lifter = _Lift(model, lr_features(feat, cell, model.lift), n * (1 if store else len(blocks) + 1), lift)
    points: list[Neighbours | None] = [None] * len(chunks)
    kept: list[tuple[Tensor, int] | None] = [None] * len(chunks)  # store mode: (x, blocks applied)
    folded: list[tuple[Tensor, Tensor]] = []

    def nbrs(j: int) -> Neighbours:
        nb = points[j] if points[j] is not None else neighbours(lifter.grid, chunks[j])
        if store:
            points[j] = nb
        return nb

    for i, block in enumerate(blocks):
        params = block.kv_params()
        total = 0
        for j in range(len(chunks)):
            if i == 0 and lifter.kv0 is not None:
                kv = lifter.kv0_of(nbrs(j))
                total = total + block.kv_reduce(kv.transpose(1, 2).contiguous(), *params[1:])
                continue
            x = _advance(model, lifter, nbrs(j), folded, i, kept[j])
            if store:
                kept[j] = (x, i)
            total = total + block.kv_sum(x, params)
        folded.append(block.fold(total / n))
        if i == 0:
            lifter.fold_block0(folded[0])
    out = None
    start = 0
    for j, c in enumerate(chunks):
        x = _advance(model, lifter, nbrs(j), folded, len(blocks), kept[j])
        kept[j] = points[j] = None
        y = x if output == "features" else model.decode(x, lr, c)
        if out is None:
            out = y.new_empty(y.shape[0], n, y.shape[-1])
        out[:, start : start + c.shape[1]] = y
        start += c.shape[1]
    return out


def _advance(
    model: SRNO, lifter: _Lift, nb: Neighbours, folded, level: int, state: tuple[Tensor, int] | None
) -> Tensor:
    """Activations after ``level`` blocks, from ``state`` = (x, blocks applied) or from scratch."""
    if state is not None:
        x, done = state
    elif level >= 1 and lifter.pre0 is not None:
        pre = gather(lifter.pre0, nb) + torch.bmm(nb.rel, lifter.w_rel_pre0)
        x, done = model.blocks[0].finish(lifter.points(nb), pre), 1
    else:
        x, done = lifter.points(nb), 0
    for i in range(done, level):
        x = model.blocks[i].apply_folded(x, folded[i])
    return x


def gather(table: Tensor, nb: Neighbours) -> Tensor:
    """sum_k weight_k * table[row_k * 4 + k] -> (B, n, D); embedding_bag fuses the gathers and the sum."""
    bag = nb.rows * 4 + torch.arange(4, device=nb.rows.device)
    # embedding_bag wants the weights in the table's dtype (they differ under bf16/fp16 autocast).
    out = F.embedding_bag(bag, table, per_sample_weights=nb.weights.to(table.dtype), mode="sum")
    return out.view(*nb.rel.shape[:2], -1)


class _Lift:
    """The lift of query points for one evaluation, direct or from LR-resolution tables (module docstring)."""

    def __init__(self, model: SRNO, grid: LRFeatures, n_evals: int, mode: LiftMode) -> None:
        self.grid, self.linear = grid, model.lift
        self.table = self.w_rel = self.kv0 = self.w_rel_kv0 = self.pre0 = self.w_rel_pre0 = None
        b, width = grid.offsets.shape[0], model.width
        table_bytes = grid.rows.shape[0] * 4 * width * grid.rows.element_size()
        if mode == "direct" or (
            mode == "auto" and not (n_evals > grid.h * grid.w and table_bytes <= TABLE_MAX_BYTES)
        ):
            return
        c, wgt = grid.rows.shape[1], self.linear.weight
        w_feat = wgt[:, 8 : 8 + 4 * c].reshape(width, 4, c).transpose(0, 1).reshape(4 * width, c)
        const = F.linear(grid.rel_cell, wgt[:, 8 + 4 * c :], self.linear.bias).unsqueeze(1)
        self.table = (F.linear(grid.rows, w_feat).view(b, -1, width) + const).view(-1, width)
        self.w_rel = wgt[:, :8].t()
        if mode == "auto" and 4 * table_bytes <= BLOCK0_TABLE_MAX_BYTES:
            w_kv, _, _ = model.blocks[0].kv_params()
            self.kv0 = F.linear(self.table, w_kv[:, :-1], w_kv[:, -1])  # block 0's centred k/v projection
            self.w_rel_kv0 = self.w_rel @ w_kv[:, :-1].t()

    def points(self, nb: Neighbours) -> Tensor:
        """Lifted features (B, n, width) of the points ``nb``."""
        if self.table is None:
            return lift_direct(self.linear, self.grid, nb)
        return gather(self.table, nb) + torch.matmul(nb.rel, self.w_rel)

    def kv0_of(self, nb: Neighbours) -> Tensor:
        """Block 0's centred k/v projection (B, n, 2 * width) of the points ``nb``, from the table."""
        return gather(self.kv0, nb) + torch.matmul(nb.rel, self.w_rel_kv0)

    def fold_block0(self, folded: tuple[Tensor, Tensor]) -> None:
        """Tabulate block 0's first MLP input once its folded map ``x @ a + c`` is known."""
        if self.kv0 is None:
            return
        a, c = folded
        self.pre0 = torch.baddbmm(c, self.table.view(a.shape[0], -1, a.shape[1]), a).flatten(0, 1)
        self.w_rel_pre0 = torch.matmul(self.w_rel, a)
