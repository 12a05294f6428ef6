"""Galerkin-type attention block of SRNO (Cao 2021; Wei & Zhang 2023) on points as (B, N, C) tensors.

Per head, k and v get a LayerNorm over the head's channels (unbiased std, eps added to the std, per-head
affine), and attention is ``q (k^T v) / N`` without softmax. Because the points interact only through the
``k^T v`` sums, a block can accumulate them over chunks of points (``kv_sum``) and then apply them chunk by
chunk (``fold`` / ``apply_folded``): exact and memory-bounded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class HeadLayerNorm(nn.Module):
    """Per-head LayerNorm over the last axis of ``(..., heads, head_dim)`` as in the reference Galerkin code:
    unbiased std, ``eps`` added to the std (not the variance), affine weights of shape ``(heads, 1, head_dim)``."""

    def __init__(self, heads: int, head_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(heads, 1, head_dim))
        self.bias = nn.Parameter(torch.zeros(heads, 1, head_dim))

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return (x - mean) / (std + self.eps) * self.weight.squeeze(1) + self.bias.squeeze(1)


class GalerkinBlock(nn.Module):
    """Galerkin-type attention block: ``out = x + W2 GELU(W1 (x + q (k^T v) / N))``.

    ``qkv`` output channels are grouped per head as ``[q | k | v]`` (``3 * head_dim`` each), the layout of
    the authors' weights; the attention output is reassembled head-major. The block's output adds ``x``,
    not the attention residual (reference behaviour, kept for weight compatibility).
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if heads < 1 or width % heads or width // heads < 2:
            raise ValueError(f"GalerkinBlock: width {width} must split into {heads} heads of >= 2 channels")
        self.heads, self.head_dim = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.k_norm = HeadLayerNorm(heads, self.head_dim)
        self.v_norm = HeadLayerNorm(heads, self.head_dim)
        self.proj1 = nn.Linear(width, width)
        self.proj2 = nn.Linear(width, width)
        rows = torch.arange(3 * width).view(heads, 3, self.head_dim)
        self.register_buffer("q_rows", rows[:, 0].reshape(-1), persistent=False)
        self.register_buffer("kv_rows", rows[:, 1:].reshape(-1), persistent=False)

    def kv_params(self) -> tuple[Tensor, Tensor, Tensor]:
        """k/v projection with each head's mean folded in (centring is linear) and the bias as a last column,
        (2 * width, width + 1) in the order (head, k|v, channel); the LayerNorms' weights and biases as
        (heads, 2, head_dim) each. Computed once per evaluation, reused across chunks."""
        hd = self.head_dim
        w = torch.cat([self.qkv.weight, self.qkv.bias.unsqueeze(1)], 1)[self.kv_rows].view(
            2 * self.heads, hd, -1
        )
        w = (w - w.mean(1, keepdim=True)).flatten(0, 1)
        gamma = torch.stack([self.k_norm.weight, self.v_norm.weight], 1).view(self.heads, 2, hd)
        beta = torch.stack([self.k_norm.bias, self.v_norm.bias], 1).view(self.heads, 2, hd)
        return w, gamma, beta

    def kv_sum(self, x: Tensor, params: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
        """Per-head ``sum_n k_n^T v_n`` (k, v after their LayerNorms) over the points of ``x`` (B, N, width)
        -> (B, heads, hd, hd). ``params``: ``kv_params()``, to reuse across chunks.

        With centred projections kc, vc, per-point scales a = 1 / (std_k + eps), b = 1 / (std_v + eps) and the
        norms' affine (g, beta): ``sum (g_k a kc + beta_k)(g_v b vc + beta_v)^T`` expands into
        ``g_k g_v^T * sum(a b kc vc^T) + (g_k sum(a kc)) beta_v^T + beta_k (g_v sum(b vc))^T + n beta_k beta_v^T``,
        so the normalised k and v are never materialised.
        """
        w, gamma, beta = params if params is not None else self.kv_params()
        return self.kv_reduce(F.linear(x, w[:, :-1], w[:, -1].contiguous()), gamma, beta)

    def kv_reduce(self, kv: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
        """``kv_sum`` from the centred projections ``kv`` (B, n, 2 * width) ordered (head, k|v, channel)."""
        b, n, _ = kv.shape
        hd = self.head_dim
        kv = kv.view(b, n, self.heads, 2, hd)
        std = torch.linalg.vector_norm(kv, dim=-1, keepdim=True) / (hd - 1) ** 0.5  # unbiased: kv is centred
        inv = 1 / (std + self.k_norm.eps)  # (b, n, h, 2, 1)
        kc, vc, a, c = kv[:, :, :, 0], kv[:, :, :, 1], inv[:, :, :, 0], inv[:, :, :, 1]
        # Points stay first (the layout the projections come in): the per-head sums over points are strided
        # products, which BLAS reads without a transposed copy.
        cross = torch.matmul((kc * (a * c)).permute(0, 2, 3, 1), vc.transpose(1, 2))  # (b, h, hd, hd)
        sum_k = (kc * a).sum(1)  # (b, h, hd)
        sum_v = (vc * c).sum(1)
        gk, gv, bk, bv = gamma[:, 0], gamma[:, 1], beta[:, 0], beta[:, 1]
        return (
            gk.unsqueeze(-1) * cross * gv.unsqueeze(-2)
            + (gk * sum_k).unsqueeze(-1) * bv.unsqueeze(-2)
            + bk.unsqueeze(-1) * (gv * sum_v).unsqueeze(-2)
            + n * bk.unsqueeze(-1) * bv.unsqueeze(-2)
        )

    def fold(self, m: Tensor) -> tuple[Tensor, Tensor]:
        """Fold q projection, attention with ``m = k^T v / N`` (B, heads, hd, hd) and ``proj1`` into one
        affine map: ``proj1(x + q(x) @ blockdiag(m)) = x @ a + c`` with a (B, width, width), c (B, 1, width)."""
        w1t = self.proj1.weight.t()
        # blockdiag(m) @ W1^T without building the block-diagonal matrix.
        mw = torch.einsum("bhcd,hdo->bhco", m, w1t.reshape(self.heads, self.head_dim, -1)).flatten(1, 2)
        a = w1t + self.qkv.weight[self.q_rows].t() @ mw
        c = self.proj1.bias + self.qkv.bias[self.q_rows] @ mw
        return a, c.unsqueeze(1)

    def apply_folded(self, x: Tensor, folded: tuple[Tensor, Tensor]) -> Tensor:
        """The block's output for the points of ``x`` (B, n, width) given ``fold(k^T v / N)``."""
        a, c = folded
        return self.finish(x, torch.baddbmm(c, x, a))

    def finish(self, x: Tensor, pre: Tensor) -> Tensor:
        """``x + proj2(GELU(pre))`` with ``pre = proj1(x + attention)``."""
        return self.proj2(F.gelu(pre)).add_(x)

    def forward(self, x: Tensor) -> Tensor:
        """Attention with the quadrature over exactly the N points of ``x`` (B, N, width)."""
        return self.apply_folded(x, self.fold(self.kv_sum(x) / x.shape[1]))
