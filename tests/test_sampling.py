"""DDIM / DDPM samplers against closed forms: oracle denoisers, DDIM(eta=1, all steps) == DDPM, seeding."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from neurop_diff.diffusion.sampling import ddim_sample, ddim_timesteps, ddpm_sample
from neurop_diff.diffusion.schedule import make_schedule, q_sample

SHAPE = (2, 3, 8, 8)


def schedule(T=40):
    return make_schedule("linear", T=T, start=1e-3, end=0.2)


def clean_image(dtype=torch.float64):
    return (torch.rand(SHAPE, generator=torch.Generator().manual_seed(5), dtype=dtype) * 1.8 - 0.9).to(dtype)


def oracle(x0):
    """Returns the noise that explains x_t given the true x0 at level gamma."""

    def denoise(x_t, gamma, condition):
        g = gamma.view(-1, 1, 1, 1).to(x_t.dtype)
        return (x_t - g * x0.to(x_t.dtype)) / (1 - g**2).sqrt()

    return denoise


def smooth_net(x_t, gamma, condition):
    """A deterministic stand-in network: depends on x_t, gamma and the condition."""
    return 0.7 * torch.tanh(x_t + condition) + 0.2 * gamma.view(-1, 1, 1, 1) * torch.cos(3 * x_t)


def test_uniform_timesteps_follow_the_ddim_code():
    assert ddim_timesteps(2000, 50) == list(range(0, 2000, 40))
    seq = ddim_timesteps(2000, 30)
    assert seq == [66 * i for i in range(30)]
    assert ddim_timesteps(10, 10) == list(range(10))


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


@pytest.mark.parametrize("spacing", ["uniform", "quadratic"])
def test_ddim_eta0_with_an_oracle_recovers_x0(spacing):
    sched = schedule()
    x0 = clean_image()
    eps = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    seq = ddim_timesteps(sched.T, 8, spacing)
    x_T = q_sample(x0, float(sched.gammas[seq[-1] + 1]), eps)
    calls = []
    out = ddim_sample(
        oracle(x0),
        None,
        SHAPE,
        sched,
        steps=8,
        spacing=spacing,
        x_T=x_T,
        dtype=torch.float64,
        clip_denoised=False,
        callback=calls.append,
    )
    torch.testing.assert_close(out, x0, atol=1e-10, rtol=0)
    assert [c["i"] for c in calls] == list(range(8)) and {c["total"] for c in calls} == {8}
    assert [c["t"] for c in calls] == [t + 1 for t in reversed(seq)]
    for c in calls:  # the oracle's x0 prediction is exact at every step
        torch.testing.assert_close(c["x0"], x0, atol=1e-10, rtol=0)
    # float32 and clipping (x0 lies inside [-1, 1]) change nothing beyond rounding.
    out32 = ddim_sample(oracle(x0), None, SHAPE, sched, steps=8, spacing=spacing, x_T=x_T.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), x0, atol=1e-5, rtol=0)


def test_ddpm_with_an_oracle_recovers_x0():
    sched = schedule(T=30)
    x0 = clean_image()
    gen = torch.Generator().manual_seed(2)
    out = ddpm_sample(oracle(x0), None, SHAPE, sched, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(out, x0, atol=1e-10, rtol=0)


def test_networks_see_the_levels_of_the_visited_timesteps():
    sched = schedule()
    levels = []

    def spy(x_t, gamma, condition):
        assert gamma.shape == (SHAPE[0],) and bool((gamma == gamma[0]).all())
        levels.append(float(gamma[0]))
        return torch.zeros_like(x_t)

    ddim_sample(spy, None, SHAPE, sched, steps=5, dtype=torch.float64)
    assert levels == [float(sched.gammas[t + 1]) for t in reversed(ddim_timesteps(sched.T, 5))]
    levels.clear()
    ddpm_sample(spy, None, SHAPE, sched, dtype=torch.float64)
    assert levels == [float(sched.gammas[t]) for t in range(sched.T, 0, -1)]


def test_ddim_eta1_all_steps_equals_ddpm():
    sched = schedule(T=25)
    cond = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    kw = dict(clip_denoised=False, dtype=torch.float64)  # a clipped x0 enters them differently
    ddim = ddim_sample(
        smooth_net,
        cond,
        SHAPE,
        sched,
        steps=sched.T,
        eta=1.0,
        generator=torch.Generator().manual_seed(9),
        **kw,
    )
    ddpm = ddpm_sample(smooth_net, cond, SHAPE, sched, generator=torch.Generator().manual_seed(9), **kw)
    torch.testing.assert_close(ddim, ddpm, atol=1e-9, rtol=0)
    assert ddpm.abs().mean() > 0.1
    fewer = ddim_sample(
        smooth_net, cond, SHAPE, sched, steps=5, eta=1.0, generator=torch.Generator().manual_seed(9), **kw
    )
    assert (fewer - ddpm).abs().max() > 1e-3


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_seeding(eta):
    sched = schedule()
    cond = torch.zeros(SHAPE)

    def run(seed):
        return ddim_sample(
            smooth_net, cond, SHAPE, sched, steps=6, eta=eta, generator=torch.Generator().manual_seed(seed)
        )

    a, b, c = run(0), run(0), run(1)
    assert a.equal(b) and not torch.allclose(a, c)
    p, q = (
        ddpm_sample(smooth_net, cond, SHAPE, sched, generator=torch.Generator().manual_seed(4)) for _ in "pq"
    )
    assert p.equal(q)


def test_eta1_uses_the_noise_but_x_T_alone_fixes_eta0():
    sched = schedule()
    x_T = torch.randn(SHAPE)
    a = ddim_sample(smooth_net, torch.zeros(SHAPE), SHAPE, sched, steps=6, x_T=x_T)
    b = ddim_sample(
        smooth_net,
        torch.zeros(SHAPE),
        SHAPE,
        sched,
        steps=6,
        x_T=x_T,
        generator=torch.Generator().manual_seed(123),
    )
    assert a.equal(b)
    c = ddim_sample(
        smooth_net,
        torch.zeros(SHAPE),
        SHAPE,
        sched,
        steps=6,
        eta=1.0,
        x_T=x_T,
        generator=torch.Generator().manual_seed(123),
    )
    assert not torch.allclose(a, c)


def test_clipping_bounds_the_x0_prediction():
    sched = schedule()
    seen = []
    x_T = torch.full(SHAPE, 3.0)

    def zero(x_t, gamma, condition):
        return torch.zeros_like(x_t)  # x0_hat = x_t / sqrt(abar): far outside [-1, 1]

    ddim_sample(zero, None, SHAPE, sched, steps=4, x_T=x_T, callback=lambda d: seen.append(d["x0"]))
    assert all(float(x.abs().max()) <= 1.0 for x in seen) and float(seen[0].max()) == 1.0
    out = ddim_sample(zero, None, SHAPE, sched, steps=4, x_T=x_T, clip_denoised=False)
    assert float(out.min()) == pytest.approx(3.0 / math.sqrt(sched.abar(ddim_timesteps(sched.T, 4)[-1] + 1)))


def test_x_T_shape_is_checked():
    with pytest.raises(ValueError, match=r"x_T has shape \(1, 3, 8, 8\)"):
        ddim_sample(smooth_net, None, SHAPE, schedule(), x_T=torch.zeros(1, 3, 8, 8))
