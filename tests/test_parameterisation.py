"""eps / x0 / v: closed-form conversions, loss weights, and every sampler fed by every parameterisation."""

from __future__ import annotations

import pytest
import torch

from neurop_diff.diffusion.parameterisation import (
    eps_from_x0,
    loss_weight,
    to_eps,
    to_x0,
    training_target,
)
from neurop_diff.diffusion.sampling import ddim_sample, ddpm_sample
from neurop_diff.diffusion.schedule import make_schedule, q_sample

PREDICTIONS = ("eps", "x0", "v")


def _case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(3, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(3, 3, 8, 8, generator=g, dtype=torch.float64)
    gamma = torch.tensor([0.05, 0.6, 0.999], dtype=torch.float64)
    return x0, eps, gamma, q_sample(x0, gamma, eps)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_the_exact_target_converts_back_to_x0_and_eps(prediction):
    x0, eps, gamma, x_t = _case()
    out = training_target(prediction, x0, eps, gamma)
    torch.testing.assert_close(to_x0(prediction, out, x_t, gamma), x0, rtol=0, atol=1e-10)
    torch.testing.assert_close(to_eps(prediction, out, x_t, gamma), eps, rtol=0, atol=1e-9)


def test_v_is_the_rotation_of_salimans_and_ho():
    x0, eps, gamma, x_t = _case(1)
    v = training_target("v", x0, eps, gamma)
    g = gamma.view(-1, 1, 1, 1)
    s = (1 - g**2).sqrt()
    torch.testing.assert_close(v, g * eps - s * x0)
    # (x_t, v) is an orthonormal rotation of (x0, eps): norms are kept item by item.
    torch.testing.assert_close(x_t**2 + v**2, x0**2 + eps**2)
    torch.testing.assert_close(eps_from_x0(x0, x_t, gamma), eps)


def test_scalar_levels_and_bad_names():
    x0, eps, _, _ = _case()
    x_t = q_sample(x0, 0.5, eps)
    torch.testing.assert_close(to_x0("v", training_target("v", x0, eps, 0.5), x_t, 0.5), x0)
    with pytest.raises(ValueError, match="prediction must be one of"):
        to_x0("score", x0, x_t, 0.5)


def test_min_snr_weights_are_one_objective_in_three_forms():
    # Min-SNR: the x0-space weight min(SNR, 5); eps and v losses are SNR and SNR+1 times an x0 loss.
    gamma = torch.tensor([0.1, 0.5, 0.9, 0.99])
    snr = gamma.double() ** 2 / (1 - gamma.double() ** 2)
    w0 = loss_weight("x0", gamma, "min_snr").double()
    torch.testing.assert_close(w0, snr.clamp(max=5))
    torch.testing.assert_close(loss_weight("eps", gamma, "min_snr").double() * snr, w0, rtol=1e-6, atol=0)
    torch.testing.assert_close(loss_weight("v", gamma, "min_snr").double() * (snr + 1), w0, rtol=1e-6, atol=0)
    assert torch.equal(loss_weight("eps", gamma), torch.ones(4))
    with pytest.raises(ValueError, match="weighting"):
        loss_weight("eps", gamma, "p2")


def _oracle(prediction, x0):
    """A denoiser that knows x0 and answers in the given parameterisation, converted for the sampler."""

    def denoise(x_t, gamma, condition):
        g = gamma.to(x_t.dtype)
        eps = eps_from_x0(x0.to(x_t.dtype), x_t, g)
        return to_eps(prediction, training_target(prediction, x0.to(x_t.dtype), eps, g), x_t, g)

    return denoise


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("sampler", ["ddim", "ddim_eta1", "ddpm"])
def test_every_sampler_recovers_x0_from_every_parameterisation(prediction, sampler):
    x0, *_ = _case(2)
    schedule = make_schedule("linear", T=40, start=1e-3, end=0.2)
    kw = {"generator": torch.Generator().manual_seed(0), "dtype": torch.float64, "clip_denoised": False}
    if sampler == "ddpm":
        out = ddpm_sample(_oracle(prediction, x0), None, x0.shape, schedule, **kw)
    else:
        eta = 1.0 if sampler == "ddim_eta1" else 0.0
        out = ddim_sample(_oracle(prediction, x0), None, x0.shape, schedule, steps=10, eta=eta, **kw)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-8)
