"""Euler / Heun / DPM-Solver++(2M): oracle recovery, Euler == DDIM, and orders of convergence on a Gaussian toy."""

from __future__ import annotations

import math

import pytest
import torch

from neurop_diff.diffusion.ksamplers import k_sample, sample_dpmpp_2m, sample_euler, sample_heun, sigma_grid
from neurop_diff.diffusion.sampling import ddim_sample
from neurop_diff.diffusion.schedule import make_schedule

SHAPE = (2, 3, 8, 8)
SAMPLERS = ("euler", "heun", "dpmpp_2m")


def _x0() -> torch.Tensor:
    return torch.rand(SHAPE, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 1.8 - 0.9


def _eps_of(x0_fn):
    """An eps-denoiser from an x0-function of (x_t, gamma)."""

    def denoise(x_t, gamma, condition):
        g = gamma.view(-1, 1, 1, 1).to(x_t.dtype)
        return (x_t - g * x0_fn(x_t, g)) / (1 - g**2).sqrt()

    return denoise


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("spacing", ["uniform", "karras"])
def test_an_oracle_denoiser_is_recovered(sampler, spacing):
    x0 = _x0()
    out = k_sample(sampler, _eps_of(lambda x_t, g: x0), None, SHAPE, make_schedule(), steps=6, spacing=spacing,
                   generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # fmt: skip
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-9)


def test_euler_is_ddim_with_eta_zero():
    # DDIM (eta 0) is the Euler method of the probability-flow ODE in sigma (Karras et al. 2022, sec. 4).
    schedule = make_schedule()

    def net(x_t, gamma, c):
        return 0.6 * torch.tanh(x_t) + 0.3 * gamma.view(-1, 1, 1, 1).to(x_t.dtype) * torch.cos(2 * x_t)

    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ddim = ddim_sample(
        net, None, SHAPE, schedule, steps=12, x_T=x_T, clip_denoised=False, dtype=torch.float64
    )
    euler = sample_euler(net, None, SHAPE, sigma_grid(schedule, 12, "uniform"), x_T=x_T, dtype=torch.float64)
    torch.testing.assert_close(euler, ddim, rtol=1e-9, atol=1e-9)


MU, TAU = 0.3, 0.5


def _gaussian_denoiser():
    """Data x0 ~ N(MU, TAU^2): the exact denoiser E[x0 | y] at every level."""

    def x0_fn(x_t, g):
        y, sig2 = x_t / g, (1 - g**2) / g**2
        return MU + TAU**2 / (TAU**2 + sig2) * (y - MU)

    return _eps_of(x0_fn)


@pytest.mark.parametrize(("fn", "order"), [(sample_euler, 1), (sample_heun, 2), (sample_dpmpp_2m, 2)])
def test_orders_of_convergence_on_a_gaussian(fn, order):
    denoise = _gaussian_denoiser()
    # A short range of levels keeps every sampler in its asymptotic regime.
    sigmas_of = lambda n: [float(s) for s in torch.logspace(math.log10(5), math.log10(0.05), n + 1)]  # noqa: E731
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    errors = []
    for n in (16, 32, 64):
        sig = sigmas_of(n)
        g = 1 / math.sqrt(1 + sig[0] ** 2)
        y_T = x_T / g
        out_y = fn(denoise, None, SHAPE, sig, x_T=x_T, dtype=torch.float64)
        # The exact flow: y(sigma) - MU = (y_T - MU) sqrt((TAU^2 + sigma^2) / (TAU^2 + sigma_max^2)); the run
        # ends at sig[-1] > 0, where the samplers return y itself.
        target = MU + (y_T - MU) * math.sqrt((TAU**2 + sig[-1] ** 2) / (TAU**2 + sig[0] ** 2))
        errors.append(float((out_y - target).abs().max()))
    rates = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(abs(r - order) < 0.35 for r in rates), (errors, rates)
