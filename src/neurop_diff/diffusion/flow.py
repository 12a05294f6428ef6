"""Posterior-mean rectified flow (PMRF, Ohayon et al., ICLR 2025): a straight path from the prior to HR.

The source is the operator's prior (the posterior-mean estimate) plus a little Gaussian noise,
``x_src = prior + s eps``; the path is ``x_t = t HR + (1 - t) x_src``, ``t`` in [0, 1]; the network predicts the
velocity ``v = HR - x_src`` (L2 loss) and sampling integrates ``dx/dt = v`` from ``x_src`` at ``t = 0``.

It runs on the samplers of ``diffusion.sampling`` / ``diffusion.ksamplers`` unchanged through the "const"
level ``sigma = 1 - t`` (as k-diffusion runs rectified-flow models): the state ``x = (1 - sigma) HR + sigma x_src``,
the clean estimate ``D(x, sigma) = x + sigma v``, and the samplers' Euler update ``D + (x - D) sigma' / sigma`` is
then exactly the Euler step ``x + (t' - t) v`` of the flow (Heun likewise). Pure functions; images in [-1, 1].
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from neurop_diff.diffusion.schedule import level_dtype

__all__ = ["FLOW_SAMPLERS", "TimeSampling", "flow_sigmas", "flow_source", "flow_target", "sample_flow_times"]

TimeSampling = Literal["uniform", "logit_normal"]
#: Samplers that integrate the flow's ODE (DDIM with eta = 0 is Euler's update).
FLOW_SAMPLERS = ("euler", "heun", "ddim")


def flow_source(prior: Tensor, noise: Tensor, flow_noise: float) -> Tensor:
    """``x_src = prior + flow_noise * noise`` (PMRF's source: 0.1 on [0, 1] images, i.e. 0.2 in [-1, 1] units)."""
    return prior + flow_noise * noise


def flow_target(hr: Tensor, source: Tensor) -> Tensor:
    """The velocity ``HR - x_src`` of the straight path."""
    return hr - source


def sample_flow_times(
    batch_size: int,
    kind: TimeSampling = "uniform",
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Training times t (B,) in (0, 1), one per image: ``uniform`` or ``logit_normal`` (``sigmoid(N(0, 1))``,
    Esser et al. 2024, SD3 sec. 3.1: more weight on the middle of the path). float64 (float32 on MPS)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gen_device = generator.device if generator is not None else "cpu"
    if kind == "uniform":
        t = torch.rand(batch_size, generator=generator, device=gen_device, dtype=torch.float64)
    elif kind == "logit_normal":
        t = torch.sigmoid(
            torch.randn(batch_size, generator=generator, device=gen_device, dtype=torch.float64)
        )
    else:
        raise ValueError(f"time_sampling must be one of {TimeSampling.__args__}, got {kind!r}")
    return t.cpu().to(device=device or "cpu", dtype=level_dtype(device))


def flow_sigmas(steps: int) -> Tensor:
    """The "const" levels ``sigma = 1 - t`` of ``steps`` uniform time steps: 1, ..., 1/steps, 0 (float64)."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"flow sampling steps must be a positive int, got {steps!r}")
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
