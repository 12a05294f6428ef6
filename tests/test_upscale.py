"""The upscale API and `neurop-diff upscale` on tiny random-weight models and real images."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import lightning
import numpy as np
import pytest
import torch
from PIL import Image

from neurop_diff.cli.upscale import output_name, upscale_main
from neurop_diff.inference import (
    OutOfDistributionScaleWarning,
    clear_model_cache,
    load_model,
    upscale,
    upscale_tensor,
)
from neurop_diff.inference.upscale import output_size
from neurop_diff.lit.diffusion import DiffusionModule
from neurop_diff.lit.operator import OperatorModule

TINY_OPERATOR = {"encoder_blocks": 1, "encoder_width": 8, "width": 16, "blocks": 1, "heads": 2}
TINY_UNET = {
    "base_channels": 16,
    "channel_mults": (1, 2),
    "attn_resolutions": (),
    "image_size": 16,
    "norm_groups": 8,
    "dropout": 0.0,
    "sampling_steps": 3,
}


def save_checkpoint(module: lightning.LightningModule, path: Path, scale_max: float | None = None) -> Path:
    """The Lightning checkpoint format `load_from_checkpoint` reads (plus the datamodule's scale range)."""
    ckpt = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    if scale_max is not None:
        ckpt["datamodule_hyper_parameters"] = {"scale_min": 1.0, "scale_max": scale_max}
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def modules():
    torch.manual_seed(0)
    return OperatorModule(**TINY_OPERATOR).eval(), DiffusionModule(
        operator_args=TINY_OPERATOR, **TINY_UNET
    ).eval()


@pytest.fixture(scope="module")
def checkpoints(modules, tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    op, diff = modules
    return save_checkpoint(op, root / "operator.ckpt"), save_checkpoint(
        diff, root / "diffusion.ckpt", scale_max=4.0
    )


@pytest.fixture(scope="module")
def photo(shared_data) -> np.ndarray:
    """A real 150x150 aerial image, cut to 30x36 (small and not square)."""
    img = np.array(Image.open(shared_data / "aid_150px" / "Airport" / "airport_1.png").convert("RGB"))
    return img[40:70, 50:86]


def _expected_operator(model, img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    lr = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None] * 2 - 1
    with torch.no_grad():
        sr = model(lr, size, chunk_size=None).clamp(-1, 1)
    return np.round((sr[0].permute(1, 2, 0).numpy() + 1) / 2 * 255).astype(np.uint8)


def test_output_size_rules():
    assert output_size((30, 36), 3.7) == (111, 133)
    assert output_size((30, 36), 1) == (30, 36)
    assert output_size((30, 36), size=(64, 80)) == (64, 80)
    for bad in (0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale"):
            output_size((30, 36), bad)
    with pytest.raises(ValueError, match="exactly one"):
        output_size((30, 36), 2, (60, 72))
    with pytest.raises(ValueError, match="exactly one"):
        output_size((30, 36))
    with pytest.raises(ValueError, match="smaller than the input"):
        output_size((30, 36), size=(60, 30))


def test_operator_stage_matches_the_operator(modules, photo):
    op, diff = modules
    out = upscale(photo, 3.7, checkpoint=op, device="cpu")
    assert out.dtype == np.uint8 and out.shape == (111, 133, 3)
    expected = _expected_operator(op.model, photo, (111, 133))
    assert np.abs(out.astype(int) - expected).max() <= 1
    # A diffusion checkpoint's operator stage is its own operator.
    out = upscale(photo, size=(64, 80), checkpoint=diff, stage="operator", device="cpu")
    assert np.abs(out.astype(int) - _expected_operator(diff.operator, photo, (64, 80))).max() <= 1


def test_untiled_diffusion_equals_the_modules_own_sampler(modules, photo):
    _, diff = modules
    lr = torch.from_numpy(photo[:8, :8].astype(np.float32) / 255).permute(2, 0, 1)[None] * 2 - 1
    batch = {"lr": lr, "hr": torch.zeros(1, 3, 16, 16), "scale": torch.tensor([2.0])}
    with torch.no_grad():
        ref = diff.super_resolve(batch, 0)["diffusion"].clamp(-1, 1)
    model = load_model(diff, "cpu")
    out = upscale_tensor(lr, (16, 16), model, steps=diff.hparams.sampling_steps, seed=diff.hparams.seed)
    assert torch.equal(out, ref)
    operator_only = upscale_tensor(lr, (16, 16), model, stage="operator")
    assert not torch.allclose(out, operator_only, atol=1e-2)  # the diffusion stage really ran


def test_tiled_diffusion_is_seeded_and_sized(modules, photo):
    _, diff = modules
    kw = {"checkpoint": diff, "steps": 2, "tile": 16, "overlap": 4, "device": "cpu", "progress": False}
    a = upscale(photo[:12, :14], 2.5, seed=1, **kw)  # 30 x 35: tiled (tile 16)
    b = upscale(photo[:12, :14], 2.5, seed=1, **kw)
    c = upscale(photo[:12, :14], 2.5, seed=2, **kw)
    assert a.shape == (30, 35, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    with pytest.raises(ValueError, match="multiple of 2"):
        upscale(photo[:12, :14], 2.5, tile=15, checkpoint=diff, device="cpu")


def test_pil_grey_and_float_inputs(modules, photo):
    op, _ = modules
    pil = upscale(Image.fromarray(photo), 2, checkpoint=op, device="cpu")
    assert isinstance(pil, Image.Image) and pil.mode == "RGB" and pil.size == (72, 60)
    grey = Image.fromarray(photo).convert("L")
    out = upscale(grey, 2, checkpoint=op, device="cpu")
    assert out.mode == "L" and out.size == (72, 60)
    # Grey: replicated to RGB for the model, the output is the mean of its three channels.
    rgb = upscale(np.repeat(np.array(grey)[..., None], 3, axis=2), 2, checkpoint=op, device="cpu")
    assert np.abs(np.array(out).astype(int) - rgb.astype(np.float64).mean(axis=2)).max() <= 1
    flt = upscale(photo.astype(np.float32) / 255, 2, checkpoint=op, device="cpu")
    assert flt.dtype == np.float32 and flt.min() >= 0 and flt.max() <= 1
    assert np.abs(flt * 255 - np.array(pil).astype(np.float32)).max() <= 0.51
    with pytest.raises(ValueError, match="channels first"):
        upscale(photo.transpose(2, 0, 1), 2, checkpoint=op, device="cpu")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):  # fits neither float rule (0..1, 0..255)
        upscale(photo.astype(np.float32) + 300, 2, checkpoint=op, device="cpu")


def test_checkpoints_stages_and_cache(checkpoints, modules, photo):
    op_path, diff_path = checkpoints
    clear_model_cache()
    first = load_model(op_path, "cpu")
    assert first.stage == "operator" and load_model(op_path, "cpu") is first  # cached per (file, device)
    out = upscale(photo, 2, checkpoint=op_path, device="cpu")  # an operator checkpoint: the operator output
    assert np.abs(out.astype(int) - _expected_operator(modules[0].model, photo, (60, 72))).max() <= 1
    with pytest.raises(ValueError, match="operator checkpoint"):
        upscale(photo, 2, checkpoint=op_path, stage="diffusion", device="cpu")
    loaded = load_model(diff_path, "cpu")
    assert loaded.stage == "diffusion" and loaded.scale_max == 4.0
    for name, a in modules[1].model.state_dict().items():  # the plain model, no LightningModule
        assert torch.equal(a, loaded.diffusion.state_dict()[name]), name
    os.utime(op_path, ns=(0, 0))  # a rewritten file is reloaded
    assert load_model(op_path, "cpu") is not first
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        load_model(op_path.parent / "missing.ckpt", "cpu")


def test_out_of_distribution_scales_warn_once(checkpoints, photo):
    _, diff_path = checkpoints  # trained up to x4
    kw = {"checkpoint": diff_path, "stage": "operator", "device": "cpu"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        upscale(photo[:10, :10], 4, **kw)
        assert not [w for w in caught if issubclass(w.category, OutOfDistributionScaleWarning)]
        upscale(photo[:10, :10], 5.5, **kw)
    ood = [w for w in caught if issubclass(w.category, OutOfDistributionScaleWarning)]
    assert len(ood) == 1 and "out of distribution" in str(ood[0].message) and "x4" in str(ood[0].message)


def test_cli_upscales_files_folders_and_globs(checkpoints, shared_data, tmp_path, capsys):
    op_path, _ = checkpoints
    src = tmp_path / "in"
    src.mkdir()
    photo = Image.open(shared_data / "aid_150px" / "Airport" / "airport_1.png").convert("RGB")
    photo.crop((0, 0, 40, 30)).save(src / "a.png")
    photo.crop((40, 0, 80, 30)).save(src / "b.jpg", quality=95)
    photo.crop((0, 40, 40, 70)).save(src / "c.tif")
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    upscale_main([str(src / "a.png"), str(src / "*.jpg"), str(src), "--checkpoint", str(op_path), "--scale", "3.7",
                  "--out", str(out), "--no-progress"])  # fmt: skip
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a_x3.7.png", "b_x3.7.jpg", "c_x3.7.tif"]
    for name in names:
        with Image.open(out / name) as im:
            assert im.size == (148, 111) and im.mode == "RGB"
    with pytest.raises(SystemExit):  # outputs exist
        upscale_main([str(src / "a.png"), "--checkpoint", str(op_path), "--scale", "3.7", "--out", str(out)])
    upscale_main([str(src / "a.png"), "--checkpoint", str(op_path), "--size", "50", "64", "--out", str(out),
                  "--no-progress"])  # fmt: skip
    assert Image.open(out / "a_50x64.png").size == (64, 50)
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nothing/*.png"], "no images"),
        (["missing.png"], "input not found"),
        (["{a}", "--stage", "diffusion"], "operator checkpoint"),
        (["{a}", "--scale", "0.5"], "--scale must be >= 1"),
    ],
)
def test_cli_errors_name_the_problem(checkpoints, tmp_path, capsys, args, message):
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    argv = [a.format(a=img) for a in args]
    if "--scale" not in argv:
        argv += ["--scale", "2"]
    with pytest.raises(SystemExit):
        upscale_main(
            [*argv, "--checkpoint", str(checkpoints[0]), "--out", str(tmp_path / "o"), "--no-progress"]
        )
    assert message in capsys.readouterr().err


def test_output_names():
    assert output_name(Path("x/scene.tif"), 4.0, None) == "scene_x4.tif"
    assert output_name(Path("scene.jpeg"), 2.5, None) == "scene_x2.5.jpeg"
    assert output_name(Path("scene.png"), None, (100, 80)) == "scene_100x80.png"


def test_sampling_precision_per_device():
    """The UNet samples in float32 on CPU (bf16 is slower there) and under bf16 autocast on capable GPUs."""
    from neurop_diff.inference.device import sampling_autocast

    with sampling_autocast(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        with sampling_autocast(torch.device("cuda")):
            x = torch.ones(2, 2, device="cuda")
            assert (x @ x).dtype == torch.bfloat16


def test_inference_loads_plain_models_without_a_lightning_module(checkpoints, modules, photo, monkeypatch):
    """One Checkpoint view reads the file once and builds NeurOp-Diff with build_neuropdiff: the upscale of a
    diffusion checkpoint equals the module's own sample, and no LightningModule is constructed."""
    from neurop_diff.diffusion.options import SamplingOptions
    from neurop_diff.models.neuropdiff import NeurOpDiff
    from neurop_diff.weights.checkpoint import Checkpoint

    op_path, diff_path = checkpoints
    ckpt = Checkpoint.read(diff_path)
    assert ckpt.kind == "DiffusionModule" and ckpt.data_hparams["scale_max"] == 4.0
    assert ckpt.sampling() == SamplingOptions(steps=3) == modules[1].sampling
    assert ckpt.sampling(steps=5, sampler=None).steps == 5
    with pytest.raises(ValueError, match="operator"):
        Checkpoint.read(op_path).neuropdiff()  # an operator checkpoint holds no NeurOp-Diff
    assert type(Checkpoint.read(op_path).operator()).__name__ == "SRNO"

    def refuse(*args, **kwargs):
        raise AssertionError("inference must not build a LightningModule")

    monkeypatch.setattr(DiffusionModule, "__init__", refuse)
    monkeypatch.setattr(OperatorModule, "__init__", refuse)
    clear_model_cache()
    loaded = load_model(diff_path, "cpu")
    assert isinstance(loaded.diffusion, NeurOpDiff) and loaded.tile == 16
    lr = torch.from_numpy(photo.astype(np.float32) / 255).permute(2, 0, 1)[None] * 2 - 1
    ours = upscale_tensor(lr, (60, 72), loaded, seed=3, tile=80)
    with torch.no_grad():
        theirs = modules[1].model.sample(lr, (60, 72), steps=3, spacing="leading", seed=3).clamp(-1, 1)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert load_model(op_path, "cpu").stage == "operator"
    clear_model_cache()


def test_the_operator_of_a_diffusion_checkpoint_is_its_stored_one(checkpoints, modules):
    from neurop_diff.weights.checkpoint import Checkpoint

    operator = Checkpoint.read(checkpoints[1]).operator()
    for name, a in modules[1].operator.state_dict().items():
        assert torch.equal(a, operator.state_dict()[name]), name
