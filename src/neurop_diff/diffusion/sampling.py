"""Samplers over a callable denoiser: DDIM (Song et al. 2021) and DDPM ancestral sampling (Ho et al. 2020).

A sampler never sees the network: it calls ``denoise(x_t, gamma, condition) -> eps`` with ``gamma`` the
continuous noise level ``sqrt(abar_t)`` of shape (B,) (SR3). Randomness comes in through a
``torch.Generator``; every draw is made on the generator's device (CPU when none is given) and then moved,
so one seed gives the same sample on CPU and GPU. Progress goes out through ``callback(info)`` with
``info = {"i": step index from 0, "total": number of steps, "t": 1-based timestep, "x": x_prev, "x0": x0_hat}``.

Indexing: timestep *indices* ``i`` are 0-based as in the DDIM code (``i = 0..T-1`` is timestep ``t = i + 1``),
so the level fed to the network at index ``i`` is ``schedule.gammas[i + 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from neurop_diff.diffusion.schedule import NoiseSchedule, predict_start_from_noise, q_posterior

__all__ = [
    "Denoiser",
    "ddim_sample",
    "ddim_sigma",
    "ddim_step",
    "ddim_timesteps",
    "ddpm_sample",
    "noise_levels",
    "start_level",
    "truncated_steps",
]

Denoiser = Callable[[Tensor, Tensor, Tensor | None], Tensor]
Callback = Callable[[dict[str, Any]], None]


def ddim_timesteps(T: int, steps: int, spacing: Literal["uniform", "quadratic"] = "uniform") -> list[int]:
    """Increasing 0-based timestep indices visited by DDIM (DDIM sec. 4.2 / appendix D.2).

    ``uniform``: ``0, k, 2k, ..., (steps-1) k`` with ``k = T // steps`` (the DDIM code's ``range(0, T, k)``,
    cut to exactly ``steps`` entries when ``T`` is not a multiple of ``steps``). ``quadratic``: the DDIM code's
    ``int(linspace(0, sqrt(0.8 T), steps)^2)``, nudged to be strictly increasing within ``[0, T-1]``.
    """
    if not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"DDIM steps must be an int in 1..T={T}, got {steps!r}")
    if spacing == "uniform":
        k = T // steps
        return [k * i for i in range(steps)]
    if spacing != "quadratic":
        raise ValueError(f"unknown DDIM spacing {spacing!r}; expected 'uniform' or 'quadratic'")
    seq = [int(v) for v in torch.linspace(0, math.sqrt(0.8 * T), steps, dtype=torch.float64) ** 2]
    for i in range(1, steps):  # small steps near 0 round onto the same integer
        seq[i] = max(seq[i], seq[i - 1] + 1)
    seq[-1] = min(seq[-1], T - 1)
    for i in range(steps - 2, -1, -1):
        seq[i] = min(seq[i], seq[i + 1] - 1)
    return seq


def truncated_steps(steps: int, strength: float) -> int:
    """How many of ``steps`` DDIM steps a run at ``strength`` in (0, 1] makes (at least 1)."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength!r}")
    return max(1, round(steps * strength))


def start_level(
    schedule: NoiseSchedule, steps: int, strength: float, spacing: Literal["uniform", "quadratic"] = "uniform"
) -> float:
    """The noise level gamma at which a DDIM run of ``steps`` at ``strength`` starts."""
    seq = ddim_timesteps(schedule.T, steps, spacing)[: truncated_steps(steps, strength)]
    return float(schedule.gammas[seq[-1] + 1])


def ddim_sigma(abar_t: float, abar_prev: float, eta: float) -> float:
    """DDIM eq. 16: ``sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)``."""
    return eta * math.sqrt((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev))


def ddim_step(
    x_t: Tensor,
    eps: Tensor,
    abar_t: float,
    abar_prev: float,
    sigma: float = 0.0,
    noise: Tensor | None = None,
    clip_denoised: bool = True,
) -> tuple[Tensor, Tensor]:
    """One DDIM update (DDIM eq. 12); returns ``(x_prev, x0_hat)``. ``noise`` is needed when ``sigma > 0``."""
    x0 = predict_start_from_noise(x_t, abar_t, eps)  # "predicted x0"
    if clip_denoised:
        x0 = x0.clamp(-1.0, 1.0)
    direction = math.sqrt(max(1.0 - abar_prev - sigma**2, 0.0)) * eps  # "direction pointing to x_t"
    x_prev = math.sqrt(abar_prev) * x0 + direction
    if sigma > 0:
        if noise is None:
            raise ValueError("ddim_step with sigma > 0 needs a noise tensor")
        x_prev = x_prev + sigma * noise  # "random noise"
    return x_prev, x0


@torch.no_grad()
def ddim_sample(
    denoise: Denoiser,
    condition: Tensor | None,
    shape: Sequence[int],
    schedule: NoiseSchedule,
    *,
    steps: int = 50,
    eta: float = 0.0,
    spacing: Literal["uniform", "quadratic"] = "uniform",
    clip_denoised: bool = True,
    generator: torch.Generator | None = None,
    x_T: Tensor | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    strength: float = 1.0,
) -> Tensor:
    """DDIM sampling from ``x_T`` (drawn when not given) to x0; returns ``shape`` in ``dtype`` ([-1, 1] images).

    ``eta = 0`` is deterministic; ``eta = 1`` with ``steps = T`` is DDPM (same draws as :func:`ddpm_sample`).
    ``strength < 1`` runs only the last ``truncated_steps(steps, strength)`` steps: ``x_T`` is then the state at
    the first of them (e.g. a noised initial estimate, as in Chung et al. 2022, "Come-closer-diffuse-faster").
    ``clip_denoised`` clamps x0_hat to [-1, 1] at every step as SR3 does.
    """
    device = _device(device, condition, x_T)
    x = _initial(shape, x_T, generator, device, dtype)
    seq = ddim_timesteps(schedule.T, steps, spacing)
    if strength < 1.0:
        seq = seq[: truncated_steps(steps, strength)]
    pairs = list(zip(reversed(seq), reversed([-1, *seq[:-1]]), strict=True))
    for i, (t, s) in enumerate(pairs):
        abar_t, abar_prev = schedule.abar(t + 1), schedule.abar(s + 1)
        eps = denoise(x, _level(schedule, t + 1, x.shape[0], device), condition).to(dtype)
        sigma = ddim_sigma(abar_t, abar_prev, eta)
        noise = _randn(x.shape, generator, device, dtype) if sigma > 0 else None
        x, x0 = ddim_step(x, eps, abar_t, abar_prev, sigma, noise, clip_denoised)
        if callback is not None:
            callback({"i": i, "total": len(pairs), "t": t + 1, "x": x, "x0": x0})
    return x


@torch.no_grad()
def ddpm_sample(
    denoise: Denoiser,
    condition: Tensor | None,
    shape: Sequence[int],
    schedule: NoiseSchedule,
    *,
    clip_denoised: bool = True,
    generator: torch.Generator | None = None,
    x_T: Tensor | None = None,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Ancestral sampling over all T steps (DDPM Algorithm 2 in SR3's form): x0_hat from eps, optionally
    clamped, then ``x_{t-1} ~ q(x_{t-1} | x_t, x0_hat)`` (DDPM eq. 6-7); no noise is added at t = 1."""
    device = _device(device, condition, x_T)
    x = _initial(shape, x_T, generator, device, dtype)
    for i, t in enumerate(range(schedule.T, 0, -1)):
        eps = denoise(x, _level(schedule, t, x.shape[0], device), condition).to(dtype)
        x0 = predict_start_from_noise(x, schedule.abar(t), eps)
        if clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
        mean, variance = q_posterior(schedule, x0, x, t)
        x = mean + math.sqrt(variance) * _randn(x.shape, generator, device, dtype) if t > 1 else mean
        if callback is not None:
            callback({"i": i, "total": schedule.T, "t": t, "x": x, "x0": x0})
    return x


def _device(device: torch.device | str | None, condition: Tensor | None, x_T: Tensor | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    for ref in (condition, x_T):
        if ref is not None:
            return ref.device
    return torch.device("cpu")


def _randn(
    shape: Sequence[int], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    # Draw in float32 on the generator's device: the same seed gives the same noise on any target device/dtype.
    gen_device = generator.device if generator is not None else "cpu"
    return torch.randn(tuple(shape), generator=generator, device=gen_device).to(device=device, dtype=dtype)


def _initial(
    shape: Sequence[int],
    x_T: Tensor | None,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    if x_T is None:
        return _randn(shape, generator, device, dtype)
    if tuple(x_T.shape) != tuple(shape):
        raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected {tuple(shape)}")
    return x_T.to(device=device, dtype=dtype)


def _level(schedule: NoiseSchedule, t: int, batch: int, device: torch.device) -> Tensor:
    """The network's input noise level at 1-based timestep t: ``gammas[t] = sqrt(abar_t)``, shape (B,)."""
    return noise_levels(float(schedule.gammas[t]), batch, device)


def noise_levels(gamma: float, batch: int, device: torch.device) -> Tensor:
    """``gamma`` as the (B,) level tensor every sampler hands the denoiser.

    float64 (except on MPS, which has none): a denoiser that converts x0 or v predictions to eps needs
    ``sqrt(1 - gamma^2)``, which a float32 gamma near 1 does not determine (see diffusion.parameterisation).
    """
    level_dtype = torch.float32 if device.type == "mps" else torch.float64
    return torch.full((batch,), gamma, device=device, dtype=level_dtype)
