"""Schedules and the forward process against closed forms computed independently (numpy, float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neurop_diff.diffusion.schedule import (
    EDM_P_MEAN,
    EDM_P_STD,
    cosine_betas,
    gamma_to_sigma,
    level_dtype,
    linear_betas,
    make_schedule,
    predict_start_from_noise,
    q_posterior,
    q_sample,
    sample_levels,
    sigma_to_gamma,
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


def test_gamma_and_sigma_name_one_level():
    # VE sigma of SR3's gamma: x_t / gamma = x0 + sigma eps (Karras et al. 2022, app. C.1).
    gamma = torch.tensor([1.0, 0.9995, 0.6, 0.05], dtype=torch.float64)
    sigma = gamma_to_sigma(gamma)
    torch.testing.assert_close(sigma, (1 - gamma**2).sqrt() / gamma, rtol=1e-15, atol=0)
    assert float(sigma[0]) == 0.0
    torch.testing.assert_close(sigma_to_gamma(sigma), gamma, rtol=1e-15, atol=0)
    assert level_dtype("cpu") == torch.float64 and level_dtype(None) == torch.float64
    assert level_dtype(torch.device("mps")) == torch.float32  # MPS has no float64


def _timesteps(sched, gamma: torch.Tensor) -> torch.Tensor:
    """The 1-based timestep t whose interval [gammas[t], gammas[t-1]] holds each level (gammas decrease)."""
    edges = sched.gammas.flip(0)  # increasing: gammas[T], ..., gammas[0] = 1
    return sched.T + 1 - torch.searchsorted(edges, gamma, right=False).clamp(1, sched.T)


def test_sample_levels_sr3_draws_one_timestep_per_image():
    sched = make_schedule(T=8, start=0.05, end=0.3)  # wide, well separated intervals
    g = sched.gammas
    distinct = []
    for seed in range(40):
        gamma = sample_levels(sched, 16, "sr3", generator=torch.Generator().manual_seed(seed))
        assert gamma.shape == (16,) and gamma.dtype == torch.float64
        t = _timesteps(sched, gamma)
        assert bool(((gamma >= g[t]) & (gamma <= g[t - 1])).all())  # inside its own interval
        distinct.append(len(set(t.tolist())))
    # Per image, not per batch (the old sample_gamma drew one t for all 16: 1 distinct value); 16 draws over 8
    # timesteps hit 8 (1 - (7/8)^16) = 7.1 of them on average.
    assert min(distinct) >= 4 and sum(distinct) / len(distinct) > 6
    a = sample_levels(sched, 5, generator=torch.Generator().manual_seed(3))
    assert a.equal(sample_levels(sched, 5, generator=torch.Generator().manual_seed(3)))


def test_sample_levels_sr3_is_uniform_over_the_timesteps():
    sched = make_schedule(T=20, start=1e-3, end=0.2)
    n = 20000
    gamma = sample_levels(sched, n, "sr3", generator=torch.Generator().manual_seed(0))
    t = _timesteps(sched, gamma)
    counts = torch.bincount(t - 1, minlength=20).double()
    expected = n / 20
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 43.8, chi2  # 19 degrees of freedom: P(chi2 > 43.8) = 0.001
    # KS-like: the empirical CDF of t stays within 1.63 / sqrt(n) (p = 0.01) of the uniform one
    ecdf = counts.cumsum(0) / n
    assert float((ecdf - torch.arange(1, 21, dtype=torch.float64) / 20).abs().max()) < 1.63 / math.sqrt(n)
    # and within its interval gamma is uniform: the relative position has mean 1/2, variance 1/12
    pos = (sched.gammas[t - 1] - gamma) / (sched.gammas[t - 1] - sched.gammas[t])
    assert float(pos.mean()) == pytest.approx(0.5, abs=0.01)
    assert float(pos.var()) == pytest.approx(1 / 12, rel=0.03)


def test_sample_levels_sr3_is_uniform_within_the_interval():
    sched = make_schedule(T=1, start=0.5, end=0.5)  # a single interval [sqrt(0.5), 1]
    gamma = sample_levels(sched, 40000, generator=torch.Generator().manual_seed(0))
    lo, hi = math.sqrt(0.5), 1.0
    assert gamma.min() >= lo and gamma.max() <= hi
    assert float(gamma.mean()) == pytest.approx((lo + hi) / 2, abs=3e-3)
    assert float(gamma.var()) == pytest.approx((hi - lo) ** 2 / 12, rel=0.03)


@pytest.mark.parametrize(
    "p_mean", [EDM_P_MEAN, EDM_P_MEAN + math.log(0.2)]
)  # EDM's, and centred on a residual
def test_sample_levels_lognormal_follows_p_mean_and_p_std(p_mean):
    sched = make_schedule()  # VE sigma 0.001 .. 151: ln sigma in [-6.9, 5.0], >= 3.4 p_std from both means
    n = 20000
    gamma = sample_levels(sched, n, "lognormal", p_mean=p_mean, p_std=EDM_P_STD,
                          generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert gamma.shape == (n,) and gamma.dtype == torch.float64
    log_sigma = gamma_to_sigma(gamma).log()
    # standard errors: 1.2 / sqrt(n) = 0.0085 for the mean, 0.5% for the std, 0.0035 for the fraction
    assert float(log_sigma.mean()) == pytest.approx(p_mean, abs=0.035)
    assert float(log_sigma.std()) == pytest.approx(EDM_P_STD, rel=0.025)
    assert float((log_sigma < p_mean).double().mean()) == pytest.approx(0.5, abs=0.015)
    # about half of EDM's draws are below sigma 0.3 (the old per-batch SR3 draws: 10%)
    assert float((gamma_to_sigma(gamma) < 0.3).double().mean()) > (0.4 if p_mean == EDM_P_MEAN else 0.8)


def test_sample_levels_lognormal_is_clipped_to_the_schedule():
    sched = make_schedule()
    gamma = sample_levels(sched, 4000, "lognormal", p_mean=0.0, p_std=6.0,
                          generator=torch.Generator().manual_seed(2))  # fmt: skip
    sigma = gamma_to_sigma(gamma)
    lo, hi = (float(v) for v in gamma_to_sigma(sched.gammas[[1, -1]]))
    assert lo == pytest.approx(1e-3, rel=1e-3) and hi == pytest.approx(151, rel=0.01)
    assert float(sigma.min()) == pytest.approx(lo, rel=1e-9) and float(sigma.max()) == pytest.approx(
        hi, rel=1e-9
    )
    assert int((sigma <= lo * (1 + 1e-9)).sum()) > 100 and int((sigma >= hi * (1 - 1e-9)).sum()) > 100


def test_sample_levels_errors():
    sched = make_schedule(T=10)
    with pytest.raises(ValueError, match="level_sampling must be one of"):
        sample_levels(sched, 4, "uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        sample_levels(sched, 0)
    with pytest.raises(ValueError, match="p_std must be > 0"):
        sample_levels(sched, 4, "lognormal", p_std=0.0)


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
