"""Level grids and the samplers of the DDIM family, over a denoiser that returns the clean estimate (k-diffusion).

Every sampler here and in ``diffusion.ksamplers`` is a small pure function ``sampler(denoiser, x, sigmas, ...)``
(the shape of Karras et al. 2022 / k-diffusion): ``x`` is the variance-exploding (VE) state ``x0 + sigma eps`` at
``sigmas[0]``, ``sigmas`` is a decreasing float64 grid ending at 0, and ``denoiser(x, sigma, condition)`` returns
the clean estimate ``D(x, sigma)`` (B, C, H, W) for VE levels ``sigma`` (B,). A sampler never knows what the
network predicts (eps, x0, v, EDM's F: ``models.neuropdiff.NeurOpDiff.denoised`` converts, and clamps, in one
place). SR3's variance-preserving ``x_t = gamma x0 + sqrt(1 - gamma^2) eps`` is ``x = x_t / gamma`` with
``sigma = sqrt(1 - gamma^2) / gamma`` (Karras et al. 2022, app. C.1).

* :func:`sample_ddim`: DDIM (Song et al. 2021, eq. 12 and 16) in VE form; ``eta = 0`` is deterministic (and equal
  to an Euler step of the probability-flow ODE), ``eta = 1`` over all T levels is DDPM's ancestral sampler (Ho et
  al. 2020, Alg. 2), the same as k-diffusion's ``sample_euler_ancestral``.
* Grids (:func:`get_sigmas`): the schedule's timesteps with ``leading`` spacing (DDIM's ``0, k, 2k, ...``; the
  old name ``uniform``), ``trailing`` (``T - 1, T - 1 - k, ...``: the first step starts at the highest level,
  Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed", Table 2), ``linspace``
  (``round(linspace(0, T - 1, steps))``), ``quadratic`` (DDIM's code) or ``karras`` (``rho = 7`` between the
  schedule's ends, Karras eq. 5).

Randomness comes in through ``noise_sampler(x) -> N(0, I) like x`` (default: ``torch.randn`` from ``generator``
on its device, then moved). Progress goes out through ``callback(info)``, ``info = {"i": step from 0, "total":
steps, "sigma": the level reached, "x": the state there, "x0": the step's clean estimate}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from neurop_diff.diffusion.schedule import NoiseSchedule, gamma_to_sigma, level_dtype

__all__ = [
    "Callback",
    "Denoiser",
    "NoiseSampler",
    "Spacing",
    "ancestral_step",
    "ddim_timesteps",
    "default_noise_sampler",
    "get_sigmas",
    "sample_ddim",
    "sigma_levels",
    "truncate_sigmas",
    "truncated_steps",
]

#: ``denoiser(x, sigma, condition) -> x0``: VE state (B, C, H, W), VE levels (B,), condition or None.
Denoiser = Callable[[Tensor, Tensor, Tensor | None], Tensor]
Callback = Callable[[dict[str, Any]], None]
NoiseSampler = Callable[[Tensor], Tensor]
#: Level spacing; ``uniform`` is the old name of ``leading``.
Spacing = Literal["leading", "trailing", "linspace", "quadratic", "karras", "uniform"]
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace", "quadratic", "uniform")


def ddim_timesteps(T: int, steps: int, spacing: Spacing = "leading") -> list[int]:
    """Increasing 0-based timestep indices (``i`` is timestep ``t = i + 1``) of a ``steps``-step run.

    ``leading`` / ``uniform``: ``0, k, ..., (steps - 1) k`` with ``k = T // steps`` (DDIM's ``range(0, T, k)``);
    ``steps = 1`` visits only the lowest level. ``trailing``: ``round(T - j T / steps) - 1`` for ``j < steps``
    (Lin et al. 2024): the highest level ``T - 1`` is always visited. ``linspace``: ``round(linspace(0, T - 1,
    steps))``. ``quadratic``: DDIM's ``int(linspace(0, sqrt(0.8 T), steps)^2)``, made strictly increasing.
    """
    if not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"sampling steps must be an int in 1..T={T}, got {steps!r}")
    if spacing in ("leading", "uniform"):
        k = T // steps
        return [k * i for i in range(steps)]
    if spacing == "trailing":
        return sorted(round(T - j * T / steps) - 1 for j in range(steps))
    if spacing == "linspace":
        return [round(v) for v in torch.linspace(0, T - 1, steps, dtype=torch.float64).tolist()]
    if spacing != "quadratic":
        raise ValueError(f"unknown timestep spacing {spacing!r}; expected one of {TIMESTEP_SPACINGS}")
    seq = [int(v) for v in torch.linspace(0, math.sqrt(0.8 * T), steps, dtype=torch.float64) ** 2]
    for i in range(1, steps):  # small steps near 0 round onto the same integer
        seq[i] = max(seq[i], seq[i - 1] + 1)
    seq[-1] = min(seq[-1], T - 1)
    for i in range(steps - 2, -1, -1):
        seq[i] = min(seq[i], seq[i + 1] - 1)
    return seq


def get_sigmas(schedule: NoiseSchedule, steps: int, spacing: Spacing = "leading", rho: float = 7.0) -> Tensor:
    """Decreasing VE levels ``sigma_0 > ... > sigma_{steps-1} > 0``, then 0: (steps + 1,) float64."""
    sig = gamma_to_sigma(schedule.gammas.to(torch.float64))
    if spacing == "karras":
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"sampling steps must be a positive int, got {steps!r}")
        hi, lo = float(sig[-1]), float(sig[1])
        ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
        levels = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
    else:
        seq = ddim_timesteps(schedule.T, steps, spacing)
        levels = sig[torch.tensor(seq[::-1]) + 1]
    return torch.cat([levels, levels.new_zeros(1)])


def truncated_steps(steps: int, strength: float) -> int:
    """How many of ``steps`` steps a run at ``strength`` in (0, 1] makes (at least 1)."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength!r}")
    return max(1, round(steps * strength))


def truncate_sigmas(sigmas: Tensor, strength: float) -> Tensor:
    """The last ``truncated_steps`` steps of a grid (Chung et al. 2022, "Come-closer-diffuse-faster": a run that
    starts from a noised initial estimate at ``sigmas[0]`` of the result)."""
    n = truncated_steps(len(sigmas) - 1, strength)
    return sigmas[-(n + 1) :]


def sigma_levels(sigma: float, batch: int, device: torch.device) -> Tensor:
    """``sigma`` as the (B,) level tensor every sampler hands the denoiser (float64, float32 on MPS)."""
    return torch.full((batch,), float(sigma), device=device, dtype=level_dtype(device))


def default_noise_sampler(generator: torch.Generator | None, per_image: bool = False) -> NoiseSampler:
    """N(0, I) like ``x``, drawn in float32 on the generator's device (CPU when none) and then moved, so one seed
    gives the same noise on any device and dtype; with ``per_image`` one image's draw is shared by the whole
    batch (so an image's sample does not depend on the batch it is in)."""

    def draw(x: Tensor) -> Tensor:
        gen_device = generator.device if generator is not None else "cpu"
        shape = (1, *x.shape[1:]) if per_image else tuple(x.shape)
        return torch.randn(shape, generator=generator, device=gen_device).to(x).expand_as(x)

    return draw


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """``(sigma_down, sigma_up)`` of a step from ``sigma`` to ``sigma_next`` with noise ``eta``:
    ``sigma_up = min(sigma_next, eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2))``, ``sigma_down =
    sqrt(sigma_next^2 - sigma_up^2)``. This is DDIM's eq. 16 in VE levels (k-diffusion's ``get_ancestral_step``)."""
    if not eta or sigma_next == 0:
        return sigma_next, 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(max(sigma_next**2 - up**2, 0.0)), up


@torch.no_grad()
def sample_ddim(
    denoiser: Denoiser,
    x: Tensor,
    sigmas: Sequence[float] | Tensor,
    *,
    condition: Tensor | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    noise_sampler: NoiseSampler | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """DDIM from the VE state ``x`` at ``sigmas[0]`` down the grid; returns the final clean sample.

    Each step: ``x0 = D(x, sigma)``, then ``x = x0 + (x - x0) sigma_down / sigma + sigma_up z``
    (:func:`ancestral_step`; ``eta = 0``: ``sigma_down = sigma_next``, no noise).
    """
    sigmas = [float(s) for s in sigmas]
    noise = noise_sampler or default_noise_sampler(generator)
    total = len(sigmas) - 1
    for i in range(total):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = denoiser(x, sigma_levels(s, x.shape[0], x.device), condition).to(x.dtype)
        down, up = ancestral_step(s, s_next, eta)
        x = x0 + (x - x0) * (down / s) if down > 0 else x0
        if up > 0:
            x = x + up * noise(x)
        if callback is not None:
            callback({"i": i, "total": total, "sigma": s_next, "x": x, "x0": x0})
    return x
