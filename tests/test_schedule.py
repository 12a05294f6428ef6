"""Schedules and the forward process against closed forms computed independently (numpy, float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neurop_diff.diffusion.schedule import (
    cosine_betas,
    linear_betas,
    make_schedule,
    predict_start_from_noise,
    q_posterior,
    q_sample,
    sample_gamma,
)


def test_linear_schedule_tables():
    sched = make_schedule("linear", T=2000, start=1e-6, end=1e-2)
    betas = np.linspace(1e-6, 1e-2, 2000)
    np.testing.assert_allclose(sched.betas.numpy(), betas, rtol=1e-12)
    assert sched.betas.dtype == sched.gammas.dtype == torch.float64
    assert sched.T == 2000 and sched.gammas.shape == (2001,) and sched.alphas_cumprod.shape == (2000,)
    abar = np.cumprod(1 - betas)
    np.testing.assert_allclose(sched.alphas_cumprod.numpy(), abar, rtol=1e-12)
    np.testing.assert_allclose(sched.gammas.numpy(), np.sqrt(np.concatenate([[1.0], abar])), rtol=1e-12)
    assert sched.abar(0) == 1.0 and sched.abar(2000) == pytest.approx(abar[-1], rel=1e-12)
    assert abar[-1] == pytest.approx(4.386e-5, rel=1e-3)  # SR3's schedule ends almost at pure noise


def test_cosine_betas_follow_the_cosine_abar():
    T, s = 100, 0.008
    betas = cosine_betas(T, s)
    abar = np.cumprod(1 - betas.numpy())
    f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * np.pi / 2) ** 2
    expected = f[1:] / f[0]
    np.testing.assert_allclose(abar[:-5], expected[:-5], rtol=1e-10)  # the last betas are clipped at 0.999
    assert betas.max() <= 0.999 and betas.dtype == torch.float64
    assert make_schedule("cosine", T=T).betas.equal(betas)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="unknown schedule kind 'sigmoid'"):
        make_schedule("sigmoid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="start <= end"):
        linear_betas(10, start=0.1, end=0.01)
    with pytest.raises(ValueError, match="positive int"):
        linear_betas(0)
    with pytest.raises(ValueError, match=r"1\.\.10"):
        q_posterior(make_schedule(T=10), torch.zeros(1), torch.zeros(1), 0)


def test_sample_gamma_one_timestep_per_batch():
    sched = make_schedule(T=8, start=0.05, end=0.3)  # wide, well separated intervals
    g = sched.gammas
    seen = set()
    for seed in range(40):
        gamma = sample_gamma(sched, 16, generator=torch.Generator().manual_seed(seed))
        assert gamma.shape == (16,) and gamma.dtype == torch.float32
        hits = [t for t in range(1, 9) if bool(((gamma >= g[t] - 1e-6) & (gamma <= g[t - 1] + 1e-6)).all())]
        assert len(hits) == 1  # every item within [gammas[t], gammas[t-1]] of one shared t
        seen.add(hits[0])
    assert len(seen) >= 6  # t varies between batches
    a = sample_gamma(sched, 5, generator=torch.Generator().manual_seed(3))
    assert a.equal(sample_gamma(sched, 5, generator=torch.Generator().manual_seed(3)))


def test_sample_gamma_is_uniform_within_the_interval():
    sched = make_schedule(T=1, start=0.5, end=0.5)  # a single interval [sqrt(0.5), 1]
    gamma = sample_gamma(sched, 40000, generator=torch.Generator().manual_seed(0)).double()
    lo, hi = math.sqrt(0.5), 1.0
    assert gamma.min() >= lo - 1e-6 and gamma.max() <= hi + 1e-6
    assert float(gamma.mean()) == pytest.approx((lo + hi) / 2, abs=3e-3)
    assert float(gamma.var()) == pytest.approx((hi - lo) ** 2 / 12, rel=0.03)


def test_q_sample_moments():
    x0 = torch.tensor([0.4, -0.7]).view(2, 1, 1, 1).expand(2, 1, 300, 300)
    gamma = torch.tensor([0.9, 0.3])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    x_t = q_sample(x0, gamma, noise).flatten(1).double()
    n = x_t.shape[1]
    for i in range(2):
        g, x = float(gamma[i]), float(x0[i, 0, 0, 0])
        var = 1 - g**2
        assert float(x_t[i].mean()) == pytest.approx(g * x, abs=4 * math.sqrt(var / n))
        assert float(x_t[i].var()) == pytest.approx(var, rel=0.02)


def test_predict_start_inverts_q_sample():
    x0 = torch.rand(3, 3, 4, 4, dtype=torch.float64) * 2 - 1
    noise = torch.randn(3, 3, 4, 4, dtype=torch.float64)
    abar = torch.tensor([0.99, 0.5, 0.01], dtype=torch.float64)
    x_t = q_sample(x0, abar.sqrt(), noise)
    torch.testing.assert_close(predict_start_from_noise(x_t, abar, noise), x0)
    torch.testing.assert_close(predict_start_from_noise(x_t[:1], 0.99, noise[:1]), x0[:1])
    with pytest.raises(ValueError, match=r"\(3,\) tensor per batch item"):
        q_sample(x0, abar[:2], noise)


@pytest.mark.parametrize("t", [2, 7, 20])
def test_q_posterior_matches_bayes(t):
    sched = make_schedule(T=20, start=1e-3, end=0.2)
    betas = np.linspace(1e-3, 0.2, 20)
    abar = np.cumprod(1 - betas)
    # Prior q(x_{t-1} | x0) = N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1}); likelihood q(x_t | x_{t-1}) =
    # N(sqrt(alpha_t) x_{t-1}, beta_t): product of Gaussians in x_{t-1}.
    ab_prev, alpha, beta = abar[t - 2], 1 - betas[t - 1], betas[t - 1]
    precision = 1 / (1 - ab_prev) + alpha / beta
    x0, x_t = np.array([0.3, -0.8, 0.95]), np.array([1.2, -0.1, 0.4])
    mean = (np.sqrt(ab_prev) * x0 / (1 - ab_prev) + np.sqrt(alpha) * x_t / beta) / precision
    got_mean, got_var = q_posterior(sched, torch.from_numpy(x0), torch.from_numpy(x_t), t)
    np.testing.assert_allclose(got_mean.numpy(), mean, rtol=1e-10)
    assert got_var == pytest.approx(1 / precision, rel=1e-10)


def test_q_posterior_at_the_first_step_is_x0():
    sched = make_schedule(T=20, start=1e-3, end=0.2)
    x0, x_t = torch.tensor([0.3, -0.5], dtype=torch.float64), torch.tensor([2.0, 1.0], dtype=torch.float64)
    mean, var = q_posterior(sched, x0, x_t, 1)
    torch.testing.assert_close(mean, x0)
    assert var == 0.0
