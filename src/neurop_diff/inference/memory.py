"""How much memory an upscale needs, checked before any work.

The whole output lives in memory while it is computed: the operator's result and its query coordinates, and
for the diffusion stage the prior, the noisy canvas and the blend weights (tiles bound the UNet's working set,
not the canvas). Peak memory therefore grows with the output's pixels; ``benchmarks/large_scene.py --sizes``
measures the slope (peak RSS difference over output-pixel difference between two scene sizes). The figures
below are those measurements, rounded up; :func:`check_memory` stops with "needs about N GB" when the estimate
exceeds the memory available, instead of being killed hours in (or swapping).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "BYTES_PER_OUTPUT_PIXEL",
    "ENSEMBLE_BYTES_PER_OUTPUT_PIXEL",
    "MemoryCheckError",
    "available_bytes",
    "check_memory",
    "estimate_bytes",
]

#: Peak bytes per output pixel on top of the model (measured on CPU with benchmarks/large_scene.py, rounded
#: up; the operator is chunked, so its per-pixel cost is the output itself plus the chunk's working set).
BYTES_PER_OUTPUT_PIXEL = {"operator": 80, "diffusion": 200}
#: ``--samples K > 1`` adds, whatever K, the running mean and M2 (float64 RGB canvases, 48 bytes) held while the
#: next sample is drawn, and the finished sample's conversion (inference.ensemble): rounded up.
ENSEMBLE_BYTES_PER_OUTPUT_PIXEL = 64
#: The model, the torch runtime and one chunk / tile batch: a fixed part of the estimate.
BASE_BYTES = 1 << 30
_GB = 1e9


class MemoryCheckError(MemoryError):
    """The upscale would need more memory than is available; the message says how much and what to do."""


def estimate_bytes(out_size: tuple[int, int], stage: str, samples: int = 1) -> int:
    """Estimated peak bytes of an upscale to ``out_size`` (H, W) with ``stage`` ("operator" / "diffusion"),
    averaging ``samples`` samples (the estimate does not grow with their number)."""
    per_pixel = BYTES_PER_OUTPUT_PIXEL[stage] + (ENSEMBLE_BYTES_PER_OUTPUT_PIXEL if samples > 1 else 0)
    return BASE_BYTES + int(out_size[0]) * int(out_size[1]) * per_pixel


def available_bytes() -> int | None:
    """Memory available to this process now (Linux ``MemAvailable``, else psutil), or None when unknown."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil comes with lightning
        return None


def check_memory(out_size: tuple[int, int], stage: str, source: str = "image", samples: int = 1) -> None:
    """Raises :class:`MemoryCheckError` when the upscale of ``source`` to ``out_size`` would need more memory
    than is available. ``NEUROP_DIFF_MEMORY_CHECK=0`` turns the check off (at your own risk)."""
    if os.environ.get("NEUROP_DIFF_MEMORY_CHECK", "1") == "0":
        return
    need, have = estimate_bytes(out_size, stage, samples), available_bytes()
    if have is None or need <= have:
        return
    h, w = out_size
    raise MemoryCheckError(
        f"{source}: a {h}x{w} output with the {stage} stage needs about {need / _GB:.1f} GB of memory "
        f"(~{(need - BASE_BYTES) // (h * w)} bytes per output pixel: the whole output is held while it is "
        f"computed), {have / _GB:.1f} GB available: use a smaller --scale/--size, or split the scene into "
        "parts and upscale each (NEUROP_DIFF_MEMORY_CHECK=0 skips this check)"
    )
