"""Image decoding for the datasets: any PIL mode to 8-bit RGB, header checks, the HR protocol (paper 4.1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class CorruptImageError(ValueError):
    """An image file cannot be opened or decoded; the message names the file."""


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Any PIL image -> ``(H, W, 3)`` uint8 RGB; 16-bit data is scaled (not clipped) to 0..255."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grey (Pillow reads 16-bit PNG/TIFF as I;16, older versions as I): v * 255 / 65535, rounded.
        v = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        grey = ((v * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA")  # honours palette transparency without Pillow's warning
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, 1, LA, RGBA (alpha dropped), CMYK, YCbCr, F
    return np.asarray(img, dtype=np.uint8)


def load_rgb_uint8(path: str | Path) -> np.ndarray:
    """Decode ``path`` to ``(H, W, 3)`` uint8 RGB; any failure raises ``CorruptImageError`` naming the file."""
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb_uint8(img)
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
