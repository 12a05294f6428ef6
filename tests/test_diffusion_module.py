"""DiffusionModule: the four conditions, the frozen operator, and the prior computed once per image."""

from __future__ import annotations

import math

import pytest
import torch

import neurop_diff.lit.diffusion as diffusion_lit
from neurop_diff.lit import DiffusionModule
from neurop_diff.models import SRNO

OPERATOR = {"encoder_blocks": 1, "encoder_width": 8, "width": 16, "blocks": 2, "heads": 2, "head_width": 16}
UNET = {
    "base_channels": 8,
    "channel_mults": (1, 2),
    "attn_resolutions": (8,),
    "image_size": 16,
    "norm_groups": 4,
    "timesteps": 50,
    "sampling_steps": 5,
}


def _batch(b: int = 2) -> dict:
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(b, 3, 16, 16, generator=g) * 2 - 1
    lr = torch.nn.functional.interpolate(hr, size=(5, 5), mode="bicubic", antialias=True).clamp(-1, 1)
    return {"hr": hr, "lr": lr, "scale": torch.full((b,), 16 / 5), "name": [f"c/{i}" for i in range(b)]}


@pytest.mark.parametrize(
    ("condition", "channels"), [("operator", 6), ("bicubic", 6), ("encoder", 11), ("operator_features", 19)]
)
def test_every_condition_trains_and_samples(condition, channels):
    module = DiffusionModule(operator_args=OPERATOR, condition=condition, **UNET)
    first_conv = next(p for p in module.unet.parameters() if p.dim() == 4)
    assert first_conv.shape[1] == channels  # the UNet's input channels follow from the condition
    batch = _batch()
    module.train()
    module.log = lambda *args, **kwargs: None  # the real training step, outside a trainer
    loss = module.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss) and 0.1 < loss.item() < 2  # L1 on unit-variance noise
    assert all(p.grad is not None for p in module.unet.parameters())
    assert all(p.grad is None for p in module.operator.parameters())
    cond, _ = module.condition(batch["lr"], (16, 16))
    assert cond.shape == (2, channels - 3, 16, 16)
    module.eval()
    out = module.super_resolve(batch, 0)
    assert out["diffusion"].shape == (2, 3, 16, 16)
    assert out["diffusion"].abs().max() <= 1.0 + 1e-6
    assert "operator" in out  # the operator row is there for every condition


def test_operator_is_frozen_and_outside_the_optimizer():
    module = DiffusionModule(operator_args=OPERATOR, condition="operator", **UNET)
    module.train()
    assert not module.operator.training
    assert not any(p.requires_grad for p in module.operator.parameters())
    opt = module.configure_optimizers()["optimizer"]
    optimised = {id(p) for group in opt.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in module.unet.parameters()}


def test_fused_adam_makes_the_same_update():
    """On CPU the optimizer is torch's fused Adam: the same steps as the default Adam, cheaper, whatever the
    gradients' memory layout."""
    module = DiffusionModule(operator_args=OPERATOR, condition="operator", **UNET)
    opt = module.configure_optimizers()["optimizer"]
    assert opt.defaults["fused"] is True
    params = [p.detach().clone().requires_grad_() for p in module.unet.parameters()]
    start = torch.cat([q.detach().flatten() for q in params])
    plain = torch.optim.Adam(params, lr=opt.defaults["lr"], betas=(0.9, 0.999), eps=1e-8)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p, q in zip(module.unet.parameters(), params, strict=True):
            # contiguous, unlike the channels_last conv weights: torch's fused kernel alone would pair the
            # wrong elements (adam() re-lays such gradients out before each step)
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        opt.step()
        plain.step()
    fused = torch.cat([p.detach().flatten() for p in module.unet.parameters()])
    default = torch.cat([q.detach().flatten() for q in params])
    assert (fused - start).abs().median() > 0.5 * opt.defaults["lr"]  # the weights moved (3 Adam steps)
    torch.testing.assert_close(fused, default, atol=1e-7, rtol=1e-6)


def test_prior_is_computed_once_per_image_not_per_step(monkeypatch):
    module = DiffusionModule(operator_args=OPERATOR, condition="operator", **UNET).eval()
    calls = []
    original = SRNO.forward

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SRNO, "forward", counting)
    unet_calls = []
    module.unet.register_forward_hook(lambda *_: unet_calls.append(1))
    module.super_resolve(_batch(), 0)
    assert len(unet_calls) == UNET["sampling_steps"]
    assert len(calls) == 1  # one batched prior for all 5 steps (the authors' code: 5)


def test_sampling_is_seeded_per_image():
    module = DiffusionModule(operator_args=OPERATOR, condition="bicubic", **UNET).eval()
    batch = _batch(3)
    a = module.super_resolve(batch, 0)["diffusion"]
    b = module.super_resolve(batch, 7)["diffusion"]
    assert torch.equal(a, b)  # the same images give the same samples, whatever the batch index
    alone = module.super_resolve({k: v[1:2] for k, v in batch.items() if k != "name"} | {"name": ["c/1"]}, 0)
    assert torch.allclose(alone["diffusion"][0], a[1], atol=1e-5)  # and whatever the batch they are in


def test_input_perturbation_noises_the_input_not_the_target(monkeypatch):
    """DDPM-IP (Ning et al. 2023): x_t is formed with eps + 0.1 xi, the eps target stays eps."""
    seen = []
    for extra in (0.0, 0.1):
        module = DiffusionModule(
            operator_args=OPERATOR, condition="operator", input_perturbation=extra, **UNET
        )
        module.train()
        module.log = lambda *args, **kwargs: None
        real = module.model.training_loss

        def spy(hr, cond, gamma, noise, *args, real=real):
            seen.append((noise, args[-1]))
            return real(hr, cond, gamma, noise, *args)

        monkeypatch.setattr(module.model, "training_loss", spy)
        module.training_step(_batch(4), 0)
    (noise0, none), (noise1, perturbed) = seen
    assert none is None
    assert torch.equal(noise0, noise1)  # same seed: same target noise, whatever the perturbation
    assert abs((perturbed - noise1).std().item() - 0.1) < 0.01
    # the UNet sees the perturbed input (eval mode: no dropout, so only the input differs)
    module = DiffusionModule(operator_args=OPERATOR, condition="bicubic", **UNET).eval()
    b = _batch(4)
    cond, _ = module.model.condition(b["lr"], (16, 16))
    gamma = torch.full((4,), 0.5)
    plain, same, moved = (
        module.model.training_loss(b["hr"], cond, gamma, noise1, "l1", "none", n)
        for n in (None, noise1, perturbed)
    )
    assert plain == same and moved != plain
    with pytest.raises(ValueError, match="input_perturbation must be in"):
        DiffusionModule(operator_args=OPERATOR, input_perturbation=1.5, **UNET)


def _hr_batch(b: int, size: int, scale: float = 4.0) -> dict:
    """b different images at an HR size, their bicubic LR, as the datamodule's `full` batches."""
    g = torch.Generator().manual_seed(b * 1000 + size)
    hr = torch.rand(b, 3, size, size, generator=g) * 2 - 1
    lr_size = round(size / scale)
    lr = torch.nn.functional.interpolate(hr, size=(lr_size, lr_size), mode="bicubic", antialias=True).clamp(
        -1, 1
    )
    return {
        "hr": hr,
        "lr": lr,
        "scale": torch.full((b,), size / lr_size),
        "name": [f"c/{i}" for i in range(b)],
    }


def test_an_hr_size_off_the_unet_factor_is_sampled_and_cropped():
    """250 px is not a multiple of the UNet's factor 4: the sample runs on the padded 252 px canvas (the old
    `_sample_batch` drew an unpadded (1, 3, 250, 250) x_T, which `NeurOpDiff.sample` refused)."""
    module = DiffusionModule(condition="bicubic", **{**UNET, "channel_mults": (1, 2, 2), "sampling_steps": 2})
    module.eval()
    assert module.unet.factor == 4
    batch = _hr_batch(2, 250)
    with torch.no_grad():
        tested = module.test_step(batch, 0)["sr"]["diffusion"]
        validated = module.validation_step(batch, 0)["sr"]["diffusion"]
    assert tested.shape == validated.shape == (2, 3, 250, 250)
    assert torch.equal(tested, validated) and tested.abs().max() <= 1


@pytest.mark.parametrize(("sampler", "timesteps"), [("ddim", 50), ("ddpm", 12)])
def test_an_images_noisy_sample_does_not_depend_on_its_batch(sampler, timesteps):
    """With eta = 1 (and DDPM) the step noise is one image's draw shared by the batch, like the starting noise:
    image 0 gets the same sample alone and among three other images (the old samplers drew the step noise for
    the whole batch)."""
    module = DiffusionModule(condition="bicubic", sampler=sampler, eta=1.0,
                             **{**UNET, "timesteps": timesteps, "dropout": 0.0}).eval()  # fmt: skip
    with torch.no_grad():
        for p in module.unet.out_conv.parameters():
            p.normal_(0, 0.05)  # an output that depends on the input
    batch = _batch(4)
    alone = {k: v[:1] for k, v in batch.items() if k != "name"} | {"name": batch["name"][:1]}
    with torch.no_grad():
        four = module.super_resolve(batch, 0)["diffusion"]
        one = module.super_resolve(alone, 0)["diffusion"]
        deterministic = DiffusionModule(
            condition="bicubic", sampler="ddim", eta=0.0, **{**UNET, "timesteps": timesteps}
        )
        deterministic.load_state_dict(module.state_dict())
        eta0 = deterministic.eval().super_resolve(alone, 0)["diffusion"]
    torch.testing.assert_close(four[:1], one, rtol=0, atol=1e-5)
    assert (four[0] - four[1]).abs().max() > 0.05  # the images differ
    assert (one - eta0).abs().max() > 1e-3  # the step noise is really there


def test_several_samples_report_their_seed_spread():
    """`samples: K` draws K samples per image (seeds seed..seed+K-1) at validation/test: the first is the result,
    their per-pixel spread is `seed_std` (B,)."""
    kw = {**UNET, "dropout": 0.0}
    one = DiffusionModule(condition="bicubic", seed=4, **kw).eval()
    three = DiffusionModule(condition="bicubic", seed=4, samples=3, **kw).eval()
    three.load_state_dict(one.state_dict())
    batch = _batch(2)
    with torch.no_grad():
        single = one.test_step(batch, 0)
        several = three.test_step(batch, 0)
        seeds = [one.model.sample(batch["lr"], (16, 16), steps=5, seed=s) for s in (4, 5, 6)]
    assert "seed_std" not in single and set(several) == {"sr", "seed_std"}
    assert torch.equal(
        several["sr"]["diffusion"], single["sr"]["diffusion"]
    )  # the first sample is the result
    spread = several["seed_std"]["diffusion"]
    assert spread.shape == (2,) and bool((spread > 1e-3).all())  # an untrained model: the seeds differ
    unit = (torch.stack(seeds).double() + 1) / 2
    torch.testing.assert_close(spread.double(), unit.std(0).mean((1, 2, 3)), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="samples must be >= 1"):
        DiffusionModule(condition="bicubic", samples=0, **UNET)


@pytest.mark.parametrize(
    ("kw", "p_mean"),
    [
        (
            {"prediction": "x0", "residual": True},
            -1.2 + math.log(0.2),
        ),  # sigma_data 0.1: centred on the residual
        ({"prediction": "eps"}, -1.2),  # EDM's for images of std 0.5
        ({"prediction": "x0", "residual": True, "p_mean": -2.0}, -2.0),
    ],
)
def test_lognormal_levels_centre_on_the_target_scale(kw, p_mean, monkeypatch):
    drawn = []
    real = diffusion_lit.sample_levels

    def spy(schedule, batch_size, kind, **kwargs):
        drawn.append((kind, kwargs))
        return real(schedule, batch_size, kind, **kwargs)

    monkeypatch.setattr(diffusion_lit, "sample_levels", spy)
    module = DiffusionModule(condition="bicubic", level_sampling="lognormal", p_std=0.8, **kw, **UNET)
    module.train()
    module.log = lambda *args, **kwargs: None
    module.training_step(_batch(3), 0)
    ((kind, kwargs),) = drawn
    assert (
        kind == "lognormal"
        and kwargs["p_mean"] == pytest.approx(p_mean, abs=1e-12)
        and kwargs["p_std"] == 0.8
    )
    assert (
        module.hparams.spacing == "leading" and module.hparams.noise_embedding == "sr3"
    )  # the authors' defaults
