"""EDSR-baseline feature encoder (Lim et al. 2017) as used by LIIF/SRNO: no upsampler, no mean shift."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ResBlock(nn.Module):
    """conv3x3 - ReLU - conv3x3 with an identity skip (res_scale 1)."""

    def __init__(self, n_feats: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.conv2 = nn.Conv2d(n_feats, n_feats, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(torch.relu(self.conv1(x)))


class EDSREncoder(nn.Module):
    """EDSR-baseline body: head conv, ``n_resblocks`` ResBlocks, a body conv and the global skip.

    Input ``(B, in_channels, h, w)`` in [-1, 1]; output ``(B, n_feats, h, w)`` at the same resolution.
    The authors' ``sub_mean``/``add_mean`` convs are unused there and deliberately absent here.
    """

    def __init__(self, n_resblocks: int = 16, n_feats: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        if n_resblocks < 0 or n_feats < 1 or in_channels < 1:
            raise ValueError(
                f"EDSREncoder: expected n_resblocks >= 0, n_feats >= 1, in_channels >= 1, "
                f"got {n_resblocks}, {n_feats}, {in_channels}"
            )
        self.n_feats = n_feats
        self.head = nn.Conv2d(in_channels, n_feats, 3, padding=1)
        self.blocks = nn.ModuleList(ResBlock(n_feats) for _ in range(n_resblocks))
        self.body_conv = nn.Conv2d(n_feats, n_feats, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(x)
        res = x
        for block in self.blocks:
            res = block(res)
        return x + self.body_conv(res)
