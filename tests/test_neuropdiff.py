"""NeurOp-Diff as one plain model: one sampling path for test, predict and upscale; residual and parameterisations."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import neurop_diff.models.neuropdiff as neuropdiff_module
from neurop_diff.cli.upscale import upscale_main
from neurop_diff.diffusion.parameterisation import to_x0
from neurop_diff.diffusion.schedule import gamma_to_sigma, make_schedule, sigma_to_gamma
from neurop_diff.inference import load_model, upscale, upscale_tensor
from neurop_diff.lit import DiffusionModule
from neurop_diff.models.neuropdiff import NeurOpDiff, starting_noise
from neurop_diff.models.unet import UNet, c_noise

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


@pytest.mark.parametrize(("condition", "steps", "spacing"), [("operator", 4, "leading"), ("bicubic", 4, "leading"),
                                                            ("operator", 1, "trailing")])  # fmt: skip
def test_an_untrained_residual_x0_model_returns_its_prior(condition, steps, spacing):
    torch.manual_seed(0)
    module = DiffusionModule(
        operator_args=OPERATOR, condition=condition, prediction="x0", residual=True, **UNET
    )
    module.eval()
    lr = _lr()
    cond, _ = module.model.condition(lr, (16, 16))
    levels = []
    module.unet.register_forward_pre_hook(lambda _m, args: levels.append(args[1]))
    sample = module.model.sample(lr, (16, 16), steps=steps, spacing=spacing, seed=3)
    assert torch.equal(sample, cond.clamp(-1, 1))  # exactly: base + 0, whatever the noise
    assert len(levels) == steps
    if (
        spacing == "trailing"
    ):  # one trailing step runs the highest level (pure noise), not gamma_1 (sigma 0.001)
        torch.testing.assert_close(levels[0], module.schedule.gammas[-1:].to(levels[0]), rtol=1e-12, atol=0)
        assert float(levels[0]) == pytest.approx(float(module.schedule.gammas.min()), rel=1e-12)


@pytest.mark.parametrize("sigma_data", [0.05, 0.1])
def test_an_untrained_edm_residual_model_samples_the_prior_plus_residual_scale_noise(sigma_data):
    """With a zero UNet output, EDM's preconditioned denoiser is the exact posterior mean of a residual
    ~ N(0, sigma_data^2): the deterministic sampler maps the starting noise to prior + that residual noise."""
    module = DiffusionModule(operator_args=OPERATOR, prediction="edm", residual=True, sigma_data=sigma_data,
                             noise_embedding="log_sigma", clip_denoised=False,
                             **{**UNET, "timesteps": 200})  # fmt: skip
    module.eval()
    lr = _lr()
    cond, _ = module.model.condition(lr, (16, 16))
    sample = module.model.sample(lr, (16, 16), steps=40, seed=3)
    spread = (sample - cond).std().item()
    assert 0.8 * sigma_data < spread < 1.2 * sigma_data, spread
    with pytest.raises(ValueError, match="sigma_data must be > 0"):  # at start-up, not in the first step
        DiffusionModule(
            operator_args=OPERATOR, prediction="edm", sigma_data=0.0, noise_embedding="log_sigma", **UNET
        )


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
        noise_embedding="log_sigma" if prediction == "edm" else "sr3",
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


def test_x_T_must_cover_the_padded_canvas():
    module = DiffusionModule(
        operator_args=OPERATOR, condition="bicubic", **{**UNET, "channel_mults": (1, 2, 2)}
    )
    model = module.model.eval()
    lr = _lr(size=7)
    size = (14, 18)  # not multiples of the UNet's factor 4: sampled on a (16, 20) canvas, then cropped
    with pytest.raises(ValueError, match=r"x_T has shape \(1, 3, 14, 18\), expected \(1 or 1, 3, 16, 20\)"):
        model.sample(lr, size, steps=2, x_T=torch.zeros(1, 3, 14, 18))
    x_T, gen = starting_noise(3, (1, 3, 16, 20))
    given = model.sample(lr, size, steps=3, eta=1.0, x_T=x_T, generator=gen)
    seeded = model.sample(lr, size, steps=3, eta=1.0, seed=3)
    assert given.shape == (1, 3, 14, 18) and torch.equal(given, seeded)


def _tiny_unet(noise_embedding: str = "sr3") -> UNet:
    return UNet(in_channels=6, base_channels=8, channel_mults=(1, 2), attn_resolutions=(), image_size=16,
                norm_groups=4, dropout=0.0, noise_embedding=noise_embedding)  # fmt: skip


def _bicubic_model(prediction: str, residual: bool, sigma_data: float | None = None) -> NeurOpDiff:
    embedding = "log_sigma" if prediction == "edm" else "sr3"
    return NeurOpDiff(_tiny_unet(embedding), make_schedule(), None, condition="bicubic", prediction=prediction,
                      residual=residual, sigma_data=sigma_data, clip_denoised=False)  # fmt: skip


def _images(seed: int, n: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(HR, condition, noise) (n, 3, 16, 16) float64."""
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(n, 3, 16, 16, generator=g, dtype=torch.float64) * 2 - 1
    cond = (hr + 0.2 * torch.randn(hr.shape, generator=g, dtype=torch.float64)).clamp(-1, 1)
    return hr, cond, torch.randn(hr.shape, generator=g, dtype=torch.float64)


def _karras(sigma: torch.Tensor, sd: float) -> tuple[torch.Tensor, ...]:
    """(c_skip, c_out, c_in) of Karras et al. 2022, Table 1, per item (B, 1, 1, 1)."""
    s = sigma.view(-1, 1, 1, 1)
    return sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt(), 1 / (s**2 + sd**2).sqrt()


@pytest.mark.parametrize("residual", [False, True])
def test_edm_denoiser_is_karras_preconditioning(residual):
    """D(x; sigma) = base + c_skip y + c_out F(c_in y; c_noise) on y = x - base (Karras et al. 2022, Table 1:
    c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2), c_in = 1 / sqrt(sigma^2 + sd^2),
    c_noise = ln(sigma) / 4)."""
    sd = 0.2
    model = _bicubic_model("edm", residual, sd)
    _, cond, x = _images(0)
    f = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # a known F
    sigma = torch.tensor([0.002, 0.3, 40.0], dtype=torch.float64)
    seen = []

    def spy(inp, gamma):
        seen.append((inp, gamma))
        return f

    model.unet.forward = spy
    out = model.denoised(x, sigma, cond)
    (inp, gamma), base = seen[0], cond if residual else torch.zeros_like(cond)
    c_skip, c_out, c_in = _karras(sigma, sd)
    torch.testing.assert_close(inp[:, :3], c_in * (x - base), rtol=1e-12, atol=1e-14)
    assert torch.equal(inp[:, 3:], cond)
    assert gamma.dtype == torch.float64
    torch.testing.assert_close(gamma, sigma_to_gamma(sigma), rtol=1e-15, atol=0)
    torch.testing.assert_close(c_noise(gamma), sigma.log() / 4, rtol=0, atol=1e-10)  # what the UNet embeds
    torch.testing.assert_close(out, base + c_skip * (x - base) + c_out * f, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("residual", [False, True])
def test_edm_training_target_is_karras_f(residual):
    """The loss is 0 exactly when the UNet returns F* = (y0 - c_skip y) / c_out (y0: the clean target, y its
    noised state), and the edm weighting (lambda(sigma) c_out^2) is 1 on it."""
    sd = 0.2
    model = _bicubic_model("edm", residual, sd)
    hr, cond, noise = _images(2)
    gamma = torch.tensor([0.3, 0.95, 0.9999], dtype=torch.float64)
    sigma = gamma_to_sigma(gamma)
    c_skip, c_out, _ = _karras(sigma, sd)
    y0 = hr - cond if residual else hr
    f_star = (y0 - c_skip * (y0 + sigma.view(-1, 1, 1, 1) * noise)) / c_out
    for weighting in ("none", "edm"):
        model.unet.forward = lambda inp, g: f_star
        assert model.training_loss(hr, cond, gamma, noise, "l2", weighting) < 1e-24
        model.unet.forward = lambda inp, g: f_star + 0.1
        loss = model.training_loss(hr, cond, gamma, noise, "l2", weighting)
        assert float(loss) == pytest.approx(0.01, rel=1e-6)


def test_edm_needs_the_log_sigma_embedding():
    with pytest.raises(ValueError, match="needs the UNet's noise_embedding 'log_sigma'"):
        NeurOpDiff(_tiny_unet("sr3"), make_schedule(), None, condition="bicubic", prediction="edm")
    with pytest.raises(ValueError, match="needs the UNet's noise_embedding 'log_sigma'"):
        DiffusionModule(operator_args=OPERATOR, prediction="edm", residual=True, **UNET)


def test_l1_min_snr_loss_is_the_min_snr_l1_x0_error():
    """An eps model trained with L1 and Min-SNR: per item sqrt(min(SNR, 5)) * mean |x0_hat - HR| (the old code
    weighted the L1 loss with the L2 weights min(SNR, 5) / SNR: 10x too small at SNR 500)."""
    model = _bicubic_model("eps", residual=False)
    hr, cond, noise = _images(3, 4)
    gamma = torch.tensor([0.2, 0.9, 0.999, 0.99999], dtype=torch.float64)  # SNR 0.04, 4.3, 500, 5e4
    eps_hat = noise + 0.3 * torch.randn(
        hr.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )
    g = gamma.view(-1, 1, 1, 1)
    x0_hat = (g * hr + (1 - g**2).sqrt() * noise - (1 - g**2).sqrt() * eps_hat) / g
    snr = gamma**2 / (1 - gamma**2)
    expected = snr.clamp(max=5).sqrt() * (x0_hat - hr).abs().mean((1, 2, 3))
    old = snr.clamp(max=5) / snr * (eps_hat - noise).abs().mean((1, 2, 3))
    for i in range(4):
        model.unet.forward = lambda inp, g, i=i: eps_hat[i : i + 1]
        item = slice(i, i + 1)
        loss = model.training_loss(hr[item], cond[item], gamma[item], noise[item], "l1", "min_snr")
        assert float(loss) == pytest.approx(float(expected[i]), rel=1e-6)  # weights are float32
    assert (old / expected)[2:].max() < 0.15  # the high-SNR items were down-weighted by sqrt(SNR / 5) >= 10
    model.unet.forward = lambda inp, g: eps_hat
    batch = model.training_loss(hr, cond, gamma, noise, "l1", "min_snr")
    assert float(batch) == pytest.approx(float(expected.mean()), rel=1e-6)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "edm"])
def test_input_perturbation_targets_imply_hr_from_the_perturbed_input(prediction, monkeypatch):
    """DDPM-IP (Ning et al. 2023): the UNet sees HR + sigma (eps + 0.1 xi). eps keeps DDPM-IP's target eps; the
    x0 / v / edm targets are those of the input seen, so that they convert back to HR from it."""
    model = _bicubic_model(prediction, residual=True, sigma_data=0.2 if prediction == "edm" else None)
    hr, cond, noise = _images(5)
    perturbed = noise + 0.1 * torch.randn(
        hr.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64
    )
    gamma = torch.tensor([0.4, 0.9, 0.999], dtype=torch.float64)
    targets, inputs = [], []
    real = neuropdiff_module.training_target

    def record(*args, **kwargs):
        targets.append(real(*args, **kwargs))
        return targets[-1]

    monkeypatch.setattr(neuropdiff_module, "training_target", record)
    model.unet.forward = lambda inp, g: inputs.append(inp) or torch.zeros_like(inp[:, :3])
    model.training_loss(hr, cond, gamma, noise, "l2", "none", perturbed)
    sigma = gamma_to_sigma(gamma).view(-1, 1, 1, 1)
    x = hr + sigma * perturbed  # the perturbed VE state
    g = gamma.view(-1, 1, 1, 1)
    seen = _karras(sigma.flatten(), 0.2)[2] * (x - cond) if prediction == "edm" else g * x
    torch.testing.assert_close(
        inputs[0][:, :3], seen, rtol=1e-12, atol=1e-12
    )  # the UNet saw the perturbation
    if prediction == "eps":
        assert torch.equal(targets[0], noise)
    else:
        x0 = to_x0(prediction, targets[0], g * (x - cond), gamma, model.sigma_data)  # read in the residual
        torch.testing.assert_close(x0 + cond, hr, rtol=0, atol=1e-12)
