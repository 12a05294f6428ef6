"""Exact chunked evaluation of SRNO at many query points: memory bounded by the chunk, same numbers.

The attention couples all N query points only through the per-head ``k^T v`` sums. ``evaluate`` therefore
runs one accumulation pass per attention block over chunks of points, then a final pass producing the output
chunk by chunk: memory is bounded by the chunk size and the result equals the all-at-once evaluation
(``SRNO.reference``) up to float summation order. Each block folds its q projection, the attention and its
first MLP layer into one affine map once ``k^T v`` is known (``GalerkinBlock.fold``), so the final pass never
computes q. That refolding is exact algebra: ``(x + (x Wq^T + bq) M) W1^T + b1``.

Images are evaluated one at a time (they interact only within themselves), in cache-sized pieces of points
(``PIECE_POINTS``) whatever the chunk: on CPU large temporaries cost more in page faults than in arithmetic
(a 65536-point piece ran 4x slower per point than 2048-point pieces).

Lift (``lift=``): ``"direct"`` gathers the 4 features of a point and applies the lift (266 -> width);
``"table"`` precomputes, at LR resolution, the lift of every LR pixel's feature for each of the 4 shifts plus
the constant part (row = pixel * 4 + shift); since the 4 area weights sum to 1, a point's lift is then the
weighted sum of 4 rows plus its relative-coordinate term (worth it when the points outnumber the LR pixels).
``"auto"`` picks the table when it pays, and block 0's k/v projection and (once its ``k^T v`` is known) its
first MLP input the same way when the points outnumber the LR pixels 4 to 1 (scale >= 2), so block 0 costs
gathers instead of products. When activations are recomputed (an int chunk, one image), the tables are built
per *band*: the run of pieces whose points fall in a bounded range of LR rows (row-major grids touch few
rows per piece), so the tables' memory is bounded (``BAND_TABLE_BYTES``) and the cost stays linear in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .lift import LRFeatures, Neighbours, lift_direct, lr_features, neighbours

LiftMode = Literal["auto", "table", "direct"]
Output = Literal["rgb", "features"]
# Points per piece of one image: cache-sized on CPU; larger on accelerators, where launches cost more.
PIECE_POINTS = 2048
ACCELERATOR_PIECE_POINTS = 1 << 16
# A whole-image lift table is used ("auto") only below this size; block 0's tables below the second.
TABLE_MAX_BYTES = 1 << 30
BLOCK0_TABLE_MAX_BYTES = 1 << 28
# All tables of one band (lift, block 0's k/v and MLP input: 4 * width floats per shift and LR pixel).
BAND_TABLE_BYTES = 1 << 27


class GalerkinOperator(Protocol):
    """What the evaluator reads of SRNO (``models/srno.py``, which calls it): the lift, the Galerkin
    blocks, the pointwise decode and the reference pass. Structural, so this module does not import SRNO."""

    width: int
    lift: nn.Linear
    blocks: nn.ModuleList  # of GalerkinBlock

    def encode(self, lr: Tensor) -> Tensor: ...

    def decode(self, x: Tensor, lr: Tensor, coord: Tensor) -> Tensor: ...

    def reference(
        self, feat: Tensor, lr: Tensor, coord: Tensor, cell: Tensor, output: Output = "rgb"
    ) -> Tensor: ...


@dataclass(frozen=True)
class _Band:
    """Pieces ``first <= j < stop`` whose points use only the feature rows ``lo <= row < hi``."""

    lo: int
    hi: int
    first: int
    stop: int


def evaluate(
    model: GalerkinOperator,
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

    ``chunk`` None, or at least the image's N points, keeps every piece's activations between passes (no
    recomputation, memory ~ N * width floats); a smaller int recomputes them in each pass, in pieces of at most
    ``chunk`` points per image (memory bounded by the piece and the band tables, not by N)."""
    if lift not in ("auto", "table", "direct"):
        raise ValueError(f"evaluate: lift must be 'auto', 'table' or 'direct', got {lift!r}")
    b, n = coord.shape[:2]
    if b > 1:
        # Images are independent (k^T v is summed per image): one at a time keeps every table per image.
        one = dict(chunk=chunk, lift=lift, output=output)
        items = zip(feat.split(1), lr.split(1), coord.split(1), cell.split(1), strict=True)
        return torch.cat([evaluate(model, *item, **one) for item in items])
    store = chunk is None or chunk >= n  # the kept activations then fit the chunk's budget
    step = PIECE_POINTS if coord.device.type == "cpu" else ACCELERATOR_PIECE_POINTS
    pieces = coord.split(step if store else min(step, chunk), dim=1)
    blocks = model.blocks
    grid = lr_features(feat, cell, model.lift)
    evals = 1 if store else len(blocks) + 1
    if store or lift == "direct":
        bands = [_Band(0, grid.rows.shape[0], 0, len(pieces))]
    else:
        bands = _bands(grid, pieces, model.width)
    points: list[Neighbours | None] = [None] * len(pieces)
    kept: list[tuple[Tensor, int] | None] = [None] * len(pieces)  # store mode: (x, blocks applied)
    folded: list[tuple[Tensor, Tensor]] = []
    single = len(bands) == 1
    cached: list[_Lift | None] = [None]

    def lifter(band: _Band) -> _Lift:
        # One band: its tables live through every pass; several: rebuilt per band and pass (bounded memory).
        if single and cached[0] is not None:
            return cached[0]
        size = sum(pieces[j].shape[1] for j in range(band.first, band.stop))
        made = _Lift(model, grid, band, size, evals if single else 1, lift, folded[0] if folded else None)
        if single:
            cached[0] = made
        return made

    def nbrs(j: int) -> Neighbours:
        nb = points[j] if points[j] is not None else neighbours(grid, pieces[j])
        if store:
            points[j] = nb
        return nb

    for i, block in enumerate(blocks):
        params = block.kv_params()
        total = 0
        for band in bands:
            lf = lifter(band)
            for j in range(band.first, band.stop):
                if i == 0 and lf.kv0 is not None:
                    kv = lf.kv0_of(nbrs(j))
                    total = total + block.kv_reduce(kv, *params[1:])
                    continue
                x = _advance(model, lf, nbrs(j), folded, i, kept[j])
                if store:
                    kept[j] = (x, i)
                total = total + block.kv_sum(x, params)
        folded.append(block.fold(total / n))
        if i == 0 and cached[0] is not None:
            cached[0].fold_block0(folded[0])
    return _final_pass(model, bands, pieces, lifter, nbrs, folded, kept, points, lr, output)


def _final_pass(
    model, bands, pieces, lifter, nbrs, folded, kept, points, lr: Tensor, output: Output
) -> Tensor:
    """The last pass: every piece through all (folded) blocks, then the head (``rgb``) or not (``features``),
    written into one (1, N, C) result; a piece's kept activations and neighbours are freed as it is done."""
    n = sum(c.shape[1] for c in pieces)
    out = None
    start = 0
    for band in bands:
        lf = lifter(band)
        for j in range(band.first, band.stop):
            c = pieces[j]
            x = _advance(model, lf, nbrs(j), folded, len(model.blocks), kept[j])
            kept[j] = points[j] = None
            y = x if output == "features" else model.decode(x, lr, c)
            if out is None:
                out = y.new_empty(y.shape[0], n, y.shape[-1])
            out[:, start : start + c.shape[1]] = y
            start += c.shape[1]
    return out


def _bands(grid: LRFeatures, pieces: tuple[Tensor, ...], width: int) -> list[_Band]:
    """Runs of consecutive pieces (one image) whose LR rows fit the band's table budget."""
    h, w = grid.h, grid.w
    row_bytes = w * 4 * 4 * width * grid.rows.element_size()  # lift + k/v (2x) + MLP input, 4 shifts
    max_rows = max(1, BAND_TABLE_BYTES // row_bytes)
    lows = torch.stack([c[0, :, 0].min() for c in pieces]).tolist()
    highs = torch.stack([c[0, :, 0].max() for c in pieces]).tolist()
    bands: list[_Band] = []
    first, r0, r1 = 0, h, -1
    for j, (y0, y1) in enumerate(zip(lows, highs, strict=True)):
        # The rows nearest sampling can pick for y -/+ one LR pixel, with one row of margin each side.
        a = min(max(int((y0 - 1 / h + 1) * h / 2) - 1, 0), h - 1)
        z = min(max(int((y1 + 1 / h + 1) * h / 2) + 1, 0), h - 1)
        if j > first and max(r1, z) - min(r0, a) + 1 > max_rows:
            bands.append(_Band(r0 * w, (r1 + 1) * w, first, j))
            first, r0, r1 = j, h, -1
        r0, r1 = min(r0, a), max(r1, z)
    bands.append(_Band(r0 * w, (r1 + 1) * w, first, len(pieces)))
    return bands


def _advance(
    model: GalerkinOperator,
    lifter: _Lift,
    nb: Neighbours,
    folded,
    level: int,
    state: tuple[Tensor, int] | None,
) -> Tensor:
    """Activations after ``level`` blocks, from ``state`` = (x, blocks applied) or from scratch."""
    if state is not None:
        x, done = state
    elif level >= 1 and lifter.pre0 is not None:
        x, done = model.blocks[0].finish(lifter.points(nb), lifter.pre0_of(nb)), 1
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


def _plus_rel(gathered: Tensor, nb: Neighbours, w_rel: Tensor) -> Tensor:
    """``gathered`` (B, n, D) plus the relative-coordinate term ``nb.rel @ w_rel`` (w_rel (8, D) or
    (B, 8, D)), added by the product itself (one pass over the result, not two)."""
    w = w_rel.expand(gathered.shape[0], *w_rel.shape[-2:])
    return torch.baddbmm(gathered, nb.rel, w)


class _Lift:
    """The lift of query points in one band, direct or from LR-resolution tables (module docstring).

    ``n_points``: the band's points (all images); ``uses``: the passes one set of tables serves. ``folded0``:
    block 0's folded map when known (later passes): its MLP-input table is built at once."""

    def __init__(
        self,
        model: GalerkinOperator,
        grid: LRFeatures,
        band: _Band,
        n_points: int,
        uses: int,
        mode: LiftMode,
        folded0: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        self.grid, self.linear, self.lo = grid, model.lift, band.lo
        self.table = self.w_rel = self.kv0 = self.w_rel_kv0 = self.pre0 = self.w_rel_pre0 = None
        self.block0 = False
        width, pixels = model.width, band.hi - band.lo
        table_bytes = pixels * 4 * width * grid.rows.element_size()
        whole = pixels == grid.rows.shape[0]
        if mode == "direct" or (
            mode == "auto"
            and not (n_points * uses > pixels and (table_bytes <= TABLE_MAX_BYTES or not whole))
        ):
            return
        c, wgt = grid.rows.shape[1], self.linear.weight
        w_feat = wgt[:, 8 : 8 + 4 * c].reshape(width, 4, c).transpose(0, 1).reshape(4 * width, c)
        const = F.linear(grid.rel_cell, wgt[:, 8 + 4 * c :], self.linear.bias).unsqueeze(1)
        rows = grid.rows[band.lo : band.hi]
        self.table = (F.linear(rows, w_feat).view(1, -1, width) + const).view(-1, width)
        self.w_rel = wgt[:, :8].t()
        # Block 0's tables cost 4 * width products per LR pixel and shift against width per point: they pay
        # when the points outnumber the pixels 4 to 1 (per pass: each pass that uses them has its own).
        fits = 4 * table_bytes <= BLOCK0_TABLE_MAX_BYTES or not whole
        self.block0 = mode == "auto" and fits and n_points >= 4 * pixels
        if not self.block0:
            return
        if folded0 is not None:
            self.fold_block0(folded0)
            return
        w_kv, _, _ = model.blocks[0].kv_params()
        self.kv0 = F.linear(self.table, w_kv[:, :-1], w_kv[:, -1])  # block 0's centred k/v projection
        self.w_rel_kv0 = self.w_rel @ w_kv[:, :-1].t()

    def _local(self, nb: Neighbours) -> Neighbours:
        # Table rows are numbered from the band's first pixel; a point outside the band fails loudly
        # (embedding_bag checks the range), it is never read from a wrong row.
        return nb._replace(rows=nb.rows - self.lo) if self.lo else nb

    def points(self, nb: Neighbours) -> Tensor:
        """Lifted features (B, n, width) of the points ``nb``."""
        if self.table is None:
            return lift_direct(self.linear, self.grid, nb)
        return _plus_rel(gather(self.table, self._local(nb)), nb, self.w_rel)

    def kv0_of(self, nb: Neighbours) -> Tensor:
        """Block 0's centred k/v projection (B, n, 2 * width) of the points ``nb``, from the table."""
        return _plus_rel(gather(self.kv0, self._local(nb)), nb, self.w_rel_kv0)

    def pre0_of(self, nb: Neighbours) -> Tensor:
        """Block 0's first MLP input (B, n, width) of the points ``nb``, from the table."""
        return _plus_rel(gather(self.pre0, self._local(nb)), nb, self.w_rel_pre0)

    def fold_block0(self, folded: tuple[Tensor, Tensor]) -> None:
        """Tabulate block 0's first MLP input once its folded map ``x @ a + c`` is known."""
        if not self.block0:
            return
        a, c = folded
        self.kv0 = self.w_rel_kv0 = None
        self.pre0 = torch.baddbmm(c, self.table.view(a.shape[0], -1, a.shape[1]), a).flatten(0, 1)
        self.w_rel_pre0 = torch.matmul(self.w_rel, a)
