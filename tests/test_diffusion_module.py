"""DiffusionModule: the four conditions, the frozen operator, and the prior computed once per image."""

from __future__ import annotations

import pytest
import torch

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
