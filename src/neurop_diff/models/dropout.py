"""Dropout with a cheap CPU mask: four 16-bit uniforms from every 64-bit draw of torch's generator.

On CPU, ``F.dropout`` draws one Bernoulli variate per element from torch's serial generator (about 9 ns per
element on the 2-core dev box: a fifth of the default UNet's training forward at 256^2). Here one 64-bit
draw of the same generator gives four 16-bit uniforms, each compared with ``round(p * 2**16)``: an element
is dropped with probability ``round(p * 2**16) / 2**16`` (p = 0.2: 0.199997) and the kept ones are scaled by
the inverse of the keep probability, so ``E[out] = x`` exactly, as with ``F.dropout``. Seeding is torch's
(``torch.manual_seed`` / Lightning's ``seed_everything`` make it reproducible). Elsewhere (CUDA, where
dropout's generator is fast), and for p outside (2**-17, 1 - 2**-17), it is ``F.dropout``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVELS = 1 << 16


def cpu_dropout(x: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """``x`` with each element zeroed with probability ~``p`` (above) and the rest scaled to keep the mean;
    the mask has ``x``'s memory layout (channels_last stays channels_last)."""
    drop = round(p * _LEVELS)
    if not 0 < drop < _LEVELS:
        return F.dropout(x, p, training=True)
    n = x.numel()
    words = torch.randint(-(1 << 63), (1 << 63) - 1, (-(-n // 4),), dtype=torch.int64, generator=generator)
    lanes = words.view(torch.int16)[:n]  # uniform on [-2**15, 2**15)
    keep = torch.empty_like(x, dtype=torch.bool)
    # empty_like keeps a dense layout, so the flat view covers exactly its storage.
    torch.ge(lanes, drop - _LEVELS // 2, out=keep.as_strided((n,), (1,)))
    return x.mul(keep).mul_(_LEVELS / (_LEVELS - drop))


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same arguments, no state) whose CPU training mask is :func:`cpu_dropout`'s."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and not self.inplace and x.device.type == "cpu" and x.is_floating_point():
            return cpu_dropout(x, self.p)
        return super().forward(x)
