"""eps / x0 / v / edm: closed-form conversions, loss weights, and every sampler fed by every parameterisation."""

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
