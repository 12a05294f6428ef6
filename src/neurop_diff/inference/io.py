"""Image files in and out of the upscaler: PNG/JPEG/TIFF through PIL, GeoTIFF through rasterio (`geo` extra).

Every file becomes a :class:`Raster`: an RGB float32 ``(H, W, 3)`` image in [0, 1] for the model plus what is
needed to write the result back in the input's own form.

Rules (documented in the README):

- **Bands.** ``bands`` (1-based) picks the bands fed to the model: three (as R, G, B) or one (grey). Default:
  1 band -> grey; 3 bands -> 1, 2, 3; more than 3 -> the first three, with a warning naming the rule;
  2 bands -> an error asking for ``bands``. A grey image is replicated to RGB for the model and written
  back as one band, the mean of the three output channels. Only the selected bands are written.
- **Values.** uint8 is mapped by ``v / 255``. Float data follows the one float-imagery rule shared with the
  datasets (:mod:`neurop_diff.data.images`): all finite values in [0, 1] -> reflectance, as is; else all in
  [0, 255] -> ``v / 255``; else an error; a warning says which; the output is mapped back the same way. NaN
  pixels without a nodata value are treated as nodata (warning; written back as NaN); an image without a
  finite pixel is refused. Every other dtype (uint16 reflectance, int16) is stretched per band from its 2nd..98th percentile (of the valid pixels) to [0, 1], clipped; the output
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
from pathlib import Path

import numpy as np
from PIL import Image

from neurop_diff.inference.raster import Raster, choose_bands, from_array, from_bands, resize_mask, to_array

__all__ = [
    "GEO_EXTRA_HINT",
    "IMAGE_SUFFIXES",
    "Raster",
    "choose_bands",
    "expand_inputs",
    "from_array",
    "from_bands",
    "import_rasterio",
    "is_geotiff",
    "pil_array",
    "read_image",
    "resize_mask",
    "to_array",
    "write_geotiff",
    "write_image",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
GEO_EXTRA_HINT = "pip install 'neurop-diff[geo]'"
# TIFF tags that make a TIFF a GeoTIFF: ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory.
_GEOTIFF_TAGS = (33550, 33922, 34264, 34735)


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


def import_rasterio():
    """The `rasterio` module; its ImportError says how to install it (`GEO_EXTRA_HINT`)."""
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
            rasterio = import_rasterio()
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


def write_image(path: str | Path, rgb: np.ndarray, like: Raster, quality: int = 95) -> Path:
    """Writes the model output ``rgb`` (H, W, 3) float in [0, 1] to ``path`` in the form of the input
    ``like`` (dtype, bands, value map; for a GeoTIFF: CRS, scaled transform, nodata, tags)."""
    path = Path(path)
    data = to_array(rgb, like)
    path.parent.mkdir(parents=True, exist_ok=True)
    if like.is_geo:
        write_geotiff(path, data, like)
        return path
    arr = data[0] if like.gray else data.transpose(1, 2, 0)
    options = {"quality": quality} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(np.ascontiguousarray(arr)).save(path, **options)
    return path


def write_geotiff(path: Path, data: np.ndarray, like: Raster) -> None:
    """Writes ``data`` (C, h, w) as a GeoTIFF with the georeferencing of ``like`` (same bounds, the pixel size
    scaled to the new size), its nodata, tags and band descriptions."""
    rasterio = import_rasterio()
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
