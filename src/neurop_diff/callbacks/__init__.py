"""Lightning callbacks: `SRMetrics`, the one metrics callback of both stages, and `SRPredictionWriter`."""

from neurop_diff.callbacks.metrics import SRMetrics
from neurop_diff.callbacks.prediction_writer import SRPredictionWriter

__all__ = ["SRMetrics", "SRPredictionWriter"]
