"""Lightning callbacks: `SRMetrics`, the one metrics callback of both stages."""

from neurop_diff.callbacks.metrics import SRMetrics

__all__ = ["SRMetrics"]
