"""DDIM over a clean-estimate denoiser (k-diffusion's shape): oracle denoisers, DDIM(eta=1, all levels) == DDPM's
ancestral sampler, level grids and spacings, seeding."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from neurop_diff.diffusion.ksamplers import run_sampler
from neurop_diff.diffusion.sampling import (
    ancestral_step,
    ddim_timesteps,
    get_sigmas,
    sample_ddim,
    truncate_sigmas,
    truncated_steps,
)
from neurop_diff.diffusion.schedule import gamma_to_sigma, make_schedule, q_posterior

SHAPE = (2, 3, 8, 8)


def schedule(T=40):
    return make_schedule("linear", T=T, start=1e-3, end=0.2)


def clean_image(dtype=torch.float64):
    return (torch.rand(SHAPE, generator=torch.Generator().manual_seed(5), dtype=dtype) * 1.8 - 0.9).to(dtype)


def oracle(x0):
    """The exact denoiser of a single known image: D(x, sigma) = x0."""

    def denoiser(x, sigma, condition):
        assert sigma.shape == (x.shape[0],)
        return x0.to(x.dtype)

    return denoiser


def smooth_net(x, sigma, condition):
    """A deterministic stand-in clean-estimate network: depends on x, sigma and the condition."""
    s = sigma.view(-1, 1, 1, 1).to(x.dtype)
    return 0.7 * torch.tanh(x / (1 + s * s).sqrt() + condition) + 0.2 * torch.cos(3 * x) / (1 + s)


def test_leading_timesteps_follow_the_ddim_code():
    assert ddim_timesteps(2000, 50) == list(range(0, 2000, 40))
    assert ddim_timesteps(2000, 30) == [66 * i for i in range(30)]
    assert ddim_timesteps(10, 10) == list(range(10))
    assert ddim_timesteps(2000, 30, "uniform") == ddim_timesteps(2000, 30, "leading")  # the old name


def test_trailing_and_linspace_timesteps_reach_the_highest_level():
    # Lin et al. 2024, Table 2: trailing starts at T - 1 and steps by T / steps; leading never reaches T - 1.
    trailing = ddim_timesteps(2000, 20, "trailing")
    assert trailing[-1] == 1999 and trailing[0] == 99
    assert [b - a for a, b in itertools.pairwise(trailing)] == [100] * 19
    assert ddim_timesteps(2000, 20, "leading")[-1] == 1900
    assert ddim_timesteps(2000, 1, "trailing") == [1999]  # one step: the highest level (pure noise)
    assert ddim_timesteps(2000, 1, "leading") == [0]  # one step: the lowest level (almost clean)
    linspace = ddim_timesteps(2000, 20, "linspace")
    assert linspace[0] == 0 and linspace[-1] == 1999 and len(set(linspace)) == 20
    assert ddim_timesteps(10, 10, "trailing") == list(range(10)) == ddim_timesteps(10, 10, "linspace")


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace", "quadratic", "karras"])
@pytest.mark.parametrize("steps", [1, 2, 20])
def test_sigma_grids_decrease_to_zero(spacing, steps):
    sched = make_schedule()
    sigmas = get_sigmas(sched, steps, spacing)
    assert sigmas.shape == (steps + 1,) and sigmas.dtype == torch.float64
    assert float(sigmas[-1]) == 0.0 and bool((sigmas[:-1] > 0).all())
    assert bool((torch.diff(sigmas) < 0).all())  # strictly decreasing
    table = gamma_to_sigma(sched.gammas)  # table[t]: the VE level of timestep t
    if spacing != "karras":
        seq = ddim_timesteps(sched.T, steps, spacing)
        torch.testing.assert_close(sigmas[:-1], table[torch.tensor(seq[::-1]) + 1], rtol=0, atol=0)
    if spacing in ("trailing", "karras") or (spacing == "linspace" and steps > 1):
        assert float(sigmas[0]) == pytest.approx(float(table[-1]), rel=1e-12)  # starts at the highest level
    if spacing == "karras" and steps > 1:
        assert float(sigmas[-2]) == pytest.approx(float(table[1]), rel=1e-12)


@pytest.mark.parametrize(("T", "steps"), [(2000, 50), (2000, 200), (100, 90), (20, 20), (1000, 1)])
def test_quadratic_timesteps_are_increasing_and_unique(T, steps):
    seq = ddim_timesteps(T, steps, "quadratic")
    assert len(seq) == steps and seq[0] == 0 and seq[-1] <= T - 1
    assert all(b > a for a, b in itertools.pairwise(seq))
    if steps > 2:  # quadratic: gaps grow
        assert seq[-1] - seq[-2] > seq[1] - seq[0] or seq == list(range(steps))
    if (T, steps) == (2000, 50):  # the DDIM code's int(linspace(0, sqrt(0.8 T), steps) ** 2) at the top
        assert seq[-1] == 1600 and seq[-2] == int((40 * 48 / 49) ** 2)


def test_bad_timestep_arguments():
    with pytest.raises(ValueError, match=r"1\.\.T=10"):
        ddim_timesteps(10, 11)
    with pytest.raises(ValueError, match="spacing 'cubic'"):
        ddim_timesteps(10, 5, "cubic")  # type: ignore[arg-type]


def test_ancestral_step_is_ddim_eq16_in_ve_levels():
    sched = schedule()
    for t, s, eta in [(40, 30, 1.0), (12, 11, 1.0), (20, 5, 0.5), (3, 1, 0.3)]:
        abar_t, abar_s = sched.abar(t), sched.abar(s)
        sig, sig_next = (math.sqrt((1 - a) / a) for a in (abar_t, abar_s))
        down, up = ancestral_step(sig, sig_next, eta)
        # DDIM eq. 16 (VP): sigma_t^2 = eta^2 (1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s); x_VE = x / sqrt(abar)
        vp = eta**2 * (1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)
        assert up**2 * abar_s == pytest.approx(vp, rel=1e-10)
        assert down**2 + up**2 == pytest.approx(sig_next**2, rel=1e-12)
    assert ancestral_step(2.0, 1.0, 0.0) == (1.0, 0.0)
    assert ancestral_step(2.0, 0.0, 1.0) == (0.0, 0.0)  # no noise on the last step


@pytest.mark.parametrize("spacing", ["leading", "trailing", "quadratic", "karras"])
def test_ddim_eta0_with_an_oracle_recovers_x0(spacing):
    sched = schedule()
    x0 = clean_image()
    eps = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sigmas = get_sigmas(sched, 8, spacing)
    calls = []
    out = sample_ddim(oracle(x0), x0 + sigmas[0] * eps, sigmas, callback=calls.append)
    torch.testing.assert_close(out, x0, atol=1e-12, rtol=0)
    assert [c["i"] for c in calls] == list(range(8)) and {c["total"] for c in calls} == {8}
    assert [c["sigma"] for c in calls] == sigmas[1:].tolist()
    for c in calls:  # deterministic DDIM keeps the starting noise: x = x0 + sigma_next eps on the way down
        torch.testing.assert_close(c["x"], x0 + c["sigma"] * eps, atol=1e-12, rtol=0)
        torch.testing.assert_close(c["x0"], x0, atol=0, rtol=0)
    # float32 states with float64 levels change nothing beyond rounding.
    out32 = sample_ddim(oracle(x0), (x0 + sigmas[0] * eps).float(), sigmas)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), x0, atol=1e-6, rtol=0)


def test_ddpm_with_an_oracle_recovers_x0():
    sched = schedule(T=30)
    x0 = clean_image()
    sigmas = get_sigmas(sched, sched.T, "leading")
    x = x0 + sigmas[0] * torch.randn(SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = run_sampler("ddpm", oracle(x0), x, sigmas, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out, x0, atol=1e-12, rtol=0)


def test_networks_see_the_levels_of_the_grid():
    sched = schedule()
    levels = []

    def spy(x, sigma, condition):
        assert sigma.shape == (SHAPE[0],) and sigma.dtype == torch.float64 and bool((sigma == sigma[0]).all())
        levels.append(float(sigma[0]))
        return torch.zeros_like(x)

    sigmas = get_sigmas(sched, 5, "leading")
    sample_ddim(spy, torch.zeros(SHAPE), sigmas)
    table = gamma_to_sigma(sched.gammas)
    assert levels == [float(table[t + 1]) for t in reversed(ddim_timesteps(sched.T, 5))]
    levels.clear()
    run_sampler("ddpm", spy, torch.zeros(SHAPE), get_sigmas(sched, sched.T), generator=torch.Generator())
    assert levels == [float(table[t]) for t in range(sched.T, 0, -1)]  # DDPM: every level T..1


def _ddpm_reference(net, cond, sched, x_T, generator):
    """DDPM's ancestral sampler (Ho et al. 2020, Alg. 2, SR3's form) in VP states: x0 from the network, then
    x_{t-1} ~ q(x_{t-1} | x_t, x0) (eq. 6-7); the same noise draws (float32, then cast) as the samplers."""
    x = x_T
    for t in range(sched.T, 0, -1):
        g = math.sqrt(sched.abar(t))
        sigma = torch.full((x.shape[0],), math.sqrt(1 - g * g) / g, dtype=torch.float64)
        x0 = net(x / g, sigma, cond)
        mean, var = q_posterior(sched, x0, x, t)
        x = mean + math.sqrt(var) * torch.randn(x.shape, generator=generator).to(x) if t > 1 else mean
    return x


def test_ddim_eta1_all_levels_equals_ddpm():
    sched = schedule(T=25)
    cond = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4), dtype=torch.float64)  # VP N(0, I)
    ref = _ddpm_reference(smooth_net, cond, sched, x_T, torch.Generator().manual_seed(9))
    sigmas = get_sigmas(sched, sched.T, "leading")
    x = x_T * math.sqrt(1 + float(sigmas[0]) ** 2)  # the VE state x_T / gamma_T
    ddim = sample_ddim(
        smooth_net, x, sigmas, condition=cond, eta=1.0, generator=torch.Generator().manual_seed(9)
    )
    torch.testing.assert_close(ddim, ref, atol=1e-9, rtol=0)
    assert ref.abs().mean() > 0.1
    ddpm = run_sampler(
        "ddpm", smooth_net, x, sigmas, condition=cond, generator=torch.Generator().manual_seed(9)
    )
    assert torch.equal(ddpm, ddim)  # "ddpm" is DDIM with eta 1 over every level
    fewer = sample_ddim(smooth_net, x, get_sigmas(sched, 5), condition=cond, eta=1.0,
                        generator=torch.Generator().manual_seed(9))  # fmt: skip
    assert (fewer - ref).abs().max() > 1e-3


def test_eta1_uses_the_noise_but_x_alone_fixes_eta0():
    sigmas = get_sigmas(schedule(), 6)
    cond = torch.zeros(SHAPE)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)) * float(sigmas[0])

    def run(eta, seed):
        return sample_ddim(
            smooth_net, x, sigmas, condition=cond, eta=eta, generator=torch.Generator().manual_seed(seed)
        )

    assert run(0.0, 1).equal(run(0.0, 2))  # deterministic: the generator is not used
    a, b, c = run(1.0, 1), run(1.0, 1), run(1.0, 2)
    assert a.equal(b) and not torch.allclose(a, c) and not torch.allclose(a, run(0.0, 1))


def test_step_noise_comes_from_the_noise_sampler():
    sigmas = get_sigmas(schedule(), 6)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)) * float(sigmas[0])
    drawn = []

    def noise(like):
        drawn.append(tuple(like.shape))
        return torch.ones_like(like)

    out = sample_ddim(smooth_net, x, sigmas, condition=torch.zeros(SHAPE), eta=1.0, noise_sampler=noise)
    assert drawn == [SHAPE] * 5  # every step but the last (to sigma = 0)
    again = sample_ddim(
        smooth_net, x, sigmas, condition=torch.zeros(SHAPE), eta=1.0, noise_sampler=torch.ones_like
    )
    assert torch.equal(out, again)


def test_samplers_do_not_clamp():
    # Clamping belongs to the model's denoiser (NeurOpDiff.denoised), not to the samplers.
    sigmas = get_sigmas(schedule(), 4)
    seen = []
    out = sample_ddim(lambda x, s, c: torch.full_like(x, 3.0), torch.zeros(SHAPE), sigmas,
                      callback=lambda d: seen.append(d["x0"]))  # fmt: skip
    assert float(out.min()) == 3.0 and all(float(x.max()) == 3.0 for x in seen)


def test_truncated_grids_keep_the_last_steps():
    sigmas = get_sigmas(schedule(), 10, "trailing")
    assert truncated_steps(10, 0.3) == 3 and truncated_steps(10, 0.01) == 1
    torch.testing.assert_close(truncate_sigmas(sigmas, 0.3), sigmas[-4:], rtol=0, atol=0)
    assert torch.equal(truncate_sigmas(sigmas, 1.0), sigmas)
    with pytest.raises(ValueError, match="strength must be in"):
        truncate_sigmas(sigmas, 0.0)
