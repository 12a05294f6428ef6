"""GeoTIFF in, GeoTIFF out: CRS, scaled transform, bounds, nodata, dtype and band rules (rasterio)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

rasterio = pytest.importorskip("rasterio")
from rasterio.crs import CRS  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402

from neurop_diff.cli.upscale import upscale_main  # noqa: E402
from neurop_diff.inference import io, upscale, upscale_file  # noqa: E402
from neurop_diff.models.srno import SRNO  # noqa: E402

H, W = 40, 48
# UTM 33N, 0.3 m x 0.5 m pixels: per-axis scaling is visible in the transform.
TRANSFORM = from_origin(500_000.0, 5_000_000.0, 0.3, 0.5)
NODATA = 0


@pytest.fixture(scope="module")
def operator():
    torch.manual_seed(0)
    return SRNO(encoder_blocks=1, encoder_width=8, width=16, blocks=1, heads=2).eval()


@pytest.fixture(scope="module")
def reflectance(shared_data) -> np.ndarray:
    """4-band uint16 'reflectance' (R, G, B, NIR-like) from a real image; top-left 10x12 block is nodata."""
    rgb = np.array(Image.open(shared_data / "rsscn7" / "aGrass" / "a001.jpg").convert("RGB"))[
        100 : 100 + H, 60 : 60 + W
    ]
    rgb = rgb.astype(np.uint16).transpose(2, 0, 1) * 40 + 200  # 200..10400, never 0
    nir = (rgb.astype(np.float64).mean(axis=0) * 1.3).astype(np.uint16)[None]
    data = np.concatenate([rgb, nir])
    data[:, :10, :12] = NODATA
    return data


def _write(path, data, nodata=NODATA, crs="EPSG:32633"):
    profile = {
        "driver": "GTiff", "height": data.shape[1], "width": data.shape[2], "count": data.shape[0],
        "dtype": data.dtype.name, "crs": crs, "transform": TRANSFORM, "nodata": nodata,
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(source="test")
    return path


def test_geotiff_keeps_crs_bounds_nodata_and_dtype(tmp_path, reflectance, operator):
    src = _write(tmp_path / "scene.tif", reflectance)
    with pytest.warns(UserWarning, match="the first three"):
        out = upscale_file(src, tmp_path / "out.tif", 2.5, checkpoint=operator, device="cpu")
    with rasterio.open(src) as a, rasterio.open(out) as b:
        assert b.crs == CRS.from_epsg(32633)
        assert (b.height, b.width, b.count) == (100, 120, 3)
        assert b.dtypes == ("uint16",) * 3 and b.nodata == NODATA
        half_x, half_y = abs(b.transform.a) / 2, abs(b.transform.e) / 2
        for ea, eb, tol in zip(a.bounds, b.bounds, (half_x, half_y, half_x, half_y), strict=True):
            assert abs(ea - eb) <= tol
        assert b.transform.almost_equals(from_origin(500_000.0, 5_000_000.0, 0.3 / 2.5, 0.5 / 2.5))
        assert b.tags()["source"] == "test"
        data = b.read()
    # The nodata block (10 x 12 input pixels) is exactly 25 x 30 output pixels at x2.5; nothing else is nodata.
    expected = np.zeros((100, 120), bool)
    expected[:25, :30] = True
    assert np.array_equal((data == NODATA).all(axis=0), expected)
    assert np.array_equal((data == NODATA).any(axis=0), expected)
    # Values are mapped back into each band's 2..98 percentile range of the valid input pixels.
    valid = reflectance[:3][:, ~(reflectance == NODATA).all(axis=0)]
    for k in range(3):
        lo, hi = np.percentile(valid[k], (2, 98))
        v = data[k][~expected]
        assert np.floor(lo) <= v.min() and v.max() <= np.ceil(hi)
        assert v.max() - v.min() > 0.5 * (hi - lo)  # the stretch is undone, not left at 0..1


def test_band_selection_and_stretch_rule(tmp_path, reflectance):
    src = _write(tmp_path / "scene.tif", reflectance)
    raster = io.read_image(src, bands=(4, 3, 2))
    mask = (reflectance == NODATA).all(axis=0)
    assert raster.bands == (4, 3, 2) and np.array_equal(raster.mask, mask)
    for k, band in enumerate((4, 3, 2)):
        values = reflectance[band - 1].astype(np.float64)
        lo, hi = np.percentile(values[~mask], (2, 98))
        expected = np.clip((values - lo) / (hi - lo), 0, 1)
        np.testing.assert_allclose(raster.rgb[..., k][~mask], expected[~mask], atol=1e-6)
        assert np.allclose(raster.rgb[..., k][mask], expected[~mask].mean(), atol=1e-5)  # neutral fill
    # The inverse map gives back the input inside the stretch range (the identity "model", scale 1).
    back = io.to_array(raster.rgb, raster)
    for k, band in enumerate((4, 3, 2)):
        lo, hi = raster.stretch[k]
        inside = ~mask & (reflectance[band - 1] >= lo) & (reflectance[band - 1] <= hi)
        assert np.abs(back[k][inside].astype(int) - reflectance[band - 1][inside]).max() <= 1
    with pytest.raises(ValueError, match=r"1\.\.4"):
        io.read_image(src, bands=(1, 2, 5))
    with pytest.raises(ValueError, match="three"):
        io.read_image(src, bands=(1, 2))


def test_single_band_and_uint8_geotiffs(tmp_path, reflectance, operator):
    grey = _write(tmp_path / "grey.tif", reflectance[:1])
    out = upscale_file(grey, tmp_path / "grey_x2.tif", 2, checkpoint=operator, device="cpu")
    with rasterio.open(out) as b:
        assert b.count == 1 and (b.height, b.width) == (80, 96) and b.dtypes == ("uint16",)
    rgb8 = (reflectance[:3] // 41).astype(np.uint8)
    src = _write(tmp_path / "rgb8.tif", rgb8, nodata=None)
    raster = io.read_image(src)
    assert raster.stretch is None and raster.mask is None
    np.testing.assert_allclose(raster.rgb, rgb8.transpose(1, 2, 0) / 255.0, atol=1e-7)
    assert np.array_equal(io.to_array(raster.rgb, raster), rgb8)  # uint8: v / 255 both ways, exact
    arr = upscale(src, 3.3, checkpoint=operator, device="cpu")
    assert arr.shape == (132, 158, 3) and arr.dtype == np.uint8


def test_valid_pixels_never_read_back_as_nodata():
    data = np.full((3, 4, 4), 7, np.uint16)
    data[:, 0, 0] = 0
    raster = io.from_bands(data, (1, 2, 3), "mem", nodata=0)
    dark = np.zeros(
        (8, 8, 3), np.float32
    )  # the model says "black" everywhere: the nodata value after the map
    out = io.to_array(dark, raster)
    nodata_px = (out == 0).all(axis=0)
    assert np.array_equal(nodata_px, io.resize_mask(raster.mask, (8, 8)))
    assert nodata_px.sum() == 4


def test_cli_writes_a_geotiff(tmp_path, reflectance, operator):
    from neurop_diff.lit.operator import OperatorModule

    src = _write(tmp_path / "scene.tif", reflectance)
    module = OperatorModule(encoder_blocks=1, encoder_width=8, width=16, blocks=1, heads=2)
    module.model.load_state_dict(operator.state_dict())
    ckpt = tmp_path / "op.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, ckpt)
    upscale_main([str(src), "--checkpoint", str(ckpt), "--scale", "2", "--bands", "4,3,2", "--out",
                  str(tmp_path / "out"), "--no-progress"])  # fmt: skip
    with rasterio.open(tmp_path / "out" / "scene_x2.tif") as b:
        assert b.crs == CRS.from_epsg(32633) and (b.width, b.height, b.count) == (96, 80, 3)
        assert b.transform.almost_equals(from_origin(500_000.0, 5_000_000.0, 0.15, 0.25))


def test_geotiff_without_rasterio_names_the_extra(tmp_path, reflectance, monkeypatch, operator):
    src = _write(tmp_path / "scene.tif", reflectance[:3])
    plain = tmp_path / "plain.png"
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(plain)
    monkeypatch.setitem(sys.modules, "rasterio", None)  # `import rasterio` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'neurop-diff\[geo\]'"):
        io.read_image(src)
    assert upscale(plain, 2, checkpoint=operator, device="cpu").shape == (16, 16, 3)  # PIL images still work
