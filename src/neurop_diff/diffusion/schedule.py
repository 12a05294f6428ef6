"""Noise schedules and the forward process of SR3-style diffusion with a continuous noise level.

Notation (DDPM, Ho et al. 2020): ``alpha_t = 1 - beta_t``, ``abar_t = prod_{i<=t} alpha_i`` for the 1-based
timestep ``t = 1..T``. SR3 (Saharia et al. 2021) and WaveGrad (Chen et al. 2020) condition the network on the
noise level ``gamma = sqrt(abar)`` itself rather than on ``t``; ``gammas = sqrt([1, abar_1, ..., abar_T])``
(length T + 1, decreasing from 1) is the table of level boundaries.

Everything here is pure: functions of tensors returning tensors; tables are float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "EDM_P_MEAN",
    "EDM_P_STD",
    "LevelSampling",
    "NoiseSchedule",
    "broadcast_per_item",
    "cosine_betas",
    "gamma_to_sigma",
    "level_dtype",
    "linear_betas",
    "make_schedule",
    "predict_start_from_noise",
    "q_posterior",
    "q_sample",
    "sample_levels",
    "sigma_to_gamma",
]


def linear_betas(T: int = 2000, start: float = 1e-6, end: float = 1e-2) -> Tensor:
    """Linearly spaced betas from ``start`` to ``end`` (DDPM sec. 4; SR3 uses 1e-6..1e-2 over 2000). (T,) float64."""
    _check_T(T)
    if not 0.0 < start <= end < 1.0:
        raise ValueError(f"linear_betas needs 0 < start <= end < 1, got start={start}, end={end}")
    return torch.linspace(start, end, T, dtype=torch.float64)


def cosine_betas(T: int = 2000, s: float = 0.008) -> Tensor:
    """Cosine schedule of Nichol & Dhariwal 2021 (eq. 17): ``abar(t) = cos^2((t/T + s)/(1 + s) * pi/2)``.

    Betas are clipped at 0.999 as in the paper. Returns (T,) float64.
    """
    _check_T(T)
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """Tables of a discrete schedule, all float64.

    ``betas``, ``alphas``, ``alphas_cumprod``: (T,), index ``t - 1`` holds timestep ``t``.
    ``gammas``: (T + 1,) ``sqrt([1, abar_1, ..., abar_T])``; ``gammas[t]`` is the noise level of timestep ``t``.
    """

    betas: Tensor
    alphas: Tensor
    alphas_cumprod: Tensor
    gammas: Tensor

    @property
    def T(self) -> int:
        return int(self.betas.shape[0])

    @classmethod
    def from_betas(cls, betas: Tensor) -> NoiseSchedule:
        betas = betas.to(torch.float64)
        if betas.ndim != 1 or betas.numel() == 0:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must lie in (0, 1)")
        alphas = 1.0 - betas
        abar = torch.cumprod(alphas, dim=0)
        gammas = torch.cat([torch.ones(1, dtype=torch.float64), abar]).sqrt()
        return cls(betas=betas, alphas=alphas, alphas_cumprod=abar, gammas=gammas)

    def abar(self, t: int) -> float:
        """``abar_t`` for the 1-based timestep ``t`` in 0..T (``abar_0 = 1``)."""
        if not 0 <= t <= self.T:
            raise ValueError(f"timestep t={t} outside 0..{self.T}")
        return 1.0 if t == 0 else float(self.alphas_cumprod[t - 1])


def make_schedule(
    kind: Literal["linear", "cosine"] = "linear", T: int = 2000, start: float = 1e-6, end: float = 1e-2
) -> NoiseSchedule:
    """The schedule of method.md sec. 3 by default (linear 1e-6..1e-2, T = 2000); ``start``/``end`` are linear-only."""
    if kind == "linear":
        return NoiseSchedule.from_betas(linear_betas(T, start, end))
    if kind == "cosine":
        return NoiseSchedule.from_betas(cosine_betas(T))
    raise ValueError(f"unknown schedule kind {kind!r}; expected 'linear' or 'cosine'")


LevelSampling = Literal["sr3", "lognormal"]
#: EDM's training levels (Karras et al. 2022, Table 1): ln(sigma) ~ N(-1.2, 1.2^2) for data of std 0.5.
EDM_P_MEAN, EDM_P_STD, EDM_SIGMA_DATA = -1.2, 1.2, 0.5


def level_dtype(device: torch.device | str | None) -> torch.dtype:
    """float64 for noise levels (float32 on MPS, which has none): sqrt(1 - gamma^2) near gamma = 1 needs it."""
    return torch.float32 if torch.device(device or "cpu").type == "mps" else torch.float64


def gamma_to_sigma(gamma: Tensor) -> Tensor:
    """VE level ``sigma = sqrt(1 - gamma^2) / gamma`` of SR3 levels ``gamma`` (``x_t / gamma = x0 + sigma eps``)."""
    return (1 - gamma * gamma).clamp_min(0).sqrt() / gamma


def sigma_to_gamma(sigma: Tensor) -> Tensor:
    """SR3 level ``gamma = 1 / sqrt(1 + sigma^2)`` of VE levels ``sigma``."""
    return (1 + sigma * sigma).rsqrt()


def sample_levels(
    schedule: NoiseSchedule,
    batch_size: int,
    kind: LevelSampling = "sr3",
    *,
    p_mean: float = EDM_P_MEAN,
    p_std: float = EDM_P_STD,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Training levels gamma (B,), one per image, float64 (float32 on MPS).

    ``sr3`` (SR3 sec. 2.4, WaveGrad sec. 3.1, drawn per image rather than per batch): ``t ~ U{1..T}``, then
    ``gamma ~ U(gammas[t-1], gammas[t])``. ``lognormal`` (Karras et al. 2022, sec. 5): ``ln(sigma) ~ N(p_mean,
    p_std^2)`` for the VE level ``sigma``, clipped to the schedule's range ``[sigma(gammas[1]), sigma(gammas[T])]``
    (the levels the samplers visit). Random numbers come from ``generator`` (on its device), then move to ``device``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gen_device = generator.device if generator is not None else "cpu"
    if kind == "sr3":
        t = torch.randint(1, schedule.T + 1, (batch_size,), generator=generator, device=gen_device).cpu()
        u = torch.rand(batch_size, generator=generator, device=gen_device, dtype=torch.float64).cpu()
        hi, lo = schedule.gammas[t - 1], schedule.gammas[t]
        gamma = hi + (lo - hi) * u
    elif kind == "lognormal":
        if not p_std > 0:
            raise ValueError(f"p_std must be > 0, got {p_std!r}")
        z = torch.randn(batch_size, generator=generator, device=gen_device, dtype=torch.float64).cpu()
        ends = gamma_to_sigma(schedule.gammas[[1, -1]])
        sigma = (p_mean + p_std * z).exp().clamp(float(ends[0]), float(ends[1]))
        gamma = sigma_to_gamma(sigma)
    else:
        raise ValueError(f"level_sampling must be one of {LevelSampling.__args__}, got {kind!r}")
    return gamma.to(device=device or "cpu", dtype=level_dtype(device))


def broadcast_per_item(v: Tensor | float, like: Tensor) -> Tensor | float:
    """Broadcast a (B,) tensor over the trailing dims of ``like``; floats pass through."""
    if isinstance(v, Tensor):
        if v.ndim == 0:
            return v
        if v.ndim != 1 or v.shape[0] != like.shape[0]:
            raise ValueError(
                f"expected a ({like.shape[0]},) tensor per batch item, got shape {tuple(v.shape)}"
            )
        return v.view(-1, *([1] * (like.ndim - 1)))
    return v


def q_sample(x0: Tensor, gamma: Tensor | float, noise: Tensor) -> Tensor:
    """Forward process at a continuous level (SR3 eq. 4): ``x_t = gamma x0 + sqrt(1 - gamma^2) noise``.

    ``x0``, ``noise``: (B, ...); ``gamma``: (B,) or a scalar in [0, 1].
    """
    if noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
    g = broadcast_per_item(gamma, x0)
    return g * x0 + (1 - g**2) ** 0.5 * noise


def predict_start_from_noise(x_t: Tensor, abar_t: Tensor | float, eps: Tensor) -> Tensor:
    """x0 implied by a noise prediction (DDPM eq. 15, DDIM eq. 12 "predicted x0"):
    ``x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``. ``abar_t``: (B,) or scalar in (0, 1]."""
    a = broadcast_per_item(abar_t, x_t)
    return (x_t - (1 - a) ** 0.5 * eps) / a**0.5


def q_posterior(schedule: NoiseSchedule, x0: Tensor, x_t: Tensor, t: int) -> tuple[Tensor, float]:
    """Mean and variance of ``q(x_{t-1} | x_t, x0)`` (DDPM eq. 6-7) for the 1-based timestep ``t`` in 1..T.

    ``mean = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t``,
    ``variance = beta_t (1 - abar_{t-1}) / (1 - abar_t)`` (0 at t = 1). Coefficients are computed in float64.
    """
    if not 1 <= t <= schedule.T:
        raise ValueError(f"q_posterior needs a timestep in 1..{schedule.T}, got t={t}")
    beta, alpha = float(schedule.betas[t - 1]), float(schedule.alphas[t - 1])
    abar, abar_prev = schedule.abar(t), schedule.abar(t - 1)
    coef_x0 = math.sqrt(abar_prev) * beta / (1 - abar)
    coef_xt = math.sqrt(alpha) * (1 - abar_prev) / (1 - abar)
    variance = beta * (1 - abar_prev) / (1 - abar)
    return coef_x0 * x0 + coef_xt * x_t, variance


def _check_T(T: int) -> None:
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"number of timesteps T must be a positive int, got {T!r}")
