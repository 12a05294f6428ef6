"""Higher-order ODE samplers (k-diffusion style) and the one table of every sampler by name.

The samplers share the interface of ``diffusion.sampling`` (``sampler(denoiser, x, sigmas, *, condition, ...)``
over the VE state; the denoiser returns the clean estimate). They integrate the probability-flow ODE
``dx/dsigma = (x - D(x, sigma)) / sigma`` (Karras et al. 2022, eq. 3 with sigma(t) = t):

* ``euler``: first order (Karras Alg. 1 without churn); the same update as DDIM with eta = 0.
* ``heun``: second order, two denoiser calls per step but the last (Karras Alg. 1).
* ``dpmpp_2m``: DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), second-order multistep in ``lambda = -ln(sigma)``,
  one call per step; its first and last steps are first order (= DDIM, eta 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from neurop_diff.diffusion.sampling import Callback, Denoiser, sample_ddim, sigma_levels

__all__ = ["SAMPLERS", "Sampler", "run_sampler", "sample_dpmpp_2m", "sample_euler", "sample_heun"]

Sampler = Literal["ddim", "ddpm", "euler", "heun", "dpmpp_2m"]


@torch.no_grad()
def sample_euler(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Sequence[float] | Tensor,
    *,
    condition: Tensor | None = None,
    callback: Callback | None = None,
    **_: Any,
) -> Tensor:
    """Euler steps of the probability-flow ODE (``x0 + (x - x0) sigma_next / sigma``); deterministic."""
    return sample_ddim(denoiser, x, sigmas, condition=condition, eta=0.0, callback=callback)


@torch.no_grad()
def sample_heun(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Sequence[float] | Tensor,
    *,
    condition: Tensor | None = None,
    callback: Callback | None = None,
    **_: Any,
) -> Tensor:
    """Heun's method (Karras Alg. 1, no churn): an Euler step corrected by the slope at its end, except the last
    step to sigma = 0 (Euler). ``2 * steps - 1`` denoiser calls."""
    sigmas = [float(s) for s in sigmas]
    total = len(sigmas) - 1
    for i in range(total):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma_levels(s, x.shape[0], x.device), condition).to(x.dtype)
        d = (x - x0) / s
        x_euler = x + (s_next - s) * d
        if s_next > 0:
            x0_next = denoiser(x_euler, sigma_levels(s_next, x.shape[0], x.device), condition).to(x.dtype)
            x = x + (s_next - s) * 0.5 * (d + (x_euler - x0_next) / s_next)
        else:
            x = x_euler
        if callback is not None:
            callback({"i": i, "total": total, "sigma": s_next, "x": x, "x0": x0})
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Sequence[float] | Tensor,
    *,
    condition: Tensor | None = None,
    callback: Callback | None = None,
    **_: Any,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): one denoiser call per step."""
    sigmas = [float(s) for s in sigmas]
    total = len(sigmas) - 1
    old: Tensor | None = None
    h_last = 0.0
    for i in range(total):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma_levels(s, x.shape[0], x.device), condition).to(x.dtype)
        if s_next == 0:
            x = x0
        else:
            h = math.log(s / s_next)
            d = x0
            if old is not None:
                r = h_last / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * old
            x = (s_next / s) * x - math.expm1(-h) * d
            h_last = h
        old = x0
        if callback is not None:
            callback({"i": i, "total": total, "sigma": s_next, "x": x, "x0": x0})
    return x


#: Every sampler by name; ``ddpm`` is DDIM with eta = 1 over all T levels (``models.neuropdiff`` builds its grid).
SAMPLERS = {
    "ddim": sample_ddim,
    "ddpm": sample_ddim,
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
}


def run_sampler(name: str, denoiser: Denoiser, x: Tensor, sigmas: Tensor, **kwargs: Any) -> Tensor:
    """``SAMPLERS[name](denoiser, x, sigmas, **kwargs)``, or a ValueError naming the known samplers."""
    if name not in SAMPLERS:
        raise ValueError(f"sampler must be one of {tuple(SAMPLERS)}, got {name!r}")
    if name == "ddpm":
        kwargs["eta"] = 1.0
    return SAMPLERS[name](denoiser, x, sigmas, **kwargs)
