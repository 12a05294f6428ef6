"""The device an upscale runs on: ``auto`` (CUDA, else Apple MPS, else CPU) or a named one, checked to exist."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["resolve_device", "sampling_autocast"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA when available, else Apple MPS, else CPU; else ``cpu``, ``cuda[:N]`` or ``mps``, checked
    to exist here (ValueError naming the device and what is available)."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r}: expected auto, cpu, cuda, cuda:N or mps") from err
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device!r} is not available: no CUDA GPU is visible (use cpu or auto)")
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"device {device!r} is not available: {count} CUDA GPU(s), cuda:0..cuda:{count - 1}"
            )
    elif dev.type == "mps" and not _mps_available():
        raise ValueError(
            f"device {device!r} is not available: Apple MPS is not available here (use cpu or auto)"
        )
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r} is not supported: expected auto, cpu, cuda, cuda:N or mps")
    return dev


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def sampling_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """The UNet's precision when sampling on ``device``: bf16 autocast on CUDA GPUs that support it (the
    sampler's state and the operator prior stay float32), float32 elsewhere (bf16 is slower on CPU and fp16
    can overflow the UNet's activations)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
