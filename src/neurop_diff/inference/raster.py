"""Rasters for the upscaler: the band and value rules between a file's samples and the model's [0, 1] RGB.

Split out of ``io.py`` (one concern per file): this is the pure numpy side (band choice, uint8 / float /
percentile-stretch value maps, nodata fill and re-application) that the file readers and writers of
``neurop_diff.inference.io`` share; the rules are documented in that module's docstring, which re-exports
every public name here.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neurop_diff.data.images import FLOAT_RULES, float_rule, warn_float_rule

__all__ = ["Raster", "choose_bands", "from_array", "from_bands", "resize_mask", "to_array"]

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
    """The 1-based bands to use for an image of ``count`` bands (rules: the ``inference.io`` docstring)."""
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


def from_bands(
    data: np.ndarray,
    sel: tuple[int, ...],
    source: str,
    nodata: float | None = None,
    unit: bool = False,
    float_warning: bool = True,
) -> Raster:
    """Raster from the selected bands ``data`` (k, H, W) of any dtype; ``sel``: their 1-based band numbers.
    ``unit``: the values are already in [0, 1] (identity value map instead of the dtype's rule).
    ``float_warning``: say which float rule applied also when it is reflectance (else only for 0..255)."""
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
    if unit:
        values, stretch = data.astype(np.float32), np.tile([0.0, 1.0], (data.shape[0], 1))
    elif dtype == np.uint8:
        values, stretch = data.astype(np.float32) / 255.0, None
    elif np.issubdtype(dtype, np.floating):
        mask, nodata = _nan_mask(data, mask, nodata, source)
        rule = float_rule(data if mask is None else data[:, ~mask], source)
        if float_warning or rule != "reflectance":
            warn_float_rule(rule, source)
        lo, hi = FLOAT_RULES[rule]
        values = np.nan_to_num((data.astype(np.float32) - lo) / (hi - lo), nan=0.0, posinf=0.0, neginf=0.0)
        stretch = np.tile([lo, hi], (data.shape[0], 1))
    else:
        values, stretch = _stretch(data, None if mask is None else ~mask)
    valid = None if mask is None else ~mask
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


def _nan_mask(
    data: np.ndarray, mask: np.ndarray | None, nodata: float | None, source: str
) -> tuple[np.ndarray | None, float | None]:
    """Pixels with a NaN/inf band join the nodata mask (with a warning); refuses an image without a finite
    pixel. Without a nodata value, such pixels are written back as NaN (the nodata value becomes NaN)."""
    bad = ~np.isfinite(data).all(axis=0)
    if mask is not None:
        bad &= ~mask
    if not bad.any():
        return mask, nodata
    merged = bad if mask is None else (mask | bad)
    if merged.all():
        raise ValueError(f"{source}: every pixel is NaN, infinite or nodata: nothing to upscale")
    warnings.warn(
        f"{source}: {int(bad.sum())} pixel(s) hold NaN/inf values"
        + (" and the file has no nodata value" if nodata is None else f" (nodata is {nodata})")
        + ": treated as nodata (filled for the model, "
        + ("NaN" if nodata is None else "nodata")
        + " in the output)",
        UserWarning,
        stacklevel=4,
    )
    return merged, float("nan") if nodata is None else nodata


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
    return from_bands(data, sel, source, float_warning=False)  # float arrays: documented as in [0, 1]


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
