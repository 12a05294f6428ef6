"""Writes an epoch's ``EvalResults`` for a person: tables, the metrics-vs-scale figure, image grids, and the
console report. Pure (no Lightning); the metrics callback calls it on rank 0.

Files in ``out`` (overwritten each epoch: the latest results): ``metrics.csv``, ``metrics.md``,
``per_image.csv``, ``metrics_vs_scale.png``, ``perception_distortion.png`` (PSNR against SWD-l0, one point
per method and scale; when SWD was measured) and ``grids/x{scale}.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from neurop_diff.evaluation.convention import format_scale
from neurop_diff.evaluation.figures import make_grid, plot_metrics_vs_scale, plot_perception_distortion
from neurop_diff.evaluation.report import (
    console_table,
    metrics_markdown,
    write_metrics_csv,
    write_per_image_csv,
)
from neurop_diff.evaluation.results import EvalResults, Examples


def make_grids(examples: Examples, methods: list[str], zoom: float, title: str) -> dict[str, Any]:
    """One PIL grid per scale (key ``format_scale(s)``): rows = images by name, columns lr, methods, hr."""
    columns = ["lr", *methods, "hr"]
    return {
        format_scale(s): make_grid(sorted(kept.items()), columns, zoom, f"x{format_scale(s)} {title}")
        for s, kept in sorted(examples.items())
        if kept
    }


def write_results(results: EvalResults, out: Path) -> dict[str, Path]:
    """Write every file of ``results`` into ``out``; returns {file name: path}."""
    conv = results.convention
    files = {
        "metrics.csv": write_metrics_csv(out / "metrics.csv", results.summary, conv, results.has_lpips),
        "per_image.csv": write_per_image_csv(out / "per_image.csv", results.rows, results.has_lpips),
    }
    md = metrics_markdown(
        results.summary,
        conv,
        f"{results.stage} results, epoch {results.epoch}, step {results.step}",
        results.lpips_note,
    )
    (out / "metrics.md").write_text(md)
    files["metrics.md"] = out / "metrics.md"
    files["metrics_vs_scale.png"] = plot_metrics_vs_scale(
        results.summary, results.methods, out / "metrics_vs_scale.png", results.scale_max, results.title
    )
    pd_plot = plot_perception_distortion(
        results.summary, results.methods, out / "perception_distortion.png", results.title
    )
    if pd_plot is not None:
        files["perception_distortion.png"] = pd_plot
    for key, image in results.grids.items():
        path = out / "grids" / f"x{key}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        files[f"grids/x{key}.png"] = path
    return files


def console_report(results: EvalResults, out: Path | None = None) -> str:
    """The text printed after a test: convention, LPIPS note, the per-scale table, where the files are."""
    where = f"\nresults: {out}" if out is not None else ""
    return (
        f"\nSR metrics ({results.stage}) - {results.convention}; LPIPS: {results.lpips_note}\n"
        f"{console_table(results.summary, results.methods)}{where}"
    )
