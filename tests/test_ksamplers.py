"""Euler / Heun / DPM-Solver++(2M) and the sampler table: oracle recovery, Euler == DDIM (eta 0), and orders of
convergence on a Gaussian toy, all over a clean-estimate denoiser ``D(x, sigma, condition)`` on the VE state."""

from __future__ import annotations

import math

import pytest
import torch

from neurop_diff.diffusion.ksamplers import (
    SAMPLERS,
    run_sampler,
    sample_dpmpp_2m,
    sample_euler,
    sample_heun,
)
from neurop_diff.diffusion.sampling import get_sigmas, sample_ddim
from neurop_diff.diffusion.schedule import make_schedule

SHAPE = (2, 3, 8, 8)


def _x0() -> torch.Tensor:
    return torch.rand(SHAPE, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 1.8 - 0.9


def test_the_sampler_table():
    assert set(SAMPLERS) == {"ddim", "ddpm", "euler", "heun", "dpmpp_2m"}
    with pytest.raises(ValueError, match="sampler must be one of"):
        run_sampler("lms", lambda x, s, c: x, torch.zeros(SHAPE), torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("spacing", ["leading", "trailing", "karras"])
def test_an_oracle_denoiser_is_recovered(sampler, spacing):
    x0 = _x0()
    schedule = make_schedule("linear", T=200, start=1e-4, end=0.1)
    sigmas = get_sigmas(
        schedule, schedule.T if sampler == "ddpm" else 6, "leading" if sampler == "ddpm" else spacing
    )
    x = x0 + sigmas[0] * torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    calls = []

    def oracle(x, sigma, condition):
        calls.append(float(sigma[0]))
        return x0

    out = run_sampler(sampler, oracle, x, sigmas, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-9)
    n = len(sigmas) - 1
    assert len(calls) == (2 * n - 1 if sampler == "heun" else n)  # Heun: a second call but on the last step


def test_euler_is_ddim_with_eta_zero():
    # DDIM (eta 0, Song et al. 2021 eq. 12) is the Euler method of the probability-flow ODE in sigma (Karras et
    # al. 2022, sec. 4): the VP DDIM update x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s) eps_hat, run here as in the
    # old eps sampler, equals Euler's x + (sigma_next - sigma) (x - D) / sigma on x = x_t / sqrt(abar).
    schedule = make_schedule()

    def net(x, sigma, c):
        return 0.6 * torch.tanh(x / (1 + sigma.view(-1, 1, 1, 1) ** 2).sqrt()) + 0.3 * torch.cos(2 * x)

    sigmas = get_sigmas(schedule, 12, "trailing")
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # VP
    x_vp = x_T
    for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
        g, g_next = 1 / math.sqrt(1 + s * s), 1 / math.sqrt(1 + s_next * s_next)
        x0 = net(x_vp / g, torch.full((SHAPE[0],), s, dtype=torch.float64), None)
        eps = (x_vp - g * x0) / math.sqrt(1 - g * g)
        x_vp = g_next * x0 + math.sqrt(1 - g_next * g_next) * eps
    x = x_T * math.sqrt(1 + float(sigmas[0]) ** 2)
    euler = sample_euler(net, x, sigmas)
    torch.testing.assert_close(euler, x_vp, rtol=0, atol=1e-10)
    assert torch.equal(euler, sample_ddim(net, x, sigmas, eta=0.0))
    assert euler.abs().mean() > 0.1


MU, TAU = 0.3, 0.5


def _gaussian_denoiser(x, sigma, condition):
    """Data x0 ~ N(MU, TAU^2): the exact denoiser E[x0 | x0 + sigma eps = x] at every level."""
    s2 = sigma.view(-1, 1, 1, 1).to(x.dtype) ** 2
    return MU + TAU**2 / (TAU**2 + s2) * (x - MU)


@pytest.mark.parametrize(("fn", "order"), [(sample_euler, 1), (sample_heun, 2), (sample_dpmpp_2m, 2)])
def test_orders_of_convergence_on_a_gaussian(fn, order):
    # A short range of levels keeps every sampler in its asymptotic regime.
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    errors = []
    for n in (16, 32, 64):
        sig = torch.logspace(math.log10(5), math.log10(0.05), n + 1, dtype=torch.float64)
        out = fn(_gaussian_denoiser, x_T, sig)
        # The exact flow: x(sigma) - MU = (x_T - MU) sqrt((TAU^2 + sigma^2) / (TAU^2 + sigma_max^2)); the run
        # ends at sig[-1] > 0.
        s0, s1 = float(sig[0]), float(sig[-1])
        target = MU + (x_T - MU) * math.sqrt((TAU**2 + s1**2) / (TAU**2 + s0**2))
        errors.append(float((out - target).abs().max()))
    rates = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(abs(r - order) < 0.35 for r in rates), (errors, rates)
