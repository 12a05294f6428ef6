"""NeurOp-Diff as one plain model: one sampling path for test, predict and upscale; residual and parameterisations."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from neurop_diff.inference import load_model, upscale, upscale_tensor
from neurop_diff.inference.cli import upscale_main
from neurop_diff.lit import DiffusionModule
from neurop_diff.models.neuropdiff import NeurOpDiff, starting_noise

OPERATOR = {"encoder_blocks": 1, "encoder_width": 8, "width": 16, "blocks": 1, "heads": 2, "head_width": 16}
UNET = {
    "base_channels": 8,
    "channel_mults": (1, 2),
    "attn_resolutions": (),
    "image_size": 16,
    "norm_groups": 4,
    "dropout": 0.0,
    "timesteps": 100,
    "sampling_steps": 4,
}
SRC = Path(__file__).resolve().parents[1] / "src" / "neurop_diff"


def _lr(seed: int = 0, size: int = 8) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_the_method_is_a_plain_module():
    tree = ast.parse((SRC / "models" / "neuropdiff.py").read_text())
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m.startswith(("lightning", "neurop_diff.lit", "neurop_diff.inference")) for m in imported)
    module = DiffusionModule(operator_args=OPERATOR, **UNET)
    assert isinstance(module.model, NeurOpDiff) and module.unet is module.model.unet
    assert all(k.startswith(("model.unet.", "model.operator.")) for k in module.state_dict())


@pytest.mark.parametrize("condition", ["operator", "bicubic"])
def test_an_untrained_residual_x0_model_returns_its_prior(condition):
    torch.manual_seed(0)
    module = DiffusionModule(
        operator_args=OPERATOR, condition=condition, prediction="x0", residual=True, **UNET
    )
    module.eval()
    lr = _lr()
    cond, _ = module.model.condition(lr, (16, 16))
    sample = module.model.sample(lr, (16, 16), steps=4, seed=3)
    torch.testing.assert_close(sample, cond.clamp(-1, 1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("sigma_data", [0.05, 0.1])
def test_an_untrained_edm_residual_model_samples_the_prior_plus_residual_scale_noise(sigma_data):
    """With a zero UNet output, EDM's preconditioned denoiser is the exact posterior mean of a residual
    ~ N(0, sigma_data^2): the deterministic sampler maps the starting noise to prior + that residual noise."""
    module = DiffusionModule(operator_args=OPERATOR, prediction="edm", residual=True, sigma_data=sigma_data,
                             clip_denoised=False, **{**UNET, "timesteps": 200})  # fmt: skip
    module.eval()
    lr = _lr()
    cond, _ = module.model.condition(lr, (16, 16))
    sample = module.model.sample(lr, (16, 16), steps=40, seed=3)
    spread = (sample - cond).std().item()
    assert 0.8 * sigma_data < spread < 1.2 * sigma_data, spread
    with pytest.raises(ValueError, match="sigma_data must be > 0"):  # at start-up, not in the first step
        DiffusionModule(operator_args=OPERATOR, prediction="edm", sigma_data=0.0, **UNET)


def test_residual_needs_an_image_condition():
    with pytest.raises(ValueError, match="residual=True needs an image condition"):
        DiffusionModule(operator_args=OPERATOR, condition="encoder", residual=True, **UNET)


@pytest.mark.parametrize(("prediction", "residual", "sigma_data"), [("eps", False, None), ("v", True, None),
                                                                   ("edm", True, 0.2)])  # fmt: skip
def test_test_predict_and_upscale_give_the_same_sample(prediction, residual, sigma_data, tmp_path, capsys):
    torch.manual_seed(1)
    module = DiffusionModule(
        operator_args=OPERATOR,
        prediction=prediction,
        residual=residual,
        sigma_data=sigma_data,
        seed=5,
        **UNET,
    ).eval()
    with torch.no_grad():
        for p in module.unet.out_conv.parameters():  # a residual model starts at zero: make it do something
            p.normal_(0, 0.05)
    lr_u8 = (np.random.default_rng(0).random((8, 8, 3)) * 255).astype(np.uint8)
    Image.fromarray(lr_u8).save(tmp_path / "lr.png")
    lr = torch.from_numpy(lr_u8.astype(np.float32) / 255).permute(2, 0, 1)[None] * 2 - 1
    batch = {"lr": lr, "hr": torch.zeros(1, 3, 16, 16), "scale": torch.tensor([2.0]), "name": ["a/b"]}
    with torch.no_grad():
        evaluated = module.super_resolve(batch, 0)["diffusion"]  # what test/validate/predict sample
    loaded = load_model(module, "cpu")
    api = upscale_tensor(lr, (16, 16), loaded, seed=5, tile=16)
    assert torch.equal(api, evaluated)
    # Files: the Python API and the command give the 8-bit version of the same sample.
    expected = ((evaluated[0].permute(1, 2, 0).numpy() + 1) / 2 * 255).round().clip(0, 255).astype(np.uint8)
    from_file = upscale(tmp_path / "lr.png", 2, checkpoint=module, seed=5, device="cpu", progress=False)
    assert np.abs(from_file.astype(int) - expected).max() <= 1
    ckpt = tmp_path / "d.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                "pytorch-lightning_version": "2.6.0"}, ckpt)  # fmt: skip
    upscale_main([str(tmp_path / "lr.png"), "--checkpoint", str(ckpt), "--scale", "2", "--seed", "5",
                  "--device", "cpu", "--out", str(tmp_path / "out")])  # fmt: skip
    written = np.asarray(Image.open(next((tmp_path / "out").glob("*.png"))).convert("RGB"))
    assert np.array_equal(written, from_file)
    # Batching does not change an image's sample: every image starts from starting_noise(seed).
    two = {k: torch.cat([v, v]) for k, v in batch.items() if k != "name"} | {"name": ["a/b", "c/d"]}
    with torch.no_grad():
        both = module.super_resolve(two, 3)["diffusion"]
    torch.testing.assert_close(both[1:], evaluated, rtol=0, atol=1e-5)
    x_T, _ = starting_noise(5, (1, 3, 16, 16))
    assert not torch.equal(x_T, starting_noise(6, (1, 3, 16, 16))[0])


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sampler_and_clip_options_reach_the_sampler(sampler):
    module = DiffusionModule(operator_args=OPERATOR, sampler=sampler, clip_denoised=True,
                             **{**UNET, "timesteps": 20}).eval()  # fmt: skip
    calls = []
    module.unet.register_forward_hook(lambda *_: calls.append(1))
    batch = {"lr": _lr(), "hr": torch.zeros(1, 3, 16, 16), "scale": torch.tensor([2.0]), "name": ["x"]}
    with torch.no_grad():
        out = module.super_resolve(batch, 0)["diffusion"]
    assert len(calls) == (4 if sampler == "ddim" else 20)
    assert out.abs().max() <= 1


def test_clip_denoised_bounds_the_prior_plus_residual():
    torch.manual_seed(0)
    module = DiffusionModule(operator_args=OPERATOR, condition="bicubic", prediction="x0", residual=True,
                             clip_denoised=True, **UNET).eval()  # fmt: skip
    with torch.no_grad():
        module.unet.out_conv.bias.fill_(5.0)  # a residual far outside the image range
        cond = torch.full((1, 3, 16, 16), 0.5)
        x0 = module.model.denoised(torch.randn(1, 3, 16, 16), torch.tensor([0.5]), cond)
    torch.testing.assert_close(x0, torch.ones_like(cond))  # 0.5 + 5 clamped
