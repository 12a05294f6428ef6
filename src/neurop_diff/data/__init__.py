"""Data: remote-sensing datasets (uint8 HR), download, pure degradation helpers and the SRDataModule.

``SRDataModule`` is imported lazily so that ``neurop_diff.data.degradation`` and the datasets can be used
without importing Lightning.
"""

from __future__ import annotations

from typing import Any

from .datasets import AID, RSSCN7, CorruptImageError, ImageFolder, SRImageDataset, UCMerced
from .degradation import (
    bicubic_resize,
    degrade,
    lr_size,
    make_cell,
    make_coord,
    sample_scale,
    validate_scale_range,
)
from .download import ChecksumError, UnsafeArchiveError, download_and_extract

__all__ = [
    "AID",
    "RSSCN7",
    "ChecksumError",
    "CorruptImageError",
    "ImageFolder",
    "SRDataModule",
    "SRImageDataset",
    "UCMerced",
    "UnsafeArchiveError",
    "bicubic_resize",
    "degrade",
    "download_and_extract",
    "lr_size",
    "make_cell",
    "make_coord",
    "sample_scale",
    "validate_scale_range",
]


def __getattr__(name: str) -> Any:
    if name == "SRDataModule":
        from .datamodule import SRDataModule

        return SRDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
