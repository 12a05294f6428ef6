"""Evaluation without Lightning: the metric convention, LPIPS loading, result tables, figures and image grids."""

from neurop_diff.evaluation.convention import MetricConvention, format_scale, image_metrics

__all__ = ["MetricConvention", "format_scale", "image_metrics"]
