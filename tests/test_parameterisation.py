"""eps / x0 / v / edm: closed-form conversions, loss weights, and every sampler fed by every parameterisation."""

from __future__ import annotations

import pytest
import torch

from neurop_diff.diffusion.ksamplers import run_sampler
from neurop_diff.diffusion.parameterisation import (
    eps_from_x0,
    loss_weight,
    to_eps,
    to_x0,
    training_target,
)
from neurop_diff.diffusion.sampling import get_sigmas
from neurop_diff.diffusion.schedule import gamma_to_sigma, make_schedule, q_sample, sigma_to_gamma

PREDICTIONS = ("eps", "x0", "v", "edm")


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


@pytest.mark.parametrize("sigma_data", [0.1, 0.5, 2.0])
def test_edm_is_karras_preconditioning_in_sr3_levels(sigma_data):
    """x0 = c_skip x~ + c_out F on x~ = x_t / gamma = x0 + (sigma / gamma) eps (Karras et al. 2022, Table 1)."""
    x0, eps, gamma, x_t = _case(3)
    x0 = x0 * sigma_data  # data of std ~sigma_data: the target F then has unit scale at every level
    x_t = q_sample(x0, gamma, eps)
    g = gamma.view(-1, 1, 1, 1)
    sig = (1 - g**2).sqrt() / g  # Karras' sigma of x~
    c_skip = sigma_data**2 / (sig**2 + sigma_data**2)
    c_out = sig * sigma_data / (sig**2 + sigma_data**2).sqrt()
    f = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(to_x0("edm", f, x_t, gamma, sigma_data), c_skip * x_t / g + c_out * f)
    target = training_target("edm", x0, eps, gamma, sigma_data)
    torch.testing.assert_close(target, (x0 - c_skip * x_t / g) / c_out)
    assert target.std(dim=(1, 2, 3)).min() > 0.3 and target.std(dim=(1, 2, 3)).max() < 3  # unit scale
    # min_snr: the x0-space weight, F errors being c_out times smaller in x0
    w0 = loss_weight("x0", gamma, "min_snr").double()
    w = loss_weight("edm", gamma, "min_snr", sigma_data=sigma_data).double()
    torch.testing.assert_close(w, w0 * c_out.flatten() ** 2, rtol=1e-5, atol=0)


def test_edm_with_unit_data_std_is_minus_v_and_passes_x_t_at_low_noise():
    x0, eps, gamma, x_t = _case(5)
    v = training_target("v", x0, eps, gamma)
    torch.testing.assert_close(training_target("edm", x0, eps, gamma, 1.0), -v)
    torch.testing.assert_close(to_x0("edm", -v, x_t, gamma, 1.0), to_x0("v", v, x_t, gamma))
    # a zero output (an untrained residual model) returns x_t / gamma at low noise and ~0 at high noise
    zero = torch.zeros_like(x0)
    low, high = torch.tensor([1 - 1e-9], dtype=torch.float64), torch.tensor([1e-3], dtype=torch.float64)
    torch.testing.assert_close(to_x0("edm", zero[:1], x_t[:1], low, 0.1), x_t[:1] / low, atol=1e-4, rtol=0)
    assert to_x0("edm", zero[:1], x_t[:1], high, 0.1).abs().max() < 1e-4
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="sigma_data must be > 0"):
            to_x0("edm", zero, x_t, gamma, bad)


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


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_l1_weights_are_the_square_root_of_the_l2_weights(prediction):
    # An L1 loss scales with the error, not its square: the weight that makes it the x0-space objective is the
    # square root of the L2 one (the old weights were L2 weights applied to the default L1 loss).
    gamma = torch.tensor([0.05, 0.3, 0.9, 0.99, 0.9999], dtype=torch.float64)
    for weighting in ("none", "min_snr", "edm"):
        l2 = loss_weight(prediction, gamma, weighting, sigma_data=0.2, loss="l2").double()
        l1 = loss_weight(prediction, gamma, weighting, sigma_data=0.2, loss="l1").double()
        torch.testing.assert_close(l1, l2.sqrt(), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="loss must be 'l1' or 'l2'"):
        loss_weight(prediction, gamma, "min_snr", loss="huber")  # type: ignore[arg-type]


def test_l1_min_snr_eps_loss_is_the_min_snr_l1_x0_loss():
    """Per item: w_l1 * mean|eps_hat - eps| = sqrt(min(SNR, 5)) * mean|x0_hat - x0| (the eps error maps onto x0
    times the VE sigma = 1 / sqrt(SNR))."""
    x0, eps, gamma, x_t = _case(6)
    eps_hat = eps + 0.3 * torch.randn(
        x0.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64
    )
    x0_hat = to_x0("eps", eps_hat, x_t, gamma)
    snr = gamma**2 / (1 - gamma**2)
    weighted = loss_weight("eps", gamma, "min_snr", loss="l1").double() * (eps_hat - eps).abs().mean(
        (1, 2, 3)
    )
    expected = snr.clamp(max=5).sqrt() * (x0_hat - x0).abs().mean((1, 2, 3))
    torch.testing.assert_close(weighted, expected, rtol=1e-6, atol=0)
    # the L2 weight on an L1 loss (the old behaviour) is off by sqrt(SNR) / sqrt(min(SNR, 5)) or 1 / sigma
    old = loss_weight("eps", gamma, "min_snr", loss="l2").double() * (eps_hat - eps).abs().mean((1, 2, 3))
    assert not torch.allclose(old, expected, rtol=0.1)


@pytest.mark.parametrize("sigma_data", [0.1, 0.5])
def test_edm_weighting_is_lambda_sigma_and_one_on_the_edm_target(sigma_data):
    """Karras et al. 2022, eq. 8 and Table 1: lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 in x0 terms, which
    times c_out^2 = (sigma sd)^2 / (sigma^2 + sd^2) is 1 on the F target."""
    gamma = torch.tensor([0.02, 0.5, 0.95, 0.9999], dtype=torch.float64)
    sig = gamma_to_sigma(gamma)
    lam = (sig**2 + sigma_data**2) / (sig * sigma_data) ** 2
    c_out = sig * sigma_data / (sig**2 + sigma_data**2).sqrt()
    w_x0 = loss_weight("x0", gamma, "edm", sigma_data=sigma_data).double()
    torch.testing.assert_close(w_x0, lam, rtol=1e-6, atol=0)
    w_edm = loss_weight("edm", gamma, "edm", sigma_data=sigma_data).double()
    torch.testing.assert_close(w_edm, lam * c_out**2, rtol=1e-6, atol=0)
    torch.testing.assert_close(w_edm, torch.ones(4, dtype=torch.float64), rtol=1e-6, atol=0)
    torch.testing.assert_close(
        loss_weight("edm", gamma, "edm", sigma_data=sigma_data, loss="l1"), torch.ones(4)
    )


def _oracle(prediction, x0):
    """A clean-estimate denoiser (VE state, VE levels) that knows x0 and answers through the network output of
    the given parameterisation, converted as NeurOpDiff converts it."""

    def denoiser(x, sigma, condition):
        g = sigma_to_gamma(sigma)
        x_t = g.view(-1, 1, 1, 1).to(x.dtype) * x  # SR3's VP state
        eps = eps_from_x0(x0.to(x.dtype), x_t, g)
        return to_x0(prediction, training_target(prediction, x0.to(x.dtype), eps, g), x_t, g)

    return denoiser


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("sampler", ["ddim", "ddim_eta1", "ddpm", "heun", "dpmpp_2m"])
def test_every_sampler_recovers_x0_from_every_parameterisation(prediction, sampler):
    x0, *_ = _case(2)
    schedule = make_schedule("linear", T=40, start=1e-3, end=0.2)
    sigmas = get_sigmas(schedule, schedule.T if sampler == "ddpm" else 10, "leading")
    x = x0 + sigmas[0] * torch.randn(
        x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    name, eta = ("ddim", 1.0) if sampler == "ddim_eta1" else (sampler, 0.0)
    out = run_sampler(
        name, _oracle(prediction, x0), x, sigmas, eta=eta, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-8)
