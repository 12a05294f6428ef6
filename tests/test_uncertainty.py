"""`upscale --samples K`: mean and per-pixel std of K diffusion samples, in memory that does not grow with K."""

from __future__ import annotations

import gc
import importlib
import weakref

import numpy as np
import pytest
import torch
from PIL import Image

from neurop_diff.cli.upscale import upscale_main
from neurop_diff.inference import load_model, upscale, upscale_file, upscale_tensor
from neurop_diff.inference.ensemble import RunningStats, mean_std
from neurop_diff.inference.memory import estimate_bytes
from neurop_diff.inference.uncertainty import STD_MAX, colour_map, std_paths
from neurop_diff.lit.diffusion import DiffusionModule
from neurop_diff.lit.operator import OperatorModule
from test_upscale import TINY_OPERATOR, TINY_UNET, save_checkpoint

# The module (the package re-exports the function under the same name).
upscale_mod = importlib.import_module("neurop_diff.inference.upscale")
KW = {"steps": 2, "device": "cpu", "progress": False}


@pytest.fixture(scope="module")
def diffusion():
    torch.manual_seed(0)  # untrained: random weights
    return DiffusionModule(operator_args=TINY_OPERATOR, **TINY_UNET).eval()


@pytest.fixture(scope="module")
def photo(shared_data) -> np.ndarray:
    """A real aerial image, cut to 8x8 (one 16 px tile at x2)."""
    img = np.array(Image.open(shared_data / "aid_150px" / "Airport" / "airport_1.png").convert("RGB"))
    return img[40:48, 50:58]


def _lr(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None] * 2 - 1


def test_welford_equals_mean_and_std_of_the_stack():
    g = torch.Generator().manual_seed(1)
    samples = [
        torch.randn(2, 3, 5, 7, generator=g) * (1 + k) + 10.0 for k in range(9)
    ]  # offset: cancellation
    stats = RunningStats()
    for x in samples:
        stats.update(x.float())
    stack = torch.stack(samples).double()
    assert stats.count == 9
    torch.testing.assert_close(stats.mean, stack.mean(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(stats.std(), stack.std(0), rtol=1e-12, atol=1e-12)  # unbiased, as torch
    torch.testing.assert_close(stats.variance(0), stack.var(0, correction=0), rtol=1e-12, atol=1e-12)
    # Only two canvases are kept, whatever the number of samples.
    held = [v for v in vars(stats).values() if isinstance(v, torch.Tensor)]
    assert len(held) == 2 and all(t.shape == (2, 3, 5, 7) and t.dtype == torch.float64 for t in held)
    with pytest.raises(ValueError, match="shape"):
        stats.update(torch.zeros(3, 5, 7))
    with pytest.raises(ValueError, match="no samples"):
        RunningStats().std()
    # Identical samples: the mean is the sample exactly, the std exactly 0.
    mean, std, n = mean_std([samples[0]] * 5)
    assert n == 5 and torch.equal(mean.float(), samples[0]) and torch.count_nonzero(std) == 0


def test_k_samples_of_an_untrained_model_differ(diffusion, photo):
    mean, std = upscale(photo.astype(np.float32) / 255, 2, checkpoint=diffusion, samples=4, seed=5,
                        return_std=True, **KW)  # fmt: skip
    assert mean.shape == (16, 16, 3) and std.shape == (16, 16, 3) and std.dtype == np.float32
    assert (std > 0).mean() > 0.9 and std.mean() > 1e-2  # untrained: a wide spread (some pixels clamp)
    # The mean and std are those of the single samples of seeds 5..8 (sample k = seed + k).
    singles = np.stack([upscale(photo.astype(np.float32) / 255, 2, checkpoint=diffusion, seed=5 + k, **KW)
                        for k in range(4)])  # fmt: skip
    np.testing.assert_allclose(mean, singles.mean(0), atol=1e-6)
    np.testing.assert_allclose(std, singles.std(0, ddof=1), atol=1e-5)
    # A grey image: the std of the written band (the channel mean of each sample).
    grey = photo.astype(np.float32).mean(axis=2) / 255
    g_mean, g_std = upscale(grey, 2, checkpoint=diffusion, samples=3, return_std=True, **KW)
    g_singles = np.stack([upscale(grey, 2, checkpoint=diffusion, seed=k, **KW) for k in range(3)])
    assert g_mean.shape == g_std.shape == (16, 16)
    np.testing.assert_allclose(g_mean, g_singles.mean(0), atol=1e-6)
    np.testing.assert_allclose(g_std, g_singles.std(0, ddof=1), atol=1e-5)


def test_mean_of_identical_seed_samples_is_one_sample(diffusion, photo):
    model = load_model(diffusion, "cpu")
    lr = _lr(photo)
    one = upscale_tensor(lr, (16, 16), model, seed=3, steps=2)
    mean, std, n = mean_std(upscale_mod.iter_samples(lr, (16, 16), model, seeds=[3] * 4, steps=2))
    assert n == 4 and torch.equal(mean.float(), one) and torch.count_nonzero(std) == 0
    # Different seeds through the same path do differ (the condition is shared, the noise is not).
    _, std, _ = mean_std(upscale_mod.iter_samples(lr, (16, 16), model, seeds=[3, 4], steps=2))
    assert std.mean() > 1e-2


def _tensor_bytes() -> int:
    """Bytes of the tensors alive in Python now (each storage once): what the sampling loop holds."""
    storages = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor) and obj.device.type == "cpu":  # type(): no proxy lookups
            st = obj.untyped_storage()
            storages[st.data_ptr()] = st.nbytes()
    return sum(storages.values())


def test_memory_does_not_grow_with_k(diffusion, photo, monkeypatch):
    """No sample outlives the next one's drawing, and the tensors held are the same from sample 2 to 16."""
    draw = upscale_mod.iter_samples
    alive: list[int] = []
    held: list[int] = []

    def tracked(*args, **kwargs):
        refs = []
        for x in draw(*args, **kwargs):
            alive.append(sum(r() is not None for r in refs))  # earlier samples still referenced somewhere
            held.append(_tensor_bytes())
            refs.append(weakref.ref(x))
            yield x
            del x

    monkeypatch.setattr(upscale_mod, "iter_samples", tracked)
    big = np.array(Image.fromarray(photo).resize((32, 32)))
    upscale(big, 2, checkpoint=diffusion, samples=16, tile=64, steps=1, device="cpu", progress=False)
    assert len(alive) == 16 and max(alive) == 0
    canvas = 64 * 64 * 3 * 8  # one float64 RGB canvas of the output
    # From the 2nd sample on: the model, the condition, the running mean and M2 and the new sample, always.
    assert held[1] - held[0] >= 2 * canvas  # the accumulators appear after the first sample...
    assert max(held[1:]) == min(held[1:]), [h - held[1] for h in held]  # ...and nothing else accumulates
    # The memory check's estimate adds one fixed term for K > 1, the same for K = 2 and K = 16.
    assert estimate_bytes((192, 192), "diffusion", 2) == estimate_bytes((192, 192), "diffusion", 16)
    assert estimate_bytes((192, 192), "diffusion", 2) > estimate_bytes((192, 192), "diffusion", 1)


def test_operator_stage_refuses_several_samples(diffusion, photo):
    with pytest.raises(ValueError, match="deterministic"):
        upscale(photo, 2, checkpoint=diffusion, stage="operator", samples=3, device="cpu")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="samples must be an integer >= 1"):
            upscale(photo, 2, checkpoint=diffusion, samples=bad, **KW)
    with pytest.raises(ValueError, match="return_std needs samples >= 2"):
        upscale(photo, 2, checkpoint=diffusion, return_std=True, **KW)


def test_colour_map_scale():
    std = np.array([[0.0, STD_MAX / 2, STD_MAX, 1.0, np.nan]])
    rgb = colour_map(std)
    assert rgb.shape == (1, 5, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[0, 2], rgb[0, 3])  # saturated above std_max
    assert rgb[0, 0].sum() < rgb[0, 1].sum() < rgb[0, 2].sum()  # magma: brighter = more spread
    assert rgb[0, 4].tolist() == [0, 0, 0]


@pytest.fixture(scope="module")
def checkpoints(diffusion, tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    op = save_checkpoint(OperatorModule(**TINY_OPERATOR), root / "operator.ckpt")
    return op, save_checkpoint(diffusion, root / "diffusion.ckpt")


def test_cli_writes_mean_and_std_map(checkpoints, photo, tmp_path, capsys):
    src = tmp_path / "a.png"
    Image.fromarray(photo).save(src)
    out = tmp_path / "out"
    upscale_main([str(src), "--checkpoint", str(checkpoints[1]), "--scale", "2", "--samples", "3", "--steps", "2",
                  "--std-max", "0.2", "--out", str(out), "--no-progress"])  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["a_x2.png", "a_x2_std.npy", "a_x2_std.png"]
    assert std_paths(out / "a_x2.png", geo=False) == (out / "a_x2_std.png", out / "a_x2_std.npy")
    said = capsys.readouterr().out
    assert "mean of 3 samples" in said and "colour scale 0..0.2" in said and "seeds 0..2" in said
    _, expected = upscale(photo, 2, checkpoint=checkpoints[1], samples=3, return_std=True, **KW)
    std = np.load(out / "a_x2_std.npy")
    np.testing.assert_allclose(std, expected.mean(axis=2), atol=1e-6)  # channel mean, [0, 1] units
    with Image.open(out / "a_x2_std.png") as im:
        assert im.size == (16, 16) and im.mode == "RGB"
        assert im.text["std_max"] == "0.2" and im.text["samples"] == "3" and im.text["colormap"] == "magma"
        assert np.array_equal(np.asarray(im), colour_map(std, 0.2))
    with Image.open(out / "a_x2.png") as im:
        assert np.array_equal(np.asarray(im), upscale(photo, 2, checkpoint=checkpoints[1], samples=3, **KW))
    with pytest.raises(SystemExit):  # the std map exists too: refused without --overwrite
        (out / "a_x2.png").unlink()
        upscale_main([str(src), "--checkpoint", str(checkpoints[1]), "--scale", "2", "--samples", "3",
                      "--out", str(out)])  # fmt: skip
    assert "a_x2_std.png exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--samples", "0"], "--samples must be an integer >= 1"),
        (["--samples", "two"], "--samples must be an integer >= 1"),
        (["--samples", "3"], "--samples 3"),  # with the operator checkpoint
        (["--samples", "2", "--std-max", "0"], "--std-max must be a number > 0"),
    ],
)
def test_cli_rejects_bad_samples(checkpoints, tmp_path, capsys, args, message):
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    with pytest.raises(SystemExit) as exc:
        upscale_main([str(img), "--checkpoint", str(checkpoints[0]), "--scale", "2", "--out",
                      str(tmp_path / "o"), "--no-progress", *args])  # fmt: skip
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err
    if args == ["--samples", "3"]:
        assert "deterministic" in err and not (tmp_path / "o").exists()


def test_geotiff_gets_a_float_std_file(diffusion, tmp_path, shared_data):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    rgb = np.array(Image.open(shared_data / "rsscn7" / "aGrass" / "a001.jpg").convert("RGB"))[100:108, 60:68]
    data = rgb.astype(np.uint16).transpose(2, 0, 1) * 40 + 200  # uint16 'reflectance', stretched per band
    data[:, :2, :2] = 0  # nodata block
    profile = {"driver": "GTiff", "height": 8, "width": 8, "count": 3, "dtype": "uint16", "crs": "EPSG:32633",
               "transform": from_origin(500_000.0, 5_000_000.0, 0.3, 0.5), "nodata": 0}  # fmt: skip
    src = tmp_path / "scene.tif"
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(data)
    notes: list[str] = []
    out = upscale_file(src, tmp_path / "scene_x2.tif", 2, checkpoint=diffusion, samples=3, report=notes.append,
                       **KW)  # fmt: skip
    (std_path,) = std_paths(out, geo=True)
    assert std_path.name == "scene_x2_std.tif" and "float32 in the output's value units" in notes[0]
    with rasterio.open(out) as mean_file, rasterio.open(std_path) as std_file:
        assert mean_file.count == 3 and mean_file.dtypes == ("uint16",) * 3  # the mean keeps the input dtype
        assert std_file.count == 1 and std_file.dtypes == ("float32",) and std_file.descriptions == ("std",)
        assert std_file.crs == mean_file.crs and std_file.transform == mean_file.transform
        assert (std_file.width, std_file.height) == (16, 16) and np.isnan(std_file.nodata)
        assert std_file.tags()["SAMPLES"] == "3"
        band = std_file.read(1)
    assert np.isnan(band[:4, :4]).all() and np.isfinite(band[4:, 4:]).all()  # nodata -> NaN
    # Value units: the [0, 1] std times each band's stretch (hi - lo), averaged over the bands.
    from neurop_diff.inference import io

    raster = io.read_image(src)
    _, unit_std = upscale(src, 2, checkpoint=diffusion, samples=3, return_std=True, **KW)
    slope = raster.stretch[:, 1] - raster.stretch[:, 0]
    expected = (unit_std * slope).mean(axis=2)
    np.testing.assert_allclose(band[4:, 4:], expected[4:, 4:], rtol=1e-5)
    assert band[4:, 4:].mean() > 10  # an untrained model's spread, in uint16 counts


def test_float_geotiff_holds_the_std_as_an_extra_band(diffusion, tmp_path, shared_data):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import from_origin

    rgb = np.array(Image.open(shared_data / "rsscn7" / "aGrass" / "a001.jpg").convert("RGB"))[100:108, 60:68]
    data = rgb.astype(np.float32).transpose(2, 0, 1) / 255  # float reflectance in [0, 1]
    profile = {"driver": "GTiff", "height": 8, "width": 8, "count": 3, "dtype": "float32", "crs": "EPSG:32633",
               "transform": from_origin(500_000.0, 5_000_000.0, 0.3, 0.5)}  # fmt: skip
    src = tmp_path / "float.tif"
    with rasterio.open(src, "w", **profile) as dst:
        dst.write(data)
    notes: list[str] = []
    out = upscale_file(src, tmp_path / "float_x2.tif", 2, checkpoint=diffusion, samples=3, report=notes.append,
                       **KW)  # fmt: skip
    assert not std_paths(out, geo=True)[0].exists() and "as its band 4 'std'" in notes[0]
    with rasterio.open(out) as f:
        assert f.count == 4 and f.dtypes == ("float32",) * 4 and f.descriptions[3] == "std"
        assert f.crs.to_epsg() == 32633 and (f.width, f.height) == (16, 16) and f.tags()["SAMPLES"] == "3"
        mean, band = f.read()[:3], f.read(4)
    image, unit_std = upscale(src, 2, checkpoint=diffusion, samples=3, return_std=True, **KW)
    np.testing.assert_allclose(band, unit_std.mean(axis=2), rtol=1e-5, atol=1e-7)  # float values: slope 1
    assert band.mean() > 1e-3
    np.testing.assert_allclose(mean.transpose(1, 2, 0), image, atol=1e-6)  # the first bands are the mean
