"""The results of one val/test epoch as one object, and the choice of the images shown in the grids.

``EvalResults`` is what the metrics callback returns (and keeps as ``SRMetrics.results``): the per-image rows,
the per-(method, scale) summary, the example images and their grids. The writer (``evaluation/writer.py``)
and loggers (``WandbLogger.log_sr_results``) receive it; nothing reads the callback's internals. No Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

# {scale: {image name: {column ("lr", "hr", method): uint8 (3, H, W) on the CPU}}}
Examples = dict[float, dict[str, dict[str, Tensor]]]


@dataclass
class EvalResults:
    """One evaluation epoch. Rows and summary follow ``evaluation/report.py``; ``methods`` is the display
    order (bicubic, further rows, the module's own method last); ``grids`` maps ``format_scale(s)`` to a PIL
    image; ``files`` (filled by the writer on rank 0) maps a file name such as ``"metrics.csv"`` to its path."""

    stage: str
    epoch: int
    step: int
    methods: list[str]
    rows: list[dict]
    summary: list[dict]
    convention: str
    lpips_note: str
    has_lpips: bool
    scale_max: float | None
    examples: Examples = field(default_factory=dict)
    grids: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def own_method(self) -> str:
        return self.methods[-1]

    @property
    def title(self) -> str:
        return f"{self.stage} epoch {self.epoch}: {self.convention}"


@runtime_checkable
class ResultsLogger(Protocol):
    """A logger that shows results beyond scalars (W&B: grids, figure, per-image table)."""

    def log_sr_results(self, results: EvalResults) -> None: ...


class ExamplePicker:
    """Keeps, per scale, the first ``n`` images by name (uint8 on the CPU), across batches and ranks."""

    def __init__(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"ExamplePicker: n must be >= 0, got {n}")
        self.n = n
        self.examples: Examples = {}

    def offer(self, scale: float, name: str, images: dict[str, Tensor] | Any) -> None:
        """Keep ``images`` (a dict, or a callable making it: only called when kept) if ``name`` is among the
        first ``n`` names seen at ``scale``."""
        if self.n == 0:
            return
        kept = self.examples.setdefault(scale, {})
        if len(kept) >= self.n and name >= max(kept):
            return
        kept[name] = images() if callable(images) else images
        if len(kept) > self.n:
            del kept[max(kept)]

    def merge(self, others: list[Examples]) -> None:
        """Add other ranks' examples, keeping the first ``n`` names per scale."""
        for other in others:
            for scale, kept in other.items():
                for name, images in kept.items():
                    if name not in self.examples.get(scale, {}):
                        self.offer(scale, name, images)
