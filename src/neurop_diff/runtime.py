"""Process-wide settings that make torch faster on CPU: the C allocator.

PyTorch allocates CPU tensors with the C library's ``malloc``. glibc serves blocks above its mmap threshold
(at most 32 MiB) with fresh ``mmap`` pages and returns them to the system on ``free``, so every large
activation of the UNet (16 MiB per 64-channel 256^2 image) pays page faults again at every step. Measured on
the 2-core development machine (default UNet, 256^2, channels_last): 0.57 -> 0.39 s per step at batch 1 and
3.03 -> 1.52 s at batch 4 once the heap keeps and reuses what it frees (``benchmarks/sampling_speed.py``).
The cost: the process keeps its peak heap (peak RSS is what it was; it is not handed back in between).

``neurop-diff`` calls :func:`tune_cpu_allocator` at start, the Python inference API
(``neurop_diff.inference.load_model``, so ``upscale``) when it first loads a model for the CPU.
``NEUROP_DIFF_MALLOC=default`` keeps the C library's behaviour.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

__all__ = ["tune_cpu_allocator"]

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


@functools.cache
def tune_cpu_allocator() -> bool:
    """Make glibc's malloc reuse freed memory instead of unmapping it (no mmap for large blocks, no trimming).

    Returns True when the settings were applied; False on other platforms or C libraries, or when
    ``NEUROP_DIFF_MALLOC=default``. Applied once per process (later calls return the first result)."""
    if os.environ.get("NEUROP_DIFF_MALLOC", "").lower() == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
