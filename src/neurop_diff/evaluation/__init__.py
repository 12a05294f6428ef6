"""Evaluation of one run, without Lightning: the metric convention, detail and realism measures, LPIPS loading,
result tables, figures, image grids and the files of an epoch (comparing runs is ``neurop_diff.comparison``)."""

from neurop_diff.evaluation.convention import MetricConvention, format_scale, image_metrics

__all__ = ["MetricConvention", "format_scale", "image_metrics"]
