"""Inputs that were silently wrong: float TIFFs, scales too large for the image, NaN pixels, a corrupt .npy cache, a
truncated test image; upscale's one-line errors (--out, --device, a corrupt checkpoint) and its memory check; a bad
init argument of the model / data / logger names itself in one line."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from neurop_diff.cli import main
from neurop_diff.cli.upscale import upscale_main
from neurop_diff.data import SRDataModule
from neurop_diff.data.datasets import CorruptImageError, ImageFolder
from neurop_diff.data.images import FloatImageWarning
from neurop_diff.inference import io
from neurop_diff.inference import memory as memory_mod
from neurop_diff.inference.upscale import upscale
from neurop_diff.lit import DiffusionModule, OperatorModule
from test_cli import REPO, TINY_UNET
from test_loading_errors import _args, _save

TINY = {"encoder_blocks": 1, "encoder_width": 8, "width": 16, "blocks": 1, "heads": 2}


@pytest.fixture(scope="module")
def photo(shared_data) -> np.ndarray:
    return np.array(Image.open(shared_data / "aid_150px" / "Airport" / "airport_1.png").convert("L"))[
        :48, :48
    ]


@pytest.fixture(scope="module")
def op_ckpt(tmp_path_factory) -> Path:
    module = OperatorModule(**TINY)
    path = tmp_path_factory.mktemp("op") / "op.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def _float_tif(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.float32)).save(path)  # PIL mode F
    return path


def test_float_tiffs_follow_one_rule_in_datasets_and_upscale(tmp_path, photo):
    reflectance = photo / 255.0
    tif = _float_tif(tmp_path / "f" / "cls" / "a.tif", reflectance)
    with pytest.warns(FloatImageWarning, match="reflectance"):
        data = ImageFolder(tmp_path / "f", split="train", hr_size=None, fractions=(1, 0, 0), progress=False)
    hr = data[0]["hr"][0].numpy()
    assert hr.max() > 100  # was all black
    assert np.abs(hr.astype(int) - photo.astype(int)).max() <= 1
    with pytest.warns(FloatImageWarning, match="reflectance"):
        raster = io.read_image(tif)
    assert np.abs(raster.rgb[..., 0] * 255 - hr).max() <= 0.51  # upscale reads it the same way
    # 0..255 floats: the other rule, said as well; values fitting neither: an error naming the file
    with pytest.warns(FloatImageWarning, match="0..255"):
        raster = io.read_image(_float_tif(tmp_path / "g.tif", photo.astype(np.float32)))
    assert np.abs(raster.rgb[..., 0] * 255 - photo).max() <= 0.51
    with pytest.raises(ValueError, match=r"bad\.tif.*fit neither float rule"):
        io.read_image(_float_tif(tmp_path / "bad.tif", photo.astype(np.float32) - 300))


def test_scales_too_large_for_the_image_are_refused_at_start_up(shared_data):
    with pytest.raises(
        ValueError,
        match=r"test_scales: scale x1000 on hr_size 96 px images gives a 1 px LR, below the smallest LR of 4 px",
    ):
        SRDataModule(dataset="rsscn7", root=str(shared_data / "rsscn7"), hr_size=96, test_scales=[1000])
    with pytest.raises(ValueError, match=r"val_scales: scale x30 on hr_size 96"):
        SRDataModule(hr_size=96, val_scales=[2, 30])
    with pytest.raises(ValueError, match=r"scale_max: x30 on hr_size 96"):
        SRDataModule(hr_size=96, scale_max=30)
    SRDataModule(hr_size=96, test_scales=[24])  # an LR of 4 px: the documented minimum


def test_nan_pixels_warn_and_an_all_nan_image_is_refused(tmp_path, photo, op_ckpt, capsys):
    values = photo / 255.0
    values[:5, :7] = np.nan
    src = _float_tif(tmp_path / "nan.tif", values)
    with pytest.warns(
        UserWarning, match=r"35 pixel\(s\) hold NaN/inf values and the file has no nodata value"
    ):
        out = upscale(str(src), 2, checkpoint=op_ckpt, device="cpu", progress=False)
    assert np.isnan(out[:10, :14]).all() and np.isfinite(out[10:, 14:]).all()  # nodata stays nodata
    empty = _float_tif(tmp_path / "empty.tif", np.full((16, 16), np.nan))
    with pytest.raises(ValueError, match="every pixel is NaN"):
        upscale(str(empty), 2, checkpoint=op_ckpt, device="cpu")
    with pytest.raises(SystemExit) as exc:
        upscale_main([str(empty), "--checkpoint", str(op_ckpt), "--scale", "2", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and "every pixel is NaN" in capsys.readouterr().err
    assert not (tmp_path / "o" / "empty_x2.tif").exists()


def test_corrupt_npy_cache_is_named_and_rebuilt(tmp_path, shared_data):
    kwargs = {"split": "train", "hr_size": 32, "max_images": 3, "cache_dir": tmp_path, "progress": False}
    first = np.array(ImageFolder(shared_data / "aid_150px", **kwargs).images)
    (cache,) = tmp_path.glob("*.npy")
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    with pytest.warns(UserWarning, match=rf"{cache.name} is corrupt.*rebuilding"):
        again = ImageFolder(shared_data / "aid_150px", **kwargs)
    assert np.array_equal(np.array(again.images), first)


def test_truncated_test_image_fails_at_fit_setup(tmp_path, shared_data):
    folder = tmp_path / "imgs" / "cls"
    folder.mkdir(parents=True)
    for src in sorted((shared_data / "rsscn7").glob("*/*.jpg"))[:5]:
        shutil.copy(src, folder / src.name)
    last = sorted(folder.iterdir())[-1]  # 3/1/1: the test image
    last.write_bytes(last.read_bytes()[:3000])
    dm = SRDataModule(dataset="folder", root=str(tmp_path / "imgs"), hr_size=48, num_workers=0)
    with pytest.raises(CorruptImageError, match=last.name):
        dm.setup("fit")


def test_upscale_one_line_errors(tmp_path, photo, op_ckpt, capsys):
    image = tmp_path / "in.png"
    Image.fromarray(photo).save(image)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(op_ckpt.read_bytes()[:1000])
    cases = [
        (["--out", str(a_file)], "is an existing file"),
        (["--out", str(a_file / "sub")], "is a file, not a folder"),
        (["--out", str(tmp_path / "o"), "--device", "tpu9"], "--device: unknown device 'tpu9'"),
        (
            ["--out", str(tmp_path / "o"), "--checkpoint", str(corrupt)],
            "not a checkpoint: truncated or corrupt",
        ),
    ]
    if torch.cuda.device_count() < 8:
        cases.append((["--out", str(tmp_path / "o"), "--device", "cuda:7"], "'cuda:7' is not available"))
    for extra, said in cases:
        argv = [str(image), "--scale", "2", "--checkpoint", str(op_ckpt), *extra]
        with pytest.raises(SystemExit) as exc:
            upscale_main(argv)
        err = capsys.readouterr().err.strip()
        assert exc.value.code == 2 and said in err and "\n" not in err and "Traceback" not in err, (
            extra,
            err,
        )


def test_upscale_memory_is_checked_before_any_work(tmp_path, photo, op_ckpt, monkeypatch, capsys):
    image = tmp_path / "in.png"
    Image.fromarray(photo).save(image)
    monkeypatch.setattr(memory_mod, "available_bytes", lambda: 2 * 10**9)
    need = memory_mod.estimate_bytes((48 * 40, 48 * 40), "operator")
    assert need > 1 << 30
    with pytest.raises(memory_mod.MemoryCheckError, match=r"needs about \d+\.\d GB of memory"):
        upscale(str(image), 400, checkpoint=op_ckpt, device="cpu")  # 19200^2: ~30 GB
    with pytest.raises(SystemExit) as exc:
        upscale_main(
            [str(image), "--scale", "400", "--checkpoint", str(op_ckpt), "--out", str(tmp_path / "o")]
        )
    assert exc.value.code == 2 and "2.0 GB available" in capsys.readouterr().err
    upscale(str(image), 2, checkpoint=op_ckpt, device="cpu")  # small: runs


DIFFUSION_CFG = str(REPO / "configs/diffusion_small.yaml")
#: (command line after `--config configs/diffusion_small.yaml`, what the last line says: the one message naming the
#: bad value); {ckpt}: a diffusion checkpoint. The first three fail in the class's constructor (its own message, one
#: line), the others when parsing (jsonargparse's, on one line with the whole key).
BAD_INIT_ARGS = [
    (
        ["test", "--model.init_args.condition=bicubic", *TINY_UNET, "--data.init_args.test_scales=[1000]",
         "--ckpt_path={ckpt}"],
        "test: error: test_scales: scale x1000 on hr_size 96 px images gives a 1 px LR",
    ),
    (
        ["fit", "--model.init_args.operator_ckpt={ckpt}"],
        "fit: error: {ckpt} is a DiffusionModule checkpoint (stage 2",
    ),
    (
        ["fit", "--model.init_args.condition=bicubic", "--model.init_args.sampling_steps=-3"],
        "fit: error: sampling_steps must be",
    ),
    (
        ["fit", "--model.init_args.sampler=bogus"],
        """error: Parser key "model.init_args.sampler": Expected a typing.Literal['ddim', 'ddpm', 'euler', 'heun', """
        """'dpmpp_2m']. Got value: bogus""",
    ),
    (
        ["fit", '--data.init_args.val_scales=[2, "a"]'],
        """error: Parser key "data.init_args.val_scales": Expected a <class 'float'>. Got value: a""",
    ),
    (
        ["fit", "--trainer.logger.init_args.flush_logs_every_n_steps=abc"],
        """error: Parser key "trainer.logger.init_args.flush_logs_every_n_steps": Expected a <class 'int'>. """
        "Got value: abc",
    ),
    (
        ["fit", "--model.init_args.lr_schedul=[1e-4]"],
        "error: Parser key \"model\": Problem with given class_path 'neurop_diff.lit.DiffusionModule': Option "
        "'lr_schedul' is not accepted\n"
        "  hint: 'lr_schedul' is not an argument of neurop_diff.lit.DiffusionModule: did you mean 'lr_schedule'?",
    ),
]  # fmt: skip


@pytest.fixture(scope="module")
def diff_ckpt(tmp_path_factory) -> Path:
    """A tiny diffusion checkpoint with diffusion_small.yaml's architecture settings (TINY_UNET's sizes)."""
    module = DiffusionModule(
        condition="bicubic", prediction="x0", residual=True, noise_embedding="log_sigma", res_blocks=1,
        **_args(TINY_UNET),
    )  # fmt: skip
    return _save(module, tmp_path_factory.mktemp("diffusion") / "diffusion.ckpt")


@pytest.mark.parametrize("args, said", BAD_INIT_ARGS, ids=[a[-1].split("=")[0][2:] for a, _ in BAD_INIT_ARGS])
def test_a_bad_init_argument_ends_on_the_one_message_naming_it(args, said, diff_ckpt, monkeypatch, capsys):
    """jsonargparse reports a class_path's bad init argument (model, data, logger: each a Union of the class and
    None) as a Union error with a dump of the whole value as its last line: only the inner message is shown."""
    command, *rest = (a.format(ckpt=diff_ckpt) for a in args)
    monkeypatch.setattr(sys, "argv", ["neurop-diff", command, "--config", DIFFUSION_CFG, *rest])
    with pytest.raises(SystemExit) as exc:
        main()  # as the console script runs it
    code = exc.value.code
    assert code not in (0, None)
    printed = capsys.readouterr().err + (f"{code}\n" if isinstance(code, str) else "")  # sys.exit(message)
    lines = [line for line in printed.splitlines() if line.strip()]
    said = said.format(ckpt=diff_ckpt)
    if said.startswith(("fit: error: ", "test: error: ")):  # the class's own message, as main() ends on it
        assert lines[-1].startswith(f"neurop-diff {said}") and code != 2, printed[-2000:]
    else:  # parse errors: jsonargparse's usage, then the error (and hints)
        assert "\n".join(lines).endswith(said) and code == 2, printed[-2000:]
    assert "Namespace(" not in printed and "Union subtypes" not in printed and "NestedArg" not in printed
