"""Image files in and out of the upscaler: PNG/JPEG/TIFF through PIL, GeoTIFF through rasterio (`geo` extra).

Every file becomes a :class:`Raster`: an RGB float32 ``(H, W, 3)`` image in [0, 1] for the model plus what is
needed to write the result back in the input's own form.

Rules (documented in the README):

- **Bands.** ``bands`` (1-based) picks the bands fed to the model: three (as R, G, B) or one (grey). Default:
  1 band -> grey; 3 bands -> 1, 2, 3; more than 3 -> the first three, with a warning naming the rule;
  2 bands -> an error asking for ``bands``. A grey image is replicated to RGB for the model and written
  back as one band, the mean of the three output channels. Only the selected bands are written.
- **Values.** uint8 is mapped by ``v / 255``. Every other dtype (uint16 reflectance, int16, float) is
  stretched per band from its 2nd..98th percentile (of the valid pixels) to [0, 1], clipped; the output
  is mapped back with the inverse map into the input dtype (integers rounded and clipped to the dtype's
  range). Values outside the 2..98 percentile range therefore come back clipped to it.
- **Nodata** (GeoTIFF): a pixel is nodata when all selected bands equal the nodata value (GDAL's dataset
  mask). Nodata pixels are filled with the band means of the valid pixels before the model; the mask is
  upscaled by nearest neighbour and re-applied; valid output pixels that would equal nodata are nudged by
  one unit.
- **Georeferencing**: same CRS, same bounds; the geotransform's pixel size is divided by the true scale of
  each axis (``W_out / W_in`` horizontally, ``H_out / H_in`` vertically).
"""

from __future__ import annotations

import glob
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "GEO_EXTRA_HINT",
    "IMAGE_SUFFIXES",
    "Raster",
    "choose_bands",
    "expand_inputs",
    "from_array",
    "from_bands",
    "is_geotiff",
    "pil_array",
    "read_image",
    "resize_mask",
    "to_array",
    "write_image",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
GEO_EXTRA_HINT = "pip install 'neurop-diff[geo]'"
# TIFF tags that make a TIFF a GeoTIFF: ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory.
_GEOTIFF_TAGS = (33550, 33922, 34264, 34735)
_STRETCH_PERCENTILES = (2.0, 98.0)


@dataclass
class Raster:
    """An image read for the model.

    ``rgb``: float32 (H, W, 3) in [0, 1] (nodata filled). ``gray``: one band, replicated. ``dtype``: the
    file's sample type. ``stretch``: per-band ``(lo, hi)`` of the value map (None for uint8: ``v / 255``).
    ``mask``: (H, W) bool, True = nodata (None without nodata). ``profile``/``tags``/``descriptions``:
    rasterio metadata of a GeoTIFF (None for PIL images). ``bands``: the 1-based bands used.
    """

    rgb: np.ndarray
    gray: bool
    dtype: np.dtype
    stretch: np.ndarray | None = None
    mask: np.ndarray | None = None
    nodata: float | None = None
    bands: tuple[int, ...] = (1, 2, 3)
    profile: dict[str, Any] | None = None
    tags: dict[str, str] = field(default_factory=dict)
    descriptions: tuple[str | None, ...] = ()

    @property
    def is_geo(self) -> bool:
        return self.profile is not None


def choose_bands(count: int, bands: tuple[int, ...] | list[int] | None, source: str) -> tuple[int, ...]:
    """The 1-based bands to use for an image of ``count`` bands (rules in the module docstring)."""
    if bands is not None:
        bands = tuple(int(b) for b in bands)
        if len(bands) not in (1, 3) or any(not 1 <= b <= count for b in bands):
            raise ValueError(
                f"{source}: bands {list(bands)} invalid for an image with {count} band(s): give three 1-based "
                f"band numbers (R, G, B) or one (grey), each in 1..{count}"
            )
        return bands
    if count == 1:
        return (1,)
    if count == 3:
        return (1, 2, 3)
    if count == 2:
        raise ValueError(
            f"{source} has 2 bands: choose one (grey) or three with bands / --bands, e.g. --bands 1"
        )
    warnings.warn(
        f"{source} has {count} bands; using bands 1, 2, 3 as red, green, blue (the rule for more than 3 bands: "
        "the first three). Pick others with bands / --bands, e.g. --bands 4,3,2 for a Sentinel-2 or "
        "Landsat-8 stack in band order",
        UserWarning,
        stacklevel=3,
    )
    return (1, 2, 3)


def is_geotiff(path: str | Path) -> bool:
    """True for a .tif/.tiff that carries GeoTIFF tags, or that PIL cannot decode (multi-band, 16-bit
    multi-channel...): both need rasterio."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        return False
    try:
        with Image.open(path) as im:
            tags = getattr(im, "tag_v2", {})
            if any(t in tags for t in _GEOTIFF_TAGS):
                return True
            im.load()
    except (OSError, ValueError, SyntaxError):
        return True
    return False


def _rasterio():
    try:
        import rasterio
    except ImportError as err:
        raise ImportError(
            f"reading and writing GeoTIFFs needs rasterio, which is not installed: {GEO_EXTRA_HINT}"
        ) from err
    return rasterio


def read_image(path: str | Path, bands: tuple[int, ...] | list[int] | None = None) -> Raster:
    """Reads an image file (PNG, JPEG, TIFF, GeoTIFF) for the model; see the module docstring for the rules."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: unsupported image type {path.suffix!r}; expected one of {IMAGE_SUFFIXES}")
    if is_geotiff(path):
        try:
            rasterio = _rasterio()
        except ImportError as err:
            raise ImportError(f"{path} is a GeoTIFF (or a TIFF PIL cannot read): {err}") from None
        with warnings.catch_warnings():
            # A TIFF PIL cannot decode need not be georeferenced; its output is simply not either.
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                sel = choose_bands(src.count, bands, str(path))
                data = src.read(list(sel))
                raster = from_bands(data, sel, str(path), nodata=src.nodata)
                raster.profile = dict(src.profile)
                raster.tags = dict(src.tags())
                raster.descriptions = tuple(src.descriptions[b - 1] for b in sel)
        return raster
    with Image.open(path) as im:
        arr = pil_array(im, path)
    data = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    sel = choose_bands(data.shape[0], bands, str(path))
    return from_bands(data[[b - 1 for b in sel]], sel, str(path))


def pil_array(im: Image.Image, path: str | Path = "image") -> np.ndarray:
    """(H, W) or (H, W, C) array of a PIL image; palette, CMYK, 1-bit... converted to RGB(A), LA to L."""
    if im.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    elif im.mode == "LA":
        im = im.convert("L")
    arr = np.asarray(im)
    if arr.dtype == bool or arr.ndim not in (2, 3):
        raise ValueError(f"{path}: unsupported image mode {im.mode!r}")
    return arr


def from_bands(
    data: np.ndarray, sel: tuple[int, ...], source: str, nodata: float | None = None, unit: bool = False
) -> Raster:
    """Raster from the selected bands ``data`` (k, H, W) of any dtype; ``sel``: their 1-based band numbers.
    ``unit``: the values are already in [0, 1] (identity value map instead of the dtype's rule)."""
    if data.shape[0] != len(sel):
        raise ValueError(f"{source}: got {data.shape[0]} bands of data for the {len(sel)} bands {list(sel)}")
    dtype = data.dtype
    mask = None
    if nodata is not None:
        hit = np.isnan(data) if np.isnan(nodata) else data == np.asarray(nodata).astype(dtype)
        mask = hit.all(axis=0)
        if not mask.any():
            mask = None
        elif mask.all():
            raise ValueError(f"{source}: every pixel of bands {list(sel)} is nodata ({nodata})")
    valid = None if mask is None else ~mask
    if unit:
        values, stretch = data.astype(np.float32), np.tile([0.0, 1.0], (data.shape[0], 1))
    elif dtype == np.uint8:
        values, stretch = data.astype(np.float32) / 255.0, None
    else:
        values, stretch = _stretch(data, valid)
    if valid is not None:
        for k in range(values.shape[0]):  # neutral fill: no artificial edges for the model to sharpen
            values[k][mask] = values[k][valid].mean()
    gray = values.shape[0] == 1
    rgb = np.repeat(values, 3, axis=0) if gray else values
    return Raster(
        rgb=np.ascontiguousarray(rgb.transpose(1, 2, 0), dtype=np.float32),
        gray=gray,
        dtype=dtype,
        stretch=stretch,
        mask=mask,
        nodata=nodata,
        bands=sel,
    )


def _stretch(data: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per-band 2..98 percentile stretch to [0, 1]; returns (unit (k, H, W) float32, (k, 2) lo/hi)."""
    out = np.empty(data.shape, dtype=np.float32)
    stretch = np.empty((data.shape[0], 2), dtype=np.float64)
    for k, band in enumerate(data.astype(np.float64)):
        values = band if valid is None else band[valid]
        values = values[np.isfinite(values)]
        lo, hi = np.percentile(values, _STRETCH_PERCENTILES) if values.size else (0.0, 1.0)
        if hi <= lo:  # a constant band
            hi = lo + 1.0
        stretch[k] = lo, hi
        out[k] = np.clip((np.nan_to_num(band, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    return out, stretch


def _from_unit(unit: np.ndarray, like: Raster) -> np.ndarray:
    """Inverse value map: unit (k, H, W) in [0, 1] -> the input's dtype."""
    unit = np.clip(unit, 0.0, 1.0)
    if like.stretch is None:
        return np.round(unit * 255.0).astype(np.uint8)
    lo, hi = like.stretch[:, 0, None, None], like.stretch[:, 1, None, None]
    values = lo + unit.astype(np.float64) * (hi - lo)
    if np.issubdtype(like.dtype, np.integer):
        info = np.iinfo(like.dtype)
        values = np.clip(np.round(values), info.min, info.max)
    return values.astype(like.dtype)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a (h, w) mask to ``size``: output pixel i takes input pixel
    ``floor((i + 0.5) h / H)`` (pixel centres, as ``nearest-exact``)."""
    h, w = mask.shape
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(np.int64), w - 1)
    return mask[rows[:, None], cols[None, :]]


def from_array(
    arr: np.ndarray, source: str = "array", bands: tuple[int, ...] | list[int] | None = None
) -> Raster:
    """Raster from an in-memory image: (H, W) or (H, W, C) numpy array. uint8 and the other integer dtypes
    follow the file rules; float arrays are taken as already in [0, 1] (identity value map)."""
    if arr.ndim == 3 and arr.shape[-1] > 4 and arr.shape[0] <= 4:
        raise ValueError(f"{source}: expected an (H, W, C) image, got shape {arr.shape} (channels first?)")
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise ValueError(f"{source}: expected an (H, W) or (H, W, C) image, got shape {arr.shape}")
    data = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    sel = choose_bands(data.shape[0], bands, source)
    data = data[[b - 1 for b in sel]]
    unit = np.issubdtype(data.dtype, np.floating)
    if unit and (not np.isfinite(data).all() or data.min() < 0 or data.max() > 1):
        raise ValueError(
            f"{source}: a float image must hold values in [0, 1], got [{data.min()}, {data.max()}]"
        )
    return from_bands(data, sel, source, unit=unit)


def to_array(rgb: np.ndarray, like: Raster) -> np.ndarray:
    """Model output ``rgb`` (H, W, 3) float in [0, 1] in the form of the input ``like``: its dtype and value
    map, one band for grey, nodata re-applied. Returns (k, H, W)."""
    unit = rgb.transpose(2, 0, 1)
    if like.gray:
        unit = unit.mean(axis=0, keepdims=True)
    data = _from_unit(unit, like)
    if like.mask is not None:
        data = _apply_nodata(data, resize_mask(like.mask, data.shape[1:]), like.nodata)
    return data


def write_image(path: str | Path, rgb: np.ndarray, like: Raster, quality: int = 95) -> Path:
    """Writes the model output ``rgb`` (H, W, 3) float in [0, 1] to ``path`` in the form of the input
    ``like`` (dtype, bands, value map; for a GeoTIFF: CRS, scaled transform, nodata, tags)."""
    path = Path(path)
    data = to_array(rgb, like)
    path.parent.mkdir(parents=True, exist_ok=True)
    if like.is_geo:
        _write_geotiff(path, data, like)
        return path
    arr = data[0] if like.gray else data.transpose(1, 2, 0)
    options = {"quality": quality} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(np.ascontiguousarray(arr)).save(path, **options)
    return path


def _apply_nodata(data: np.ndarray, mask: np.ndarray, nodata: float | None) -> np.ndarray:
    data = data.copy()
    if nodata is not None and not np.isnan(nodata):
        value = np.asarray(nodata).astype(data.dtype)
        clash = (data == value).all(axis=0) & ~mask
        if clash.any():  # a valid pixel must not read back as nodata
            step = (
                1
                if np.issubdtype(data.dtype, np.integer)
                else np.finfo(data.dtype).eps * max(1.0, abs(nodata))
            )
            top = np.iinfo(data.dtype).max if np.issubdtype(data.dtype, np.integer) else np.inf
            data[0][clash] = value - step if value >= top else value + step
    data[:, mask] = np.asarray(nodata if nodata is not None else 0).astype(data.dtype)
    return data


def _write_geotiff(path: Path, data: np.ndarray, like: Raster) -> None:
    rasterio = _rasterio()
    from rasterio.transform import Affine

    profile = dict(like.profile or {})
    h_in, w_in = int(profile["height"]), int(profile["width"])
    count, h, w = data.shape
    t = profile.get("transform") or Affine.identity()
    sx, sy = w_in / w, h_in / h
    # Same origin and bounds: the pixel size shrinks by the true scale of each axis.
    profile.update(
        driver="GTiff",
        width=w,
        height=h,
        count=count,
        dtype=data.dtype.name,
        transform=Affine(t.a * sx, t.b * sy, t.c, t.d * sx, t.e * sy, t.f),  # = t x scale(sx, sy)
        nodata=like.nodata,
    )
    for key in ("blockxsize", "blockysize", "tiled", "photometric"):
        profile.pop(key, None)  # the input's block layout need not fit the new size
    if count == 3 and data.dtype == np.uint8:
        profile["photometric"] = "RGB"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            if like.tags:
                dst.update_tags(**like.tags)
            for k, desc in enumerate(like.descriptions[:count], start=1):
                if desc:
                    dst.set_band_description(k, desc)


def expand_inputs(items: list[str]) -> list[Path]:
    """Image files from files, folders (their images, not recursive) and glob patterns, in order, deduplicated.

    Raises FileNotFoundError naming an item that matches nothing.
    """
    found: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            matches = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            matches = [p]
        elif any(ch in item for ch in "*?["):
            matches = [Path(f) for f in sorted(glob.glob(item, recursive=True))]
            matches = [f for f in matches if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        else:
            raise FileNotFoundError(f"input not found: {item}")
        if not matches:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found for input {item!r}")
        found += matches
    unique: dict[Path, None] = {}
    for f in found:
        unique.setdefault(f.resolve(), None)
    return list(unique)
