"""What the network predicts: eps, x0, v or EDM's preconditioned output, and the one conversion layer between them.

At the continuous noise level ``gamma = sqrt(abar)`` of SR3 (``sigma = sqrt(1 - gamma^2)``) the forward process
is ``x_t = gamma x0 + sigma eps``. Three targets describe the same denoiser:

* ``eps``: the noise (DDPM, Ho et al. 2020; SR3 and the NeurOp-Diff authors);
* ``x0``: the clean image (DDPM sec. 3.2's alternative; SRDiff/ResShift-style SR models);
* ``v = gamma eps - sigma x0`` (Salimans & Ho 2022, "progressive distillation", sec. 4), which gives
  ``x0 = gamma x_t - sigma v`` and ``eps = sigma x_t + gamma v``;
* ``edm``: the preconditioned output ``F`` of Karras et al. 2022 ("Elucidating the design space", sec. 5, Table 1)
  for data of std ``sigma_data``: ``x0 = c_skip x_t / gamma + c_out F`` with, in SR3's levels,
  ``c_skip x_t / gamma = sigma_data^2 gamma x_t / (sigma^2 + gamma^2 sigma_data^2)`` and
  ``c_out = sigma sigma_data / sqrt(sigma^2 + gamma^2 sigma_data^2)``, so the target is
  ``F = (sigma x0 - sigma_data^2 gamma eps) / (sigma_data sqrt(sigma^2 + gamma^2 sigma_data^2))`` (unit scale at
  every level). At low noise the estimate is ``x_t`` itself (the network only corrects it), at high noise
  ``sigma_data F``; ``sigma_data = 1`` is ``-v``. Small ``sigma_data`` suits a small target such as a residual.

Samplers consume the clean estimate (``diffusion.sampling``); ``models.neuropdiff`` converts any prediction with
:func:`to_x0`. Everything is pure.
``gamma`` is a (B,) tensor or a float in (0, 1]; coefficients are computed in its precision (the samplers pass
float64 levels) and applied in the images' dtype.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from neurop_diff.diffusion.schedule import broadcast_per_item

__all__ = [
    "LossWeighting",
    "Prediction",
    "check_sigma_data",
    "eps_from_x0",
    "loss_weight",
    "to_eps",
    "to_x0",
    "training_target",
]

Prediction = Literal["eps", "x0", "v", "edm"]
LossWeighting = Literal["none", "min_snr", "edm"]

_PREDICTIONS = ("eps", "x0", "v", "edm")


def _check(prediction: str) -> None:
    if prediction not in _PREDICTIONS:
        raise ValueError(f"prediction must be one of {_PREDICTIONS}, got {prediction!r}")


def _gs(gamma: Tensor | float, like: Tensor) -> tuple[Tensor | float, Tensor | float]:
    # sigma from gamma in gamma's own precision (float64 from the samplers): near gamma = 1, 1 - gamma^2 from a
    # float32 gamma is off by ~10% at SR3's first level (abar = 1 - 1e-6), and eps = (x_t - gamma x0) / sigma
    # would carry that error into every sample.
    g = broadcast_per_item(gamma, like)
    if isinstance(g, Tensor):
        s = (1 - g * g).clamp_min(0).sqrt()
        return g.to(like.dtype), s.to(like.dtype)
    return g, max(1.0 - g * g, 0.0) ** 0.5


def training_target(
    prediction: Prediction, x0: Tensor, eps: Tensor, gamma: Tensor | float, sigma_data: float = 0.5
) -> Tensor:
    """The regression target of the network for clean ``x0`` and noise ``eps`` at level ``gamma``
    (``sigma_data``: the ``edm`` preconditioning's data std, ignored otherwise)."""
    _check(prediction)
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    g, s = _gs(gamma, x0)
    if prediction == "edm":
        d = check_sigma_data(sigma_data)
        return (s * x0 - d * d * g * eps) / (d * (s * s + g * g * d * d) ** 0.5)
    return g * eps - s * x0


def to_x0(
    prediction: Prediction, out: Tensor, x_t: Tensor, gamma: Tensor | float, sigma_data: float = 0.5
) -> Tensor:
    """The clean-image estimate implied by the network output ``out`` for ``x_t`` at level ``gamma``.

    From eps: ``(x_t - sigma eps) / gamma`` (DDIM eq. 12 "predicted x0"); from v: ``gamma x_t - sigma v``;
    from edm: ``c_skip x_t / gamma + c_out F`` (module docstring).
    """
    _check(prediction)
    if prediction == "x0":
        return out
    g, s = _gs(gamma, x_t)
    if prediction == "eps":
        return (x_t - s * out) / g
    if prediction == "edm":
        d = check_sigma_data(sigma_data)
        norm = s * s + g * g * d * d
        return (d * d * g) / norm * x_t + (s * d) / norm**0.5 * out
    return g * x_t - s * out


def check_sigma_data(sigma_data: float) -> float:
    """``sigma_data`` as a float, or a ValueError naming it when it is not > 0."""
    if not sigma_data > 0:
        raise ValueError(f"sigma_data must be > 0 (the edm target's data std), got {sigma_data!r}")
    return float(sigma_data)


def eps_from_x0(x0: Tensor, x_t: Tensor, gamma: Tensor | float) -> Tensor:
    """The noise that explains ``x_t`` given ``x0``: ``(x_t - gamma x0) / sigma`` (needs gamma < 1)."""
    g, s = _gs(gamma, x_t)
    return (x_t - g * x0) / s


def to_eps(
    prediction: Prediction, out: Tensor, x_t: Tensor, gamma: Tensor | float, sigma_data: float = 0.5
) -> Tensor:
    """The noise estimate implied by ``out``; from v: ``sigma x_t + gamma v`` (exact, no division)."""
    _check(prediction)
    if prediction == "eps":
        return out
    if prediction in ("x0", "edm"):
        return eps_from_x0(to_x0(prediction, out, x_t, gamma, sigma_data), x_t, gamma)
    g, s = _gs(gamma, x_t)
    return s * x_t + g * out


def loss_weight(
    prediction: Prediction,
    gamma: Tensor,
    weighting: LossWeighting = "none",
    snr_gamma: float = 5.0,
    sigma_data: float = 0.5,
    loss: Literal["l1", "l2"] = "l2",
) -> Tensor:
    """Per-item loss weights (B,) float32 for the chosen target and loss.

    A weighting is stated as an x0-space L2 weight ``w0`` and expressed for the target through the squared factor
    ``c^2`` by which an error in the target maps onto x0 (``VE sigma^2`` for eps, ``sigma^2 / (1 + sigma^2)`` for
    v, 1 for x0, ``c_out^2 = sigma^2 sigma_data^2 / (sigma^2 + sigma_data^2)`` for edm): ``w = w0 c^2`` for L2.
    An L1 loss scales with the error, not its square, so its weight is ``sqrt(w0 c^2)``.

    ``none``: 1. ``min_snr`` (Hang et al. 2023): ``w0 = min(SNR, snr_gamma)``, ``SNR = gamma^2 / (1 - gamma^2) =
    1 / sigma^2``. ``edm`` (Karras et al. 2022, eq. 8 and Table 1): ``w0 = lambda(sigma) = (sigma^2 +
    sigma_data^2) / (sigma sigma_data)^2``, which is 1 on EDM's own target.
    """
    _check(prediction)
    if weighting == "none":
        return torch.ones_like(gamma, dtype=torch.float32)
    if weighting not in LossWeighting.__args__:
        raise ValueError(f"loss weighting must be one of {LossWeighting.__args__}, got {weighting!r}")
    if loss not in ("l1", "l2"):
        raise ValueError(f"loss must be 'l1' or 'l2', got {loss!r}")
    g = gamma.to(torch.float64)
    sigma2 = ((1 - g * g) / (g * g)).clamp_min(1e-24)  # VE sigma^2 = 1 / SNR
    d2 = check_sigma_data(sigma_data) ** 2
    w0 = (1 / sigma2).clamp(max=snr_gamma) if weighting == "min_snr" else (sigma2 + d2) / (sigma2 * d2)
    factor = {"x0": torch.ones_like(sigma2), "eps": sigma2, "v": sigma2 / (1 + sigma2),
              "edm": sigma2 * d2 / (sigma2 + d2)}[prediction]  # fmt: skip
    w = w0 * factor
    return (w.sqrt() if loss == "l1" else w).float()
