"""SRNO (Wei & Zhang, CVPR 2023): a neural operator for continuous-scale super-resolution.

Structure (docs: ../shared/reference/method.md, section 2): EDSR-baseline features at LR resolution; at every
query point, the 4 nearest LR features (one per diagonal shift) weighted by the diagonally opposite areas,
their relative coordinates and the relative cell are lifted to ``width`` channels; Galerkin-type attention
blocks (per-head LayerNorm on k and v, ``q (k^T v) / N``, no softmax); a pointwise head plus the bilinear
upsampling of the LR input.

Points travel as ``(B, N, C)`` tensors (channels last), so every 1x1 conv of the reference is a ``Linear``;
on CPU that is about twice as fast as ``conv2d`` with 1x1 kernels (measured: 96 vs 46 GFLOP/s on 2 cores).

Exact chunked evaluation: the attention couples all N query points only through the per-head ``k^T v`` sums.
``_evaluate`` therefore runs one accumulation pass per attention block over chunks of points, then a final
pass producing the output chunk by chunk: memory is bounded by the chunk size and the result equals the
all-at-once evaluation (up to float summation order). Each block folds its q projection, the attention and
its first MLP layer into one affine map once ``k^T v`` is known (``GalerkinBlock.fold``), so the final pass
never computes q. That refolding is exact algebra: ``(x + (x Wq^T + bq) M) W1^T + b1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neurop_diff.data.degradation import make_coord, pixel_centres

from .encoder import EDSREncoder
from .galerkin import GalerkinBlock

# (dy, dx) of the four feature queries, in the reference's loop order (y shift outer).
_SHIFTS = ((-1, -1), (-1, 1), (1, -1), (1, 1))
_EPS_SHIFT = 1e-6
# chunk_size="auto": all points at once up to this many (B * H * W), else chunks of this many per batch.
AUTO_FULL_POINTS = 2**18
AUTO_CHUNK_POINTS = 2**13
# Points per piece (all batch items together) when evaluating without a chunk size: cache-sized.
_PIECE_POINTS = 2048
# The LR-resolution lift table (see _LiftContext) is used only below this size.
_TABLE_MAX_BYTES = 1 << 30
_BLOCK0_TABLE_MAX_BYTES = 1 << 28

ChunkSize = int | Literal["auto"] | None


@dataclass
class _LiftContext:
    """Per-image constants of the lift. ``direct``: the raw LR features (gather the 4 features of a point,
    concatenate the 266 channels, apply the lift). ``table`` (many more query points than LR pixels): the lift
    of every LR pixel's feature for each of the 4 shifts, plus the constant part, precomputed at LR resolution
    (``table``, row = pixel * 4 + shift); since the 4 area weights sum to 1, a point's lift is then the
    weighted sum of 4 rows plus its relative-coordinate term. Any affine map of the lift is tabulated the same
    way: block 0's k/v projection (``kv0``) and, once its ``k^T v`` is known, its first MLP input (``pre0``),
    so block 0 costs gathers instead of products (when the tables fit ``_BLOCK0_TABLE_MAX_BYTES``)."""

    h: int
    w: int
    index_map: Tensor  # (B, 1, h, w) float linear pixel index, sampled with nearest like the reference
    ys: Tensor
    xs: Tensor
    offsets: Tensor  # (B, 1) start of each batch item in the flattened rows
    rel_cell: Tensor  # (B, 2)
    feat_rows: Tensor | None = None  # direct: (B*h*w, C)
    table: Tensor | None = None  # (B*h*w*4, width)
    w_rel: Tensor | None = None  # (8, width): the lift's relative-coordinate rows
    kv0: Tensor | None = None  # (B*h*w*4, 2*width) block 0's centred k/v projection of the table
    w_rel_kv0: Tensor | None = None  # (8, 2*width)
    pre0: Tensor | None = None  # (B*h*w*4, width) after block 0's fold
    w_rel_pre0: Tensor | None = None  # (B, 8, width)


class _Points(NamedTuple):
    """The 4 neighbours of n query points: LR pixel rows (B*n, 4), area weights (B*n, 4), rel coords (B, n, 8)."""

    rows: Tensor
    weights: Tensor
    rel: Tensor


class SRNO(nn.Module):
    """Super-Resolution Neural Operator; images in [-1, 1], scale = HR/LR any real (also < 1).

    Args:
        encoder_blocks, encoder_width: EDSR-baseline depth and channels (16, 64).
        width: operator channels (256); blocks: Galerkin blocks (2); heads: attention heads (16).
        head_width: hidden channels of the output head (256 in the reference for any ``width``).

    Class attribute ``lift_mode`` ("auto" | "table" | "direct") picks the lift implementation; both give the
    same numbers, "auto" picks the table when the query points outnumber the LR pixels.
    """

    lift_mode: Literal["auto", "table", "direct"] = "auto"

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

    # ----------------------------------------------------------------------------------------- public API
    def encode(self, lr: Tensor) -> Tensor:
        """LR image (B, 3, h, w) in [-1, 1] -> features (B, encoder_width, h, w)."""
        _check_image(lr)
        return self.encoder(lr)

    def query(self, feat: Tensor, lr: Tensor, coord: Tensor, cell: Tensor) -> Tensor:
        """RGB in about [-1, 1] at ``coord`` (B, N, 2) (y, x) in [-1, 1] with ``cell`` (B, 2) or (2,)
        (HR pixel size in [-1, 1] units); the attention quadrature runs over exactly these N points."""
        if coord.dim() != 3 or coord.shape[-1] != 2 or coord.shape[0] != feat.shape[0]:
            raise ValueError(f"SRNO.query: coord must be (B={feat.shape[0]}, N, 2), got {tuple(coord.shape)}")
        return self._evaluate(feat, lr, coord, _batch_cell(cell, coord.shape[0], coord), None, "rgb")

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
        points per image (memory bounded by the chunk); "auto" chunks (``AUTO_CHUNK_POINTS``) only when
        B*H*W > ``AUTO_FULL_POINTS``.
        """
        out = self._grid_eval(lr, size, coord, cell, chunk_size, "rgb")
        return out.permute(0, 3, 1, 2).contiguous()

    def features(self, lr: Tensor, size: tuple[int, int], *, chunk_size: ChunkSize = None) -> Tensor:
        """Operator features after the last Galerkin block, before the head: (B, width, H, W)."""
        out = self._grid_eval(lr, size, None, None, chunk_size, "features")
        return out.permute(0, 3, 1, 2).contiguous()

    # ------------------------------------------------------------------------------------------ internals
    def _grid_eval(self, lr, size, coord, cell, chunk_size, output) -> Tensor:
        _check_image(lr)
        b = lr.shape[0]
        if coord is None:
            if size is None:
                raise ValueError("SRNO: give either size=(H, W) or coord=(B, H, W, 2)")
            hh, ww = _check_size(size)
            coord = make_coord((hh, ww), lr.device, lr.dtype).expand(b, hh, ww, 2)
        else:
            if coord.dim() == 3:
                coord = coord.unsqueeze(0).expand(b, *coord.shape)
            if coord.dim() != 4 or coord.shape[-1] != 2 or coord.shape[0] != b:
                raise ValueError(
                    f"SRNO: coord must be (B={b}, H, W, 2) or (H, W, 2), got {tuple(coord.shape)}"
                )
            hh, ww = coord.shape[1:3]
            if size is not None and tuple(size) != (hh, ww):
                raise ValueError(f"SRNO: size {tuple(size)} does not match coord grid {(hh, ww)}")
        if cell is None:
            cell = torch.tensor([2.0 / hh, 2.0 / ww], device=lr.device, dtype=lr.dtype)
        cell = _batch_cell(cell, b, coord)
        chunk = _resolve_chunk(chunk_size, b, hh * ww)
        feat = self.encode(lr)
        out = self._evaluate(feat, lr, coord.reshape(b, hh * ww, 2), cell, chunk, output)
        return out.view(b, hh, ww, -1)

    def _evaluate(self, feat, lr, coord, cell, chunk, output) -> Tensor:
        """Output (B, N, C) at ``coord`` (B, N, 2). With autograd and ``chunk`` None: one differentiable pass.
        Otherwise points go in pieces; per block, a pass accumulates its ``k^T v`` over all pieces, then the
        block is applied. ``chunk`` None keeps every piece's activations (no recomputation, cache-sized pieces:
        the fastest exact evaluation, memory ~ N * width floats); an int recomputes them in each pass (memory
        bounded by the chunk)."""
        n = coord.shape[1]
        store = chunk is None
        if store and torch.is_grad_enabled():
            ctx = self._lift_context(feat, cell, n, tables=False)
            x = self._lift_points(ctx, self._neighbours(ctx, coord))
            for block in self.blocks:
                x = block(x)
            return self._finish(x, lr, coord, output)
        piece = max(1, _PIECE_POINTS // coord.shape[0]) if store else chunk
        chunks = coord.split(piece, dim=1)
        ctx = self._lift_context(feat, cell, n * (1 if store else len(self.blocks) + 1), tables=True)
        points: list[_Points | None] = [None] * len(chunks)
        kept: list[tuple[Tensor, int] | None] = [None] * len(chunks)  # store mode: (x, blocks applied)
        folded: list[tuple[Tensor, Tensor]] = []

        def neighbours(j: int) -> _Points:
            nb = points[j] if points[j] is not None else self._neighbours(ctx, chunks[j])
            if store:
                points[j] = nb
            return nb

        for i, block in enumerate(self.blocks):
            params = block.kv_params()
            total = 0
            for j in range(len(chunks)):
                if i == 0 and ctx.kv0 is not None:
                    nb = neighbours(j)
                    kv = self._gather(ctx.kv0, nb) + torch.matmul(nb.rel, ctx.w_rel_kv0)
                    total = total + block.kv_reduce(kv.transpose(1, 2).contiguous(), *params[1:])
                    continue
                x = self._advance(ctx, neighbours(j), folded, i, kept[j])
                if store:
                    kept[j] = (x, i)
                total = total + block.kv_sum(x, params)
            folded.append(block.fold(total / n))
            if i == 0 and ctx.kv0 is not None:
                a, c = folded[0]
                ctx.pre0 = torch.baddbmm(c, ctx.table.view(a.shape[0], -1, self.width), a).flatten(0, 1)
                ctx.w_rel_pre0 = torch.matmul(ctx.w_rel, a)
        out = None
        start = 0
        for j, c in enumerate(chunks):
            x = self._advance(ctx, neighbours(j), folded, len(self.blocks), kept[j])
            kept[j] = points[j] = None
            y = self._finish(x, lr, c, output)
            if out is None:
                out = y.new_empty(y.shape[0], n, y.shape[-1])
            out[:, start : start + c.shape[1]] = y
            start += c.shape[1]
        return out

    def _advance(self, ctx, nb: _Points, folded, level: int, state: tuple[Tensor, int] | None) -> Tensor:
        """Activations after ``level`` blocks, from ``state`` = (x, blocks applied) or from scratch."""
        if state is not None:
            x, done = state
        elif level >= 1 and ctx.pre0 is not None:
            pre = self._gather(ctx.pre0, nb) + torch.bmm(nb.rel, ctx.w_rel_pre0)
            x, done = self.blocks[0].finish(self._lift_points(ctx, nb), pre), 1
        else:
            x, done = self._lift_points(ctx, nb), 0
        for i in range(done, level):
            x = self.blocks[i].apply_folded(x, folded[i])
        return x

    def _finish(self, x: Tensor, lr: Tensor, coord: Tensor, output: str) -> Tensor:
        if output == "features":
            return x
        skip = F.grid_sample(
            lr, coord.flip(-1).unsqueeze(1), mode="bilinear", padding_mode="border", align_corners=False
        )
        return self.head(x) + skip.squeeze(2).transpose(1, 2)

    def _lift_context(self, feat: Tensor, cell: Tensor, n_evals: int, tables: bool) -> _LiftContext:
        b, c, h, w = feat.shape
        if 4 * (c + 2) + 2 != self.lift.in_features:
            raise ValueError(
                f"SRNO: feat has {c} channels, the lift expects {(self.lift.in_features - 2) // 4 - 2}"
            )
        if h * w >= 2**24:
            raise ValueError(f"SRNO: LR feature map {h}x{w} too large (index map limited to 2**24 pixels)")
        dev = feat.device
        ctx = _LiftContext(
            h=h,
            w=w,
            index_map=torch.arange(h * w, device=dev, dtype=torch.float32)
            .view(1, 1, h, w)
            .expand(b, 1, h, w),
            ys=pixel_centres(h, dev, feat.dtype),
            xs=pixel_centres(w, dev, feat.dtype),
            offsets=torch.arange(b, device=dev).unsqueeze(1) * (h * w),
            rel_cell=cell * cell.new_tensor([h, w]),
        )
        rows = feat.permute(0, 2, 3, 1).reshape(b * h * w, c)
        table_bytes = b * h * w * 4 * self.width * feat.element_size()
        mode = self.lift_mode
        if mode == "auto":
            mode = "table" if n_evals > h * w and table_bytes <= _TABLE_MAX_BYTES else "direct"
        if mode == "direct":
            ctx.feat_rows = rows
            return ctx
        width, wgt = self.width, self.lift.weight
        w_feat = wgt[:, 8 : 8 + 4 * c].reshape(width, 4, c).transpose(0, 1).reshape(4 * width, c)
        const = F.linear(ctx.rel_cell, wgt[:, 8 + 4 * c :], self.lift.bias).unsqueeze(1)
        ctx.table = (F.linear(rows, w_feat).view(b, -1, width) + const).view(-1, width)
        ctx.w_rel = wgt[:, :8].t()
        if tables and self.lift_mode == "auto" and 4 * table_bytes <= _BLOCK0_TABLE_MAX_BYTES:
            w_kv, _, _ = self.blocks[0].kv_params()
            ctx.kv0 = F.linear(ctx.table, w_kv[:, :-1], w_kv[:, -1])
            ctx.w_rel_kv0 = ctx.w_rel @ w_kv[:, :-1].t()
        return ctx

    def _neighbours(self, ctx: _LiftContext, coord: Tensor) -> _Points:
        """The 4 LR neighbours of ``coord`` (B, n, 2), their area weights and relative coordinates."""
        b, n, _ = coord.shape
        h, w = ctx.h, ctx.w
        rels, rows, areas = [], [], []
        for dy, dx in _SHIFTS:
            shifted = coord + coord.new_tensor([dy / h + _EPS_SHIFT, dx / w + _EPS_SHIFT])
            shifted = shifted.clamp(-1 + 1e-6, 1 - 1e-6)
            # Nearest sampling of the index map selects exactly the pixel the reference's grid_sample does.
            idx = F.grid_sample(
                ctx.index_map, shifted.flip(-1).unsqueeze(1).float(), mode="nearest", align_corners=False
            )
            idx = idx.view(-1).long()
            rel_y = (coord[..., 0] - ctx.ys.index_select(0, idx // w).view(b, n)) * h
            rel_x = (coord[..., 1] - ctx.xs.index_select(0, idx % w).view(b, n)) * w
            rels += [rel_y, rel_x]
            rows.append((idx.view(b, n) + ctx.offsets).view(-1))
            areas.append((rel_y * rel_x).abs() + 1e-9)
        total = areas[0] + areas[1] + areas[2] + areas[3]
        weights = torch.stack([areas[3 - k] / total for k in range(4)], -1)  # the diagonally opposite area
        return _Points(torch.stack(rows, 1), weights.view(-1, 4), torch.stack(rels, dim=-1))

    @staticmethod
    def _gather(table: Tensor, nb: _Points) -> Tensor:
        """sum_k weight_k * table[row_k * 4 + k] -> (B, n, D); embedding_bag fuses the gathers and the sum."""
        bag = nb.rows * 4 + torch.arange(4, device=nb.rows.device)
        # embedding_bag wants the weights in the table's dtype (they differ under bf16/fp16 autocast).
        out = F.embedding_bag(bag, table, per_sample_weights=nb.weights.to(table.dtype), mode="sum")
        return out.view(*nb.rel.shape[:2], -1)

    def _lift_points(self, ctx: _LiftContext, nb: _Points) -> Tensor:
        """Lifted features (B, n, width) of the points ``nb``."""
        if ctx.table is not None:
            return self._gather(ctx.table, nb) + torch.matmul(nb.rel, ctx.w_rel)
        b, n, _ = nb.rel.shape
        feats = [
            ctx.feat_rows.index_select(0, nb.rows[:, k]).view(b, n, -1) * nb.weights[:, k].view(b, n, 1)
            for k in range(4)
        ]
        grid = torch.cat([nb.rel, *feats, ctx.rel_cell.unsqueeze(1).expand(b, n, 2)], dim=-1)
        return self.lift(grid)


def _check_image(lr: Tensor) -> None:
    if lr.dim() != 4 or lr.shape[1] != 3:
        raise ValueError(f"SRNO: expected an LR image (B, 3, h, w) in [-1, 1], got shape {tuple(lr.shape)}")


def _check_size(size) -> tuple[int, int]:
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"SRNO: size must be two positive ints (H, W), got {size!r}")
    return int(size[0]), int(size[1])


def _batch_cell(cell: Tensor, b: int, like: Tensor) -> Tensor:
    cell = torch.as_tensor(cell, device=like.device, dtype=like.dtype)
    if cell.shape == (2,):
        cell = cell.expand(b, 2)
    if cell.shape != (b, 2):
        raise ValueError(f"SRNO: cell must be (2,) or (B={b}, 2), got {tuple(cell.shape)}")
    return cell


def _resolve_chunk(chunk_size: ChunkSize, b: int, n: int) -> int | None:
    if chunk_size == "auto":
        return None if b * n <= AUTO_FULL_POINTS else max(1, AUTO_CHUNK_POINTS // b)
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"SRNO: chunk_size must be a positive int, 'auto' or None, got {chunk_size!r}")
    return chunk_size
