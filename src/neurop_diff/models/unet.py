"""SR3-family denoising UNet conditioned on the continuous noise level gamma (method.md sec. 4).

Saharia et al., "Image Super-Resolution via Iterative Refinement" (SR3), the architecture of DDPM's UNet with
the noise level ``gamma = sqrt(abar)`` embedded sinusoidally instead of the timestep. Defaults are the
NeurOp-Diff configuration (6 -> 3 channels, base 64, multipliers (1, 2, 2, 4, 4, 8), attention at 16x16 for
256x256 inputs, 16 groups, dropout 0.2; about 47.5M parameters).

Layout (as SR3, so the authors' weights map by renaming, see ``neurop_diff.weights.unet``): ``downs`` and
``ups`` are flat lists in forward order. ``downs`` = [input conv, per level: ``res_blocks`` x ResBlock, then
Downsample except at the last level]; every output of ``downs`` is kept as a skip. ``mid`` = [ResBlock with
attention, ResBlock]. ``ups`` = per level from the deepest: ``res_blocks + 1`` x ResBlock, each taking
``cat([x, skip])``, then Upsample except at the top level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from neurop_diff.diffusion.schedule import gamma_to_sigma, level_dtype

from .dropout import Dropout

__all__ = [
    "LOG_SIGMA_SCALE",
    "Downsample",
    "NoiseEmbedding",
    "NoiseLevelEncoding",
    "ResBlock",
    "SelfAttention",
    "UNet",
    "Upsample",
    "c_noise",
]


NoiseEmbedding = Literal["sr3", "log_sigma", "time"]
#: ``log_sigma`` feeds ``LOG_SIGMA_SCALE * ln(sigma) / 4`` to the sinusoid: over SR3's linear schedule (VE sigma
#: 0.001 .. 148) that spans about -430 .. 310, the range DDPM's timestep embedding covers (0 .. 1000), so every
#: frequency from 1e-4 to 1 is used.
LOG_SIGMA_SCALE = 250.0
#: ``time`` (the flow's level t in [0, 1]) feeds ``FLOW_TIME_SCALE * t``, as DDPM's timesteps 0 .. 1000.
FLOW_TIME_SCALE = 1000.0
#: The VE level below which ``log_sigma`` embeddings coincide (gamma = 1 would give ln 0).
SIGMA_FLOOR = 1e-4


def c_noise(gamma: Tensor) -> Tensor:
    """EDM's noise input ``ln(sigma) / 4`` (Karras et al. 2022, Table 1) for SR3 levels ``gamma`` (B,), with the VE
    level ``sigma`` (``diffusion.schedule.gamma_to_sigma``) floored at ``SIGMA_FLOOR``; in ``level_dtype``
    (float64 but on MPS) so that the levels near gamma = 1 stay apart."""
    sigma = gamma_to_sigma(gamma.to(level_dtype(gamma.device)))
    return sigma.clamp_min(SIGMA_FLOOR).log() / 4


class NoiseLevelEncoding(nn.Module):
    """Sinusoidal embedding of the noise level, (B,) -> (B, dim): ``cat[sin(c w), cos(c w)]`` with
    ``w_i = exp(-ln(1e4) i / (dim / 2))``, ``i < dim / 2``.

    ``kind='sr3'``: ``c = gamma`` (SR3's PositionalEncoding, the authors'; levels with gamma near 1, i.e. all of
    the low-noise range, get nearly the same embedding). ``kind='log_sigma'``: ``c = LOG_SIGMA_SCALE * ln(sigma)
    / 4`` (EDM's c_noise, Karras et al. 2022), which tells every level apart. ``kind='time'``: ``c = 1000 t`` for
    a flow's time t in [0, 1] (``diffusion.flow``). Computed outside any autocast in
    the levels' precision, at least float32.
    """

    def __init__(self, dim: int, kind: NoiseEmbedding = "sr3") -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"noise-level embedding dim must be even, got {dim}")
        if kind not in NoiseEmbedding.__args__:
            raise ValueError(f"noise_embedding must be one of {NoiseEmbedding.__args__}, got {kind!r}")
        self.dim, self.kind = dim, kind

    def forward(self, gamma: Tensor) -> Tensor:
        with torch.autocast(gamma.device.type, enabled=False):
            if self.kind == "log_sigma":
                c = c_noise(gamma) * LOG_SIGMA_SCALE
            else:
                c = gamma * FLOW_TIME_SCALE if self.kind == "time" else gamma
            if not c.is_floating_point() or c.element_size() < 4:
                c = c.float()
            count = self.dim // 2
            step = torch.arange(count, dtype=c.dtype, device=gamma.device) / count
            encoding = c[:, None] * torch.exp(-math.log(1e4) * step[None])
            return torch.cat([torch.sin(encoding), torch.cos(encoding)], dim=-1)


class SelfAttention(nn.Module):
    """Single-head self-attention over all pixels, residual: ``x + out(softmax(q k^T / sqrt(C)) v)``."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=False)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        # qkv channels are [q | k | v] (SR3's chunk order); tokens are pixels: (B, HW, C) each.
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).transpose(-1, -2).unbind(1)
        y = F.scaled_dot_product_attention(q, k, v)  # default scale 1/sqrt(C): single head of width C
        return x + self.out(y.transpose(-1, -2).reshape(b, c, h, w))


class ResBlock(nn.Module):
    """[GroupNorm, Swish, Conv3x3] + Linear(emb), [GroupNorm, Swish, Dropout, Conv3x3], 1x1 skip conv when the
    channel count changes; optional self-attention after the residual sum (SR3's ResnetBlocWithAttn)."""

    def __init__(
        self, in_ch: int, out_ch: int, emb_dim: int, groups: int, dropout: float, attention: bool = False
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = Dropout(dropout)  # nn.Dropout with a cheaper CPU mask
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.attn = SelfAttention(out_ch, groups) if attention else None

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(emb)[:, :, None, None]  # additive noise-level conditioning (no scale)
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        h = h + self.skip(x)
        return self.attn(h) if self.attn is not None else h


class Downsample(nn.Module):
    """3x3 convolution with stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """Noise predictor ``eps_theta(cat[x_t, condition], gamma)``.

    Args:
        in_channels: channels of the input (x_t's 3 plus the condition's).
        out_channels: channels of the predicted noise.
        base_channels: width of the first level; also the noise-embedding width (MLP hidden 4x).
        channel_mults: width multiplier per level; ``len - 1`` downsamplings.
        res_blocks: residual blocks per level on the way down (``res_blocks + 1`` on the way up).
        attn_resolutions: spatial sizes (counted from ``image_size``) whose levels get self-attention;
            the middle always has one.
        image_size: the nominal input size used to place attention; any size divisible by
            ``2 ** (len(channel_mults) - 1)`` runs (attention stays at the same levels).
        norm_groups: GroupNorm groups everywhere.
        dropout: dropout in the second conv block of every residual block.
        channels_last: convert the weights and the input to channels_last (faster convs on CPU).
        checkpoint: recompute residual blocks in backward (activation checkpointing) while training.
        noise_embedding: ``sr3`` (the sinusoid of gamma: SR3's and the authors'), ``log_sigma`` (of EDM's
            ``ln(sigma) / 4``, which tells the low-noise levels apart) or ``time`` (a flow's t; the level the UNet
            is given is then t): :class:`NoiseLevelEncoding`.
    """

    def __init__(
        self,
        in_channels: int = 6,
        out_channels: int = 3,
        base_channels: int = 64,
        channel_mults: Sequence[int] = (1, 2, 2, 4, 4, 8),
        res_blocks: int = 1,
        attn_resolutions: Sequence[int] = (16,),
        image_size: int = 256,
        norm_groups: int = 16,
        dropout: float = 0.2,
        channels_last: bool = False,
        checkpoint: bool = False,
        noise_embedding: NoiseEmbedding = "sr3",
    ) -> None:
        super().__init__()
        if not channel_mults or res_blocks < 1:
            raise ValueError(
                f"UNet needs channel_mults and res_blocks >= 1, got {channel_mults}, {res_blocks}"
            )
        bad = [m for m in channel_mults if (base_channels * m) % norm_groups]
        if base_channels % norm_groups or bad:
            raise ValueError(
                f"UNet: base_channels={base_channels} times every channel_mults {tuple(channel_mults)} "
                f"must be divisible by norm_groups={norm_groups}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.factor = 2 ** (len(channel_mults) - 1)
        self.channels_last, self.checkpoint = channels_last, checkpoint
        emb = base_channels

        self.noise_embedding = noise_embedding
        self.noise_encoding = NoiseLevelEncoding(emb, noise_embedding)
        self.noise_mlp = nn.Sequential(nn.Linear(emb, emb * 4), nn.SiLU(), nn.Linear(emb * 4, emb))

        def block(cin: int, cout: int, attention: bool) -> ResBlock:
            return ResBlock(cin, cout, emb, norm_groups, dropout, attention)

        ch = base_channels
        skips = [ch]
        res = image_size
        downs: list[nn.Module] = [nn.Conv2d(in_channels, ch, 3, padding=1)]
        for level, mult in enumerate(channel_mults):
            for _ in range(res_blocks):
                downs.append(block(ch, base_channels * mult, res in attn_resolutions))
                ch = base_channels * mult
                skips.append(ch)
            if level < len(channel_mults) - 1:
                downs.append(Downsample(ch))
                skips.append(ch)
                res //= 2
        self.downs = nn.ModuleList(downs)
        self.mid = nn.ModuleList([block(ch, ch, True), block(ch, ch, False)])

        ups: list[nn.Module] = []
        for level in reversed(range(len(channel_mults))):
            out = base_channels * channel_mults[level]
            for _ in range(res_blocks + 1):
                ups.append(block(ch + skips.pop(), out, res in attn_resolutions))
                ch = out
            if level > 0:
                ups.append(Upsample(ch))
                res *= 2
        self.ups = nn.ModuleList(ups)
        self.out_norm = nn.GroupNorm(norm_groups, ch)
        self.out_conv = nn.Conv2d(ch, out_channels, 3, padding=1)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor, gamma: Tensor) -> Tensor:
        """``x``: (B, in_channels, H, W) = cat[x_t, condition]; ``gamma``: (B,) SR3 noise levels in (0, 1]
        (float64 keeps the levels near 1 apart for ``log_sigma``).
        Returns the predicted noise (B, out_channels, H, W)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet expects x of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % self.factor or x.shape[-1] % self.factor:
            raise ValueError(
                f"UNet input size {tuple(x.shape[-2:])} must be divisible by {self.factor} "
                f"(2 ** (len(channel_mults) - 1)); pad or crop the image"
            )
        if gamma.shape != (x.shape[0],):
            raise ValueError(f"UNet expects gamma of shape ({x.shape[0]},), got {tuple(gamma.shape)}")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, enabled=False):  # float32: low-precision levels would merge
            emb = self.noise_mlp(self.noise_encoding(gamma).to(self.noise_mlp[0].weight.dtype))

        feats = []
        for layer in self.downs:
            x = self._block(layer, x, emb) if isinstance(layer, ResBlock) else layer(x)
            feats.append(x)
        for layer in self.mid:
            x = self._block(layer, x, emb)
        for layer in self.ups:
            if isinstance(layer, ResBlock):
                x = self._block(layer, torch.cat([x, feats.pop()], dim=1), emb)
            else:
                x = layer(x)
        return self.out_conv(F.silu(self.out_norm(x)))

    def _block(self, layer: nn.Module, x: Tensor, emb: Tensor) -> Tensor:
        if self.checkpoint and self.training and torch.is_grad_enabled():
            return activation_checkpoint(layer, x, emb, use_reentrant=False)
        return layer(x, emb)
