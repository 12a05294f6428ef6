"""The posterior-mean flow (diffusion/flow.py, NeurOpDiff process='flow') and LR consistency
(diffusion/consistency.py): exact on oracles, learning on real images, and through the real CLI."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from neurop_diff.cli import main
from neurop_diff.data.degradation import degrade
from neurop_diff.diffusion.consistency import consistent_denoiser, lr_error, project_to_lr
from neurop_diff.diffusion.flow import flow_sigmas, sample_flow_times
from neurop_diff.diffusion.schedule import make_schedule
from neurop_diff.evaluation.realism import lr_psnr, swd
from neurop_diff.lit import DiffusionModule
from neurop_diff.models.neuropdiff import NeurOpDiff
from neurop_diff.models.unet import UNet

REPO = Path(__file__).resolve().parents[1]
HR = 32


def _images(shared_data, n: int, size: int = HR) -> torch.Tensor:
    """n real RSSCN7 images (B, 3, size, size) in [-1, 1], one per class, area-downsampled from 96 px."""
    from neurop_diff.data.images import hr_protocol, load_rgb_uint8

    classes = sorted(p for p in (shared_data / "rsscn7").iterdir() if p.is_dir())[:n]
    imgs = [
        torch.from_numpy(hr_protocol(load_rgb_uint8(sorted(c.glob("*.jpg"))[0]), 96).copy()).permute(2, 0, 1)
        for c in classes
    ]
    return F.interpolate(torch.stack(imgs).float() / 127.5 - 1, size=(size, size), mode="area")


def _flow(conditioned: bool = True, flow_noise: float = 0.2) -> NeurOpDiff:
    unet = UNet(in_channels=6 if conditioned else 3, base_channels=16, channel_mults=(1, 2, 2), attn_resolutions=(),
                image_size=HR, norm_groups=8, dropout=0.0, noise_embedding="time")  # fmt: skip
    torch.nn.init.zeros_(unet.out_conv.weight)
    torch.nn.init.zeros_(unet.out_conv.bias)
    return NeurOpDiff(unet, make_schedule(), None, condition="bicubic", process="flow", flow_noise=flow_noise,
                      conditioned=conditioned)  # fmt: skip


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / F.mse_loss((a.clamp(-1, 1) + 1) / 2, (b + 1) / 2)))


class _Oracle(torch.nn.Module):
    """A UNet stand-in that returns the exact velocity towards `hr` from any point of the path: (HR - x) / (1 - t)."""

    def __init__(self, unet: UNet, hr: torch.Tensor) -> None:
        super().__init__()
        self.in_channels, self.factor, self.noise_embedding = unet.in_channels, unet.factor, "time"
        self.hr, self.levels = hr, []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.levels.append(t.clone())
        return (self.hr - x[:, :3]) / (1 - t.view(-1, 1, 1, 1)).to(x.dtype)


@pytest.mark.parametrize("sampler", ["euler", "heun", "ddim"])
def test_an_oracle_velocity_reaches_hr_in_one_step(sampler):
    hr = torch.rand(2, 3, HR, HR, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    model = _flow()
    model.unet = _Oracle(model.unet, hr)
    lr, _ = degrade(hr, 4.0)
    out = model.sample(lr, (HR, HR), steps=1, sampler=sampler, seed=3)
    torch.testing.assert_close(out, hr, rtol=0, atol=1e-5)
    assert [float(t[0]) for t in model.unet.levels] == [0.0]  # one call, at the source (t = 0)
    # and along K steps the calls visit t = 0, 1/K, ..., (K-1)/K
    model.unet.levels.clear()
    torch.testing.assert_close(model.sample(lr, (HR, HR), steps=4, sampler="euler"), hr, rtol=0, atol=1e-5)
    assert [round(float(t[0]), 6) for t in model.unet.levels] == [0.0, 0.25, 0.5, 0.75]


def test_an_untrained_flow_returns_its_source_prior_plus_noise():
    hr = torch.rand(1, 3, HR, HR) * 2 - 1
    lr, _ = degrade(hr, 4.0)
    model = _flow(flow_noise=0.2)
    cond, _ = model.condition(lr, (HR, HR))
    from neurop_diff.models.neuropdiff import starting_noise

    out = model.sample(lr, (HR, HR), steps=3, seed=5, sampler="euler")
    x_T, _ = starting_noise(5, (1, 3, HR, HR))
    torch.testing.assert_close(out, (cond + 0.2 * x_T).clamp(-1, 1))


def test_flow_levels_and_training_times():
    assert flow_sigmas(4).tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    g = torch.Generator().manual_seed(0)
    t = sample_flow_times(20000, "uniform", generator=g)
    assert t.dtype == torch.float64 and float(t.min()) > 0 and float(t.max()) < 1
    assert abs(float(t.mean()) - 0.5) < 0.01 and abs(float(t.std()) - math.sqrt(1 / 12)) < 0.01
    ln = sample_flow_times(20000, "logit_normal", generator=g)
    logit = torch.log(ln / (1 - ln))  # logit-normal: the logit is N(0, 1)
    assert abs(float(logit.mean())) < 0.03 and abs(float(logit.std()) - 1) < 0.03
    assert float(((ln > 0.25) & (ln < 0.75)).float().mean()) > 0.7  # the middle of the path weighs more
    with pytest.raises(ValueError, match="time_sampling"):
        sample_flow_times(2, "beta")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"process": "flow", "condition": "encoder"}, "image condition"),
        ({"process": "flow", "noise_embedding": "log_sigma"}, "noise_embedding 'time'"),
        ({"process": "diffusion", "noise_embedding": "time"}, "the flow's"),
        ({"process": "diffusion", "conditioned": False}, "conditioned"),
        ({"process": "flow", "flow_noise": -0.1}, "flow_noise"),
        ({"process": "stream"}, "process must be"),
    ],
)
def test_a_process_that_cannot_run_is_named(kw, match):
    kw = {"condition": "bicubic", "noise_embedding": "time", **kw}
    with pytest.raises(ValueError, match=match):
        DiffusionModule(base_channels=8, channel_mults=(1, 2), attn_resolutions=(), image_size=16, norm_groups=4,
                        **kw)  # fmt: skip


def test_a_flow_samples_only_with_its_ode_samplers():
    model = _flow()
    with pytest.raises(ValueError, match="a flow samples with"):
        model.sigmas("dpmpp_2m", 4)
    with pytest.raises(ValueError, match="a flow samples with"):
        model.sigmas("ddim", 4, eta=1.0)
    with pytest.raises(ValueError, match="strength"):
        model.sample(torch.zeros(1, 3, 8, 8), (HR, HR), steps=2, sampler="euler", strength=0.5)


def test_a_tiny_flow_overfits_two_real_images(shared_data):
    hr = _images(shared_data, 2)
    torch.manual_seed(0)
    model = _flow()
    lr, _ = degrade(hr, 4.0)
    prior, _ = model.condition(lr, (HR, HR))  # the bicubic condition is the prior here
    opt = torch.optim.Adam(model.unet.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        t = sample_flow_times(2, generator=g)
        loss = model.training_loss(hr, prior, t, torch.randn(hr.shape, generator=g), "l2")
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        sample = model.eval().sample(lr, (HR, HR), steps=8, sampler="euler", seed=0)
    unit = lambda x: (x.clamp(-1, 1) + 1) / 2  # noqa: E731
    # measured: 37.4 dB against bicubic's 26.9; SWD-l0 75 against 518 (400 steps)
    assert _psnr(sample, hr) > _psnr(prior, hr) + 3.0
    assert swd(unit(sample), unit(hr))["swd_l0"] < 0.5 * swd(unit(prior), unit(hr))["swd_l0"]


def test_projection_moves_an_estimate_onto_its_lr(shared_data):
    hr = _images(shared_data, 3, size=96)
    for scale in (2.0, 4.0, 8.0):
        lr, _ = degrade(hr, scale)
        noise = torch.randn(hr.shape, generator=torch.Generator().manual_seed(0))
        rough = F.interpolate(lr, size=(96, 96), mode="bicubic").clamp(-1, 1) + 0.1 * noise
        errors = [
            float(lr_error(project_to_lr(rough, lr, (96, 96), n), lr, (96, 96)).mean()) for n in (0, 1, 4)
        ]
        # measured on real images: each step about halves the LR error (x2: 0.51x after 1, 0.17x after 4)
        assert errors[1] < 0.6 * errors[0] and errors[2] < 0.25 * errors[0], (scale, errors)
    # a padded canvas keeps its padding; HR itself is a fixed point (its LR is its own degradation)
    lr, _ = degrade(hr, 4.0)
    canvas = F.pad(hr, (0, 8, 0, 8), value=0.5)
    out = project_to_lr(canvas, lr, (96, 96))
    assert torch.equal(out[..., 96:, :], canvas[..., 96:, :]) and torch.equal(
        out[..., :, 96:], canvas[..., :, 96:]
    )
    torch.testing.assert_close(out[..., :96, :96], hr, rtol=0, atol=2e-6)


def test_lr_consistency_makes_samples_downsample_back(shared_data):
    hr = _images(shared_data, 2)
    lr, _ = degrade(hr, 4.0)
    model = _flow(flow_noise=0.3)  # untrained: prior + noise, far from consistent
    plain = model.sample(lr, (HR, HR), steps=2, sampler="euler")
    projected = model.sample(lr, (HR, HR), steps=2, sampler="euler", lr_consistency="project")
    gain = float((lr_psnr(projected, lr) - lr_psnr(plain, lr)).min())
    assert gain > 10.0, gain
    with pytest.raises(ValueError, match="lr_consistency"):
        model.sample(lr, (HR, HR), steps=2, sampler="euler", lr_consistency="always")  # type: ignore[arg-type]
    calls = []

    def denoiser(x, sigma, cond):
        calls.append(sigma)
        return x

    wrapped = consistent_denoiser(denoiser, lr, (HR, HR), iters=1)
    assert wrapped(hr + 0.5, torch.ones(2), None).shape == hr.shape and len(calls) == 1


def test_a_flow_fits_tests_and_upscales_through_the_cli(tmp_path, shared_data):
    cfg = str(REPO / "configs/flow_small.yaml")
    data = [f"--data.init_args.root={shared_data / 'rsscn7'}", "--data.init_args.hr_size=32",
            "--data.init_args.batch_size=2", "--data.init_args.eval_batch_size=2",
            "--data.init_args.max_eval_images=2", "--data.init_args.val_scales=[4]",
            "--data.init_args.test_scales=[4]"]  # fmt: skip
    model = ["--model.init_args.condition=bicubic", "--model.init_args.base_channels=8",
             "--model.init_args.channel_mults=[1, 2]", "--model.init_args.attn_resolutions=[]",
             "--model.init_args.image_size=32", "--model.init_args.norm_groups=4",
             "--model.init_args.sampling_steps=2"]  # fmt: skip

    def trainer(name: str, steps: int) -> list[str]:
        return [f"--trainer.max_steps={steps}", f"--trainer.val_check_interval={steps}",
                f"--trainer.logger.init_args.save_dir={tmp_path}", f"--trainer.logger.init_args.name={name}",
                "--trainer.logger.init_args.version=v0", "--trainer.enable_progress_bar=false"]  # fmt: skip

    main(["fit", "--config", cfg, *data, *model, *trainer("flow", 2)])
    ckpt = tmp_path / "flow/v0/checkpoints/last.ckpt"
    hp = torch.load(ckpt, weights_only=True, map_location="cpu")["hyper_parameters"]
    assert (hp["process"], hp["noise_embedding"], hp["sampler"]) == ("flow", "time", "euler")
    main(["test", "--config", cfg, *data, *model, *trainer("flow_test", 1),
          "--model.init_args.samples=2", "--model.init_args.lr_consistency=project", f"--ckpt_path={ckpt}"])  # fmt: skip
    import csv

    rows = {
        r["method"]: r for r in csv.DictReader((tmp_path / "flow_test/v0/results/test/metrics.csv").open())
    }
    assert float(rows["diffusion"]["seed_std"]) > 0 and float(rows["diffusion"]["lr_psnr"]) > 35
    image = shared_data / "ucmerced" / "airplane" / "airplane00.png"
    main(["upscale", str(image), "--checkpoint", str(ckpt), "--scale", "1.25", "--steps", "2",
          "--out", str(tmp_path / "up"), "--no-progress"])  # fmt: skip
    from PIL import Image

    (out,) = (tmp_path / "up").iterdir()
    assert Image.open(out).size == (320, 320)
