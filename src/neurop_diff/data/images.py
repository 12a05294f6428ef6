"""Image decoding for the datasets: any PIL mode to 8-bit RGB, header checks, the HR protocol (paper 4.1),
and the one rule for float imagery (shared with `neurop-diff upscale`, README "Float imagery").

**Float imagery** (float TIFF / GeoTIFF bands, float arrays): the finite values decide, for the whole image:
all in [0, 1] -> reflectance, taken as is (8-bit: ``round(v * 255)``); else all in [0, 255] -> 8-bit-like
values, ``v / 255``; anything else (negative, above 255) is an error asking to rescale. A warning says which
rule applied (reflectance in [0, 1] vs 0..255 look alike for dark scenes). NaN pixels: in a dataset they
become 0 with a warning; an image with no finite value is refused.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class CorruptImageError(ValueError):
    """An image file cannot be opened or decoded; the message names the file."""


class FloatImageWarning(UserWarning):
    """Which float-imagery rule was applied (reflectance in [0, 1], or 0..255), or NaN pixels were filled."""


#: Float-imagery rules: name -> (lo, hi) of the values mapped linearly to [0, 1].
FLOAT_RULES = {"reflectance": (0.0, 1.0), "0..255": (0.0, 255.0)}
_warned: set[str] = set()


def float_rule(values: np.ndarray, source: str) -> str:
    """The float-imagery rule (module docstring) for ``values`` of any shape: "reflectance" or "0..255".

    Raises ValueError naming ``source`` when no value is finite or the values fit neither rule."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise ValueError(f"{source}: every pixel is NaN or infinite: nothing to read")
    lo, hi = float(finite.min()), float(finite.max())
    for rule, (low, high) in FLOAT_RULES.items():
        if lo >= low and hi <= high:
            return rule
    raise ValueError(
        f"{source}: float values in [{lo:g}, {hi:g}] fit neither float rule (reflectance in [0, 1], or "
        "0..255; README 'Float imagery'): rescale the image into one of them"
    )


def warn_float_rule(rule: str, source: str, once: bool = False) -> None:
    """Says which rule read a float image; ``once``: one warning per rule in this process (datasets)."""
    if once and rule in _warned:
        return
    _warned.add(rule)
    what = (
        "values <= 1 look like reflectance: read as 0..1 (8-bit: v * 255); if they are 8-bit values "
        "divided by 255 this is right, if the scene is simply dark it stays dark"
        if rule == "reflectance"
        else "values in 0..255: read as 8-bit values (v / 255)"
    )
    where = f"float images (e.g. {source})" if once else source
    warnings.warn(f"{where}: {what} (README 'Float imagery')", FloatImageWarning, stacklevel=3)


def float_to_uint8(values: np.ndarray, source: str) -> np.ndarray:
    """Float pixels -> uint8 by the float rule (one warning per rule); NaN/inf -> 0 with a warning."""
    rule = float_rule(values, source)
    warn_float_rule(rule, source, once=True)
    bad = ~np.isfinite(values)
    if bad.any():
        warnings.warn(
            f"{source}: {int(bad.sum())} NaN/infinite pixel value(s) set to 0",
            FloatImageWarning,
            stacklevel=3,
        )
    hi = FLOAT_RULES[rule][1]
    unit = np.clip(np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0) / hi, 0, 1)
    return np.round(unit * 255).astype(np.uint8)


def to_rgb_uint8(img: Image.Image, source: str = "image") -> np.ndarray:
    """Any PIL image -> ``(H, W, 3)`` uint8 RGB; 16-bit data is scaled (not clipped) to 0..255; float (mode F)
    by the float rule (module docstring)."""
    if img.mode == "F":
        grey = float_to_uint8(np.asarray(img), source)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grey (Pillow reads 16-bit PNG/TIFF as I;16, older versions as I): v * 255 / 65535, rounded.
        v = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        grey = ((v * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA")  # honours palette transparency without Pillow's warning
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, 1, LA, RGBA (alpha dropped), CMYK, YCbCr
    return np.asarray(img, dtype=np.uint8)


def load_rgb_uint8(path: str | Path) -> np.ndarray:
    """Decode ``path`` to ``(H, W, 3)`` uint8 RGB; any failure raises ``CorruptImageError`` naming the file."""
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb_uint8(img, str(path))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise CorruptImageError(f"cannot decode image {path}: {err}") from err


def check_header(path: Path) -> tuple[int, int]:
    """Open ``path`` lazily (header only) and return its ``(width, height)``; errors name the file."""
    try:
        with Image.open(path) as img:
            size = img.size
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise CorruptImageError(f"cannot read image header of {path}: {err}") from err
    if size[0] < 1 or size[1] < 1:
        raise CorruptImageError(f"image {path} has an empty size {size}")
    return size


def hr_protocol(img: np.ndarray, hr_size: int | None) -> np.ndarray:
    """Center-crop ``(H, W, 3)`` uint8 to a square, then PIL bicubic (antialiased) resize to ``hr_size``."""
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    img = img[top : top + side, left : left + side]
    if hr_size is None or side == hr_size:
        return np.ascontiguousarray(img)
    resized = Image.fromarray(img).resize((hr_size, hr_size), Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.uint8)
