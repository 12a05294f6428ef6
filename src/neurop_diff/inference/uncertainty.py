"""Uncertainty maps of ``upscale --samples K``: the per-pixel standard deviation of K diffusion samples.

The diffusion model is generative: for one LR input it gives many plausible HR images. K samples (seeds
``seed .. seed + K - 1``) are reduced as they come (:mod:`neurop_diff.inference.ensemble`); the output image
is their per-pixel mean and the **std map** their per-pixel standard deviation (unbiased, K - 1), averaged
over the output's channels. It is the spread of the model's plausible reconstructions, a confidence map (high
where the LR input leaves the detail open: texture, edges, small objects), not an error bound: a confident
model can still be wrong, and the spread is the model's own, so it is only as good as the model.

Files, beside the mean image ``dst`` (:func:`write_std`):

- PNG / JPEG / plain TIFF input: ``<dst stem>_std.png``, the std in [0, 1] image units (for 8-bit images
  value / 255) colour-mapped with matplotlib's ``magma`` over the fixed range ``0 .. std_max`` (default
  :data:`STD_MAX` = 0.1; brighter = more spread, saturated above ``std_max``; a fixed range keeps maps of
  different images and runs comparable). The range, units, K and seeds are in the PNG's text metadata.
  ``<dst stem>_std.npy``: the same map, float32 (H, W), unscaled.
- GeoTIFF input: ``<dst stem>_std.tif``, a single-band float32 GeoTIFF with the mean file's CRS and transform,
  band description ``std``: the std in the output's value units (per band, the [0, 1] std times the band's
  value map slope: 255 for uint8, ``hi - lo`` of the percentile stretch for other integers, 1 or 255 for
  floats), averaged over the bands; nodata pixels are NaN (the file's nodata). A separate file keeps the mean
  in the input's own dtype (a uint8 or uint16 scene cannot hold a float band). A float GeoTIFF scene holds the
  std as an extra last band ``std`` of the mean file itself (masked pixels: the file's nodata).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from torch import Tensor

from neurop_diff.inference.io import import_rasterio, write_geotiff
from neurop_diff.inference.raster import Raster, resize_mask

__all__ = ["COLORMAP", "STD_MAX", "check_samples", "colour_map", "grey_channel", "std_paths", "write_std"]

#: Upper end of the std colour scale, in [0, 1] image units (a std of 0.1 is ~25 levels of an 8-bit image).
STD_MAX = 0.1
COLORMAP = "magma"


def check_samples(samples: int, stage: str, source: str = "the checkpoint") -> None:
    """Raises ValueError unless ``samples`` is an int >= 1, and 1 for the (deterministic) operator stage."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
    if samples > 1 and stage != "diffusion":
        raise ValueError(
            f"samples={samples} needs the diffusion stage: the operator ({source}, stage {stage!r}) is "
            "deterministic, its samples would all be the same; use samples=1 or a DiffusionModule checkpoint"
        )


def grey_channel(x: Tensor) -> Tensor:
    """(B, 1, H, W) channel mean of (B, 3, H, W): the band a grey image is written as."""
    return x.mean(dim=1, keepdim=True)


def std_paths(dst: str | Path, geo: bool) -> tuple[Path, ...]:
    """The std files written beside ``dst``: ``<stem>_std.tif`` (GeoTIFF), else ``_std.png`` and ``_std.npy``."""
    dst = Path(dst)
    suffixes = (".tif",) if geo else (".png", ".npy")
    return tuple(dst.with_name(f"{dst.stem}_std{s}") for s in suffixes)


def colour_map(std: np.ndarray, std_max: float = STD_MAX, cmap: str = COLORMAP) -> np.ndarray:
    """uint8 (H, W, 3) colour image of ``std`` (H, W) over ``0 .. std_max`` (clipped; NaN: black)."""
    import matplotlib  # the colormap registry only; pyplot is not needed

    if not std_max > 0:
        raise ValueError(f"std_max must be > 0, got {std_max!r}")
    unit = np.clip(np.nan_to_num(std / std_max, nan=0.0), 0.0, 1.0)
    rgb = matplotlib.colormaps[cmap](unit, bytes=True)[..., :3]
    rgb[np.isnan(std)] = 0
    return np.ascontiguousarray(rgb)


def write_std(
    dst: str | Path,
    std: np.ndarray,
    like: Raster,
    seeds: Sequence[int],
    std_max: float = STD_MAX,
    report: Callable[[str], None] | None = None,
) -> tuple[list[Path], str]:
    """Writes the std map of the mean image ``dst`` (files: module docstring); returns (paths, a one-line
    summary naming the files, units, colour scale and the map's mean / 99th percentile), the summary also
    handed to ``report``.

    ``std``: (C, H, W) float in [0, 1] image units, C = 3 (RGB) or 1 (grey); ``like``: the input raster.
    """
    seeds = [int(s) for s in seeds]
    mask = None if like.mask is None else resize_mask(like.mask, std.shape[1:])
    geo = like.is_geo
    if geo:  # output value units: the slope of each band's value map
        slope = np.full(len(std), 255.0) if like.stretch is None else like.stretch[:, 1] - like.stretch[:, 0]
        std = std * slope[:, None, None]
    band = std.astype(np.float32).mean(axis=0)
    if mask is not None:
        band[mask] = np.nan
    valid = band[np.isfinite(band)]
    mean, p99 = float(valid.mean()), float(np.percentile(valid, 99))
    about = {
        "samples": str(len(seeds)),
        "seeds": f"{seeds[0]}..{seeds[-1]}" if len(set(seeds)) == len(seeds) else ",".join(map(str, seeds)),
        "std_definition": "per-pixel standard deviation of the diffusion samples (unbiased, K - 1), mean over "
        "channels: the spread of the model's plausible reconstructions, not an error bound",
        "std_mean": f"{mean:.6g}",
        "std_p99": f"{p99:.6g}",
    }
    if geo:
        about["std_units"] = (
            f"{np.dtype(like.dtype).name} output values (the [0, 1] std times each band's value-map slope)"
        )
        tags = {k.upper(): v for k, v in about.items()}
        if np.issubdtype(np.dtype(like.dtype), np.floating):  # a float scene holds the std as one more band
            path, index = _append_std_band(Path(dst), band, like, tags)
            paths = [path]
            scale = f"as its band {index} 'std', float32 in the output's value units; "
        else:
            (path,) = paths = list(std_paths(dst, geo=True))
            _write_std_geotiff(path, band, like, tags)
            scale = "float32 in the output's value units; "
        scale += f"mean {mean:.3g}, p99 {p99:.3g}"
    else:
        about |= {
            "std_units": "[0, 1] image units",
            "colormap": COLORMAP,
            "std_min": "0",
            "std_max": f"{std_max:g}",
        }
        png, npy = paths = list(std_paths(dst, geo=False))
        info = PngInfo()
        for key, value in about.items():
            info.add_text(key, value)
        Image.fromarray(colour_map(band, std_max)).save(png, pnginfo=info)
        np.save(npy, band)
        above = float((valid > std_max).mean())
        scale = (
            f"[0, 1] image units, {COLORMAP} colour scale 0..{std_max:g} ({above:.1%} of pixels above); "
            f"mean {mean:.3g}, p99 {p99:.3g}"
        )
    names = ", ".join(str(p) for p in paths)
    summary = f"wrote {names}: per-pixel std of {len(seeds)} samples (seeds {about['seeds']}), {scale}"
    if report is not None:
        report(summary)
    return paths, summary


def _write_std_geotiff(path: Path, band: np.ndarray, like: Raster, tags: dict[str, str]) -> None:
    """One float32 band with the mean file's CRS and scaled transform (the same writer), nodata NaN."""
    # Lossless whatever the input used (JPEG/WebP compression cannot hold float32; integer predictors neither).
    profile = {k: v for k, v in (like.profile or {}).items() if k not in ("predictor", "jpeg_quality")}
    profile["compress"] = "deflate"
    std_like = dataclasses.replace(
        like, profile=profile, nodata=float("nan"), descriptions=("std",), tags={**like.tags, **tags}
    )
    write_geotiff(path, band[None].astype(np.float32), std_like)


def _append_std_band(path: Path, band: np.ndarray, like: Raster, tags: dict[str, str]) -> tuple[Path, int]:
    """Rewrite the float mean GeoTIFF ``path`` with ``band`` as an extra last band described ``std``; returns
    (path, the band's 1-based index). Masked pixels take the file's nodata."""
    with import_rasterio().open(path) as src:
        data = src.read()
    if like.nodata is not None:
        band = np.where(np.isnan(band), np.float32(like.nodata), band)
    names = tuple(like.descriptions[: len(data)]) + ("",) * (len(data) - len(like.descriptions))
    out_like = dataclasses.replace(like, descriptions=(*names, "std"), tags={**like.tags, **tags})
    write_geotiff(path, np.concatenate([data, band[None].astype(data.dtype)]), out_like)
    return path, len(data) + 1
