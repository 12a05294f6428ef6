"""Pure torch: the per-pixel mean and standard deviation of several samples, in bounded memory.

Diffusion samples of one image differ (the model is generative); their spread is the uncertainty map of
``upscale --samples K``. Holding K full HR canvases would make memory grow with K, so the samples are reduced
as they arrive with Welford's online algorithm (Welford 1962, "Note on a method for calculating corrected sums
of squares and products"): a running mean and a running sum of squared deviations M2, both float64 canvases,
whatever K. It is numerically stable (no ``E[x^2] - E[x]^2`` cancellation) and, for identical samples, the
mean is exactly the sample and the variance exactly 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

__all__ = ["RunningStats", "mean_std"]


class RunningStats:
    """Running per-element mean and variance over samples of one shape (Welford's algorithm).

    Holds two canvases, ``mean`` and ``m2`` (the sum of squared deviations from the mean), in ``dtype``
    (float64 by default) on the first sample's device, allocated on the first :meth:`update`; an update
    needs two more canvases transiently. The samples themselves are not kept.
    """

    def __init__(self, dtype: torch.dtype = torch.float64) -> None:
        self.dtype = dtype
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def update(self, x: Tensor) -> None:
        """Adds one sample ``x`` (any shape, the same for every sample; any float dtype)."""
        x = x.detach().to(self.dtype, copy=True)  # our own copy: it is overwritten below
        if self.mean is None:
            self.mean, self.m2 = torch.zeros_like(x), torch.zeros_like(x)
        elif x.shape != self.mean.shape:
            raise ValueError(
                f"sample shape {tuple(x.shape)} differs from the first's {tuple(self.mean.shape)}"
            )
        self.count += 1
        delta = x - self.mean
        self.mean.add_(delta, alpha=1.0 / self.count)
        self.m2.addcmul_(delta, x.sub_(self.mean))  # delta * (x - new mean)

    def variance(self, correction: int = 1) -> Tensor:
        """Per-element variance ``m2 / (count - correction)``; ``correction=1`` (default, as ``torch.var``):
        the unbiased sample variance (NaN for a single sample), ``0``: the population variance."""
        if self.m2 is None:
            raise ValueError("no samples yet: call update() first")
        return self.m2 / (self.count - correction)

    def std(self, correction: int = 1) -> Tensor:
        """Per-element standard deviation, ``sqrt(variance(correction))``."""
        return self.variance(correction).sqrt()


def mean_std(
    samples: Iterable[Tensor], transform: Callable[[Tensor], Tensor] | None = None, correction: int = 1
) -> tuple[Tensor, Tensor, int]:
    """(mean, std, count) over ``samples`` (float64), each passed through ``transform`` first.

    Consumes the samples one at a time and lets each go before drawing the next, so a generator of samples
    never has more than the one it is producing alive (plus the two canvases of :class:`RunningStats`).
    """
    stats = RunningStats()
    for x in samples:
        stats.update(x if transform is None else transform(x))
        del x  # drop the reference before the next sample is drawn (a for loop would keep it alive)
    if stats.count == 0:
        raise ValueError("mean_std needs at least one sample")
    return stats.mean, stats.std(correction), stats.count
