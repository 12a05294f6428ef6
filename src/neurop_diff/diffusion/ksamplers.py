"""Fast samplers in the continuous noise-level form (k-diffusion style): Euler, Heun and DPM-Solver++(2M).

SR3's variance-preserving ``x_t = gamma x0 + sqrt(1 - gamma^2) eps`` is the variance-exploding process
``y = x_t / gamma = x0 + sigma eps`` with ``sigma = sqrt(1 - gamma^2) / gamma`` (Karras et al. 2022, sec. 2 and
app. C.1; Song et al. 2021's probability-flow ODE ``dy/dsigma = (y - D(y, sigma)) / sigma``). The samplers here
integrate that ODE from ``sigma_max`` (the schedule's last level) to 0 on a chosen grid of levels, calling the same
denoiser as DDIM (``denoise(x_t, gamma, condition) -> eps``, ``diffusion.sampling.Denoiser``) and turning its
answer into ``D = x0``. They are deterministic (no per-step noise), have the signature of ``ddim_sample`` and the
same callback.

* ``euler``: first order (Karras Alg. 1 without churn); ``heun``: second order, two model calls per step but
  the last (Karras Alg. 1); ``dpmpp_2m``: DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), second-order multistep,
  one call per step; its first-order step is exactly DDIM (eta = 0).
* Level grids: ``uniform`` (the DDIM timesteps of ``diffusion.sampling.ddim_timesteps``) or ``karras``
  (``rho = 7`` spacing of sigma between the schedule's ends, Karras eq. 5).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from neurop_diff.diffusion.sampling import (
    Callback,
    Denoiser,
    _device,
    _initial,
    ddim_timesteps,
    noise_levels,
)
from neurop_diff.diffusion.schedule import NoiseSchedule

__all__ = ["KSampler", "k_sample", "sample_dpmpp_2m", "sample_euler", "sample_heun", "sigma_grid"]

KSampler = Literal["euler", "heun", "dpmpp_2m"]


def sigma_grid(
    schedule: NoiseSchedule, steps: int, spacing: Literal["uniform", "karras"] = "uniform", rho: float = 7.0
) -> list[float]:
    """Decreasing VE noise levels ``sigma_0 > ... > sigma_{steps-1} > 0``, then 0 (length ``steps + 1``)."""
    g = schedule.gammas.to(torch.float64)
    if spacing == "karras":
        hi, lo = _sigma(float(g[-1])), _sigma(float(g[1]))
        ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
        sig = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
        return [float(s) for s in sig] + [0.0]
    if spacing != "uniform":
        raise ValueError(f"unknown level spacing {spacing!r}; expected 'uniform' or 'karras'")
    seq = ddim_timesteps(schedule.T, steps, "uniform")
    return [_sigma(float(g[t + 1])) for t in reversed(seq)] + [0.0]


def _sigma(gamma: float) -> float:
    return math.sqrt(max(1.0 - gamma * gamma, 0.0)) / gamma


def _gamma(sigma: float) -> float:
    return 1.0 / math.sqrt(1.0 + sigma * sigma)


def _x0(denoise: Denoiser, y: Tensor, sigma: float, condition: Tensor | None, clip: bool) -> Tensor:
    """D(y, sigma): the denoiser's x0 for y = x_t / gamma (levels as the DDIM loop passes them)."""
    g = _gamma(sigma)
    level = noise_levels(g, y.shape[0], y.device)
    x_t = y * g
    eps = denoise(x_t, level, condition).to(y.dtype)
    x0 = (x_t - math.sqrt(max(1.0 - g * g, 0.0)) * eps) / g
    return x0.clamp(-1.0, 1.0) if clip else x0


def _start(shape: Sequence[int], x_T, generator, device, dtype, sigma_max: float) -> Tensor:
    # x_T ~ N(0, I) is the VP state at the last level; y = x_T / gamma_max has std ~ sigma_max.
    return _initial(shape, x_T, generator, device, dtype) / _gamma(sigma_max)


@torch.no_grad()
def sample_euler(
    denoise: Denoiser,
    condition: Tensor | None,
    shape: Sequence[int],
    sigmas: Sequence[float],
    *,
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    clip_denoised: bool = False,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Euler steps of the probability-flow ODE over ``sigmas`` (ending at 0); returns x0 in ``dtype``."""
    device = _device(device, condition, x_T)
    y = _start(shape, x_T, generator, device, dtype, sigmas[0])
    for i, (s, s_next) in enumerate(itertools.pairwise(sigmas)):
        x0 = _x0(denoise, y, s, condition, clip_denoised)
        y = x0 + (y - x0) * (s_next / s)  # = y + (s_next - s) * (y - x0) / s
        _report(callback, i, len(sigmas) - 1, y, s_next, x0)
    return y


@torch.no_grad()
def sample_heun(
    denoise: Denoiser,
    condition: Tensor | None,
    shape: Sequence[int],
    sigmas: Sequence[float],
    *,
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    clip_denoised: bool = False,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Heun's second-order method (Karras Alg. 1, no churn): an Euler step corrected by the slope at its end,
    except the last step to sigma = 0 (Euler). ``2 * steps - 1`` denoiser calls."""
    device = _device(device, condition, x_T)
    y = _start(shape, x_T, generator, device, dtype, sigmas[0])
    for i, (s, s_next) in enumerate(itertools.pairwise(sigmas)):
        x0 = _x0(denoise, y, s, condition, clip_denoised)
        d = (y - x0) / s
        y_euler = y + (s_next - s) * d
        if s_next > 0:
            x0_next = _x0(denoise, y_euler, s_next, condition, clip_denoised)
            y = y + (s_next - s) * 0.5 * (d + (y_euler - x0_next) / s_next)
        else:
            y = y_euler
        _report(callback, i, len(sigmas) - 1, y, s_next, x0)
    return y


@torch.no_grad()
def sample_dpmpp_2m(
    denoise: Denoiser,
    condition: Tensor | None,
    shape: Sequence[int],
    sigmas: Sequence[float],
    *,
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    clip_denoised: bool = False,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) in ``lambda = -log(sigma)``: one denoiser call per step; the
    first and the last step (to sigma = 0) are first order (= DDIM, eta 0)."""
    device = _device(device, condition, x_T)
    y = _start(shape, x_T, generator, device, dtype, sigmas[0])
    old: Tensor | None = None
    h_last = 0.0
    for i, (s, s_next) in enumerate(itertools.pairwise(sigmas)):
        x0 = _x0(denoise, y, s, condition, clip_denoised)
        if s_next == 0:
            y = x0
        else:
            h = math.log(s / s_next)
            d = x0
            if old is not None:
                r = h_last / h
                d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * old
            y = (s_next / s) * y - math.expm1(-h) * d
            h_last = h
        old = x0
        _report(callback, i, len(sigmas) - 1, y, s_next, x0)
    return y


_SAMPLERS = {"euler": sample_euler, "heun": sample_heun, "dpmpp_2m": sample_dpmpp_2m}


def k_sample(
    sampler: KSampler,
    denoise: Denoiser,
    condition: Tensor | None,
    shape: Sequence[int],
    schedule: NoiseSchedule,
    *,
    steps: int = 10,
    spacing: Literal["uniform", "karras"] = "karras",
    **kwargs,
) -> Tensor:
    """``sampler`` over ``steps`` levels of ``schedule`` (``sigma_grid``); kwargs as the samplers'."""
    if sampler not in _SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {sorted(_SAMPLERS)}")
    return _SAMPLERS[sampler](denoise, condition, shape, sigma_grid(schedule, steps, spacing), **kwargs)


def _report(callback: Callback | None, i: int, total: int, y: Tensor, sigma: float, x0: Tensor) -> None:
    if callback is not None:
        callback({"i": i, "total": total, "sigma": sigma, "x": y * _gamma(sigma), "x0": x0})
