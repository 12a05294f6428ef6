"""The files of a `Comparison` (``comparison/compare.py``): Markdown, CSV and LaTeX (booktabs) tables, the
metrics-vs-scale figure, and a W&B table. Pure (no Lightning).

In every table: methods as rows, scales as columns, one table per metric; the best run row per column is
marked (bold in Markdown and LaTeX, the ``best`` column of the CSV: max PSNR / SSIM / HF PSNR / HF SSIM, min
LPIPS, HF share closest to HR's); a scale out of distribution (above the run's training range) carries a
dagger; a missing value is '-' (empty in the CSV). Paper rows are references: never marked best.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from neurop_diff.comparison.compare import Comparison, Row, scale_key
from neurop_diff.evaluation.convention import format_scale

LABELS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "lpips": "LPIPS",
    "hf_share": "HF share",
    "hf_psnr": "HF PSNR (dB)",
    "hf_ssim": "HF SSIM",
    "lr_psnr": "LR-PSNR (dB)",
    "swd_l0": "SWD l0 (x1e3)",
    "swd_l1": "SWD l1 (x1e3)",
    "swd_l2": "SWD l2 (x1e3)",
    "lsd_hi": "LSD-hi (dB)",
    "seed_std": "Seed std",
}
_BETTER = {
    "lpips": "lower is better",
    "hf_share": "closest to HR's share is best",
    **{m: "lower is better" for m in ("swd_l0", "swd_l1", "swd_l2", "lsd_hi")},
    "seed_std": "spread over seeds; no best",
}
DAGGER = "†"


def _ood_cell(c: Comparison, row: Row, metric: str, scale: float) -> bool:
    """A dagger on the cell itself: the row has a value at a scale that is OOD for it but not for others."""
    return (
        (metric, scale) in row.values
        and scale in row.ood
        and any(scale not in r.ood for r in c.rows if (metric, scale) in r.values)
    )


def _header(c: Comparison, scale: float) -> str:
    return f"x{format_scale(scale)}" + (DAGGER if c.ood_column(scale) else "")


def _legend(c: Comparison) -> list[str]:
    ood = [s for s in c.scales if c.ood_column(s)]
    lines = [
        f"Metric convention: {c.convention}.",
        "Best per column in bold (the runs' rows; paper rows are references, never marked).",
    ]
    if ood:
        tops = {r.scale_max for r in c.runs if r.scale_max is not None}
        top = f" (x{format_scale(tops.pop())})" if len(tops) == 1 else " of the row's run" if tops else ""
        lines.append(f"{DAGGER} out of distribution: above the training scale range{top}.")
    return lines


def comparison_markdown(c: Comparison) -> str:
    """The whole comparison as Markdown: runs, convention, one table per metric, notes."""
    lines = [f"# Comparison of {len(c.runs)} run(s): {c.stage} results", "", *_legend(c), "", "Runs:"]
    for r in c.runs:
        where = ", ".join(
            x
            for x in (r.dataset, f"trained up to x{format_scale(r.scale_max)}" if r.scale_max else None)
            if x
        )
        lines.append(f"- `{r.label}`: {r.method} ({r.csv}{'; ' + where if where else ''})")
    for m in c.metrics:
        better = f" ({_BETTER[m]})" if m in _BETTER else ""
        lines += ["", f"## {LABELS[m]}{better}", ""]
        lines.append("| method | from | " + " | ".join(_header(c, s) for s in c.scales) + " |")
        lines.append("| --- | --- |" + " ---: |" * len(c.scales))
        for i, row in c.rows_for(m):
            cells = []
            for s in c.scales:
                text = row.text(m, s) + (DAGGER if _ood_cell(c, row, m, s) else "")
                cells.append(f"**{text}**" if c.is_best(i, m, s) else text)
            name = row.name.replace("|", "\\|")  # a label's '|' would end the cell
            name = f"*{name}*" if row.reference else name
            lines.append(f"| {name} | {', '.join(row.sources)} | " + " | ".join(cells) + " |")
    if c.notes:
        lines += ["", "Notes:", *(f"- {n}" for n in c.notes)]
    return "\n".join(lines) + "\n"


def write_comparison_csv(c: Comparison, path: Path) -> Path:
    """Wide CSV: one line per (metric, row); scale columns ``x2``, ``x2.5``...; ``ood`` and ``best`` list the
    row's out-of-distribution and best scales (``;``-separated); ``reference`` is True for paper rows; a
    missing value is an empty cell."""
    cols = ["metric", "method", "from", "reference", "convention", *(f"x{format_scale(s)}" for s in c.scales)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*cols, "ood", "best"])
        for m in c.metrics:
            for i, row in c.rows_for(m):
                cells = [_csv_value(row, m, s) for s in c.scales]
                ood = ";".join(format_scale(s) for s in c.scales if s in row.ood and (m, s) in row.values)
                best = ";".join(format_scale(s) for s in c.scales if c.is_best(i, m, s))
                meta = [m, row.name, "; ".join(row.sources), row.reference, row.convention]
                writer.writerow([*meta, *cells, ood, best])
    return path


def _csv_value(row: Row, metric: str, scale: float) -> str:
    if (metric, scale) in row.shown:
        return row.shown[(metric, scale)]
    value = row.values.get((metric, scale))
    return "" if value is None else f"{round(value, 6)}"


def read_comparison_csv(path: Path) -> list[dict[str, Any]]:
    """The rows of a comparison.csv: {"metric", "method", "from", "reference" (bool), "convention",
    "values" ({scale: float or None}), "ood" and "best" (sets of scales)}."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        scales = [k for k in reader.fieldnames or [] if k.startswith("x")]
        out = []
        for raw in reader:
            out.append(
                {
                    "metric": raw["metric"],
                    "method": raw["method"],
                    "from": raw["from"],
                    "reference": raw["reference"] == "True",
                    "convention": raw["convention"],
                    "values": {scale_key(k[1:]): float(raw[k]) if raw[k] else None for k in scales},
                    "ood": {scale_key(s) for s in raw["ood"].split(";") if s},
                    "best": {scale_key(s) for s in raw["best"].split(";") if s},
                }
            )
    return out


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def tex_escape(text: str) -> str:
    """Plain text as LaTeX (the ten special characters escaped)."""
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def comparison_latex(c: Comparison) -> str:
    """One booktabs `table` per metric (needs ``\\usepackage{booktabs}``); paper rows below a rule."""
    out = [
        "% neurop-diff compare: " + tex_escape(f"{len(c.runs)} run(s), {c.stage} results"),
        "% needs \\usepackage{booktabs}",
    ]
    dagger = r"$^\dagger$"
    for m in c.metrics:
        head = " & ".join(
            rf"$\times${format_scale(s)}" + (dagger if c.ood_column(s) else "") for s in c.scales
        )
        better = f" ({_BETTER[m]})" if m in _BETTER else ""
        caption = (
            f"{tex_escape(LABELS[m] + better)}. Convention: {tex_escape(c.convention)}. Best per column in "
            "bold (runs only)."
            + (f" {dagger} out of distribution." if any(c.ood_column(s) for s in c.scales) else "")
        )
        out += [
            r"\begin{table}[t]",
            r"\centering",
            rf"\caption{{{caption}}}",
            rf"\begin{{tabular}}{{l{'r' * len(c.scales)}}}",
            r"\toprule",
            rf"Method & {head} \\",
            r"\midrule",
        ]
        ruled = False
        for i, row in c.rows_for(m):
            if row.reference and not ruled:
                out.append(r"\midrule")
                ruled = True
            cells = []
            for s in c.scales:
                text = row.text(m, s) + (dagger if _ood_cell(c, row, m, s) else "")
                cells.append(rf"\textbf{{{text}}}" if c.is_best(i, m, s) else text)
            out.append(f"{tex_escape(row.name)} & " + " & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)


def _ood_start(c: Comparison) -> float | None:
    """Where the shaded OOD region of the figure starts: the training range's top, else below the first
    OOD scale shown."""
    ood = sorted(s for s in c.scales if c.ood_column(s))
    if not ood:
        return None
    if c.scale_max is not None and c.scale_max < ood[0]:
        return c.scale_max
    below = [s for s in c.scales if s < ood[0]]
    return (below[-1] + ood[0]) / 2 if below else ood[0] - 0.5


def figure_size(n_metrics: int, n_rows: int) -> tuple[float, float]:
    """Inches (at 100 dpi: pixels / 100) of the figure: 4.5 wide per panel; the legend below, 3 per line."""
    return 4.5 * n_metrics, 3.6 + 0.25 * math.ceil(n_rows / 3)


def plot_comparison(c: Comparison, path: Path) -> Path:
    """One figure, one panel per metric against scale: every row a line in one colour across the panels
    (paper rows dashed), OOD scales shaded, one legend below. Saved at 100 dpi."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = len(c.metrics)
    width, height = figure_size(n, len(c.rows))
    fig, axes = plt.subplots(1, n, figsize=(width, height), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    start, lo, hi = _ood_start(c), min(c.scales) - 0.3, max(c.scales) + 0.3
    handles: dict[str, Any] = {}
    for ax, m in zip(axes[0], c.metrics, strict=True):
        for i, row in enumerate(c.rows):
            pts = [(s, row.values[(m, s)]) for s in c.scales if (m, s) in row.values]
            pts = [(s, v) for s, v in pts if math.isfinite(v)]
            if pts:
                xs, ys = zip(*pts, strict=True)
                style = {"linestyle": "--", "marker": "s", "alpha": 0.8} if row.reference else {"marker": "o"}
                (line,) = ax.plot(xs, ys, color=colours[i % len(colours)], label=row.name, **style)
                handles.setdefault(row.name, line)
        if not ax.lines:
            ax.text(0.5, 0.5, f"{LABELS[m]}: no values", ha="center", va="center", transform=ax.transAxes)
        if start is not None:
            handles["OOD"] = ax.axvspan(start, hi, color="0.88", zorder=0, label="OOD")
        ax.set_xlim(lo, hi)
        ax.set_xlabel("scale (HR/LR)")
        ax.set_ylabel(LABELS[m])
        ax.set_title(LABELS[m] + (f" ({_BETTER[m]})" if m in _BETTER else ""), fontsize=9)
        ax.grid(alpha=0.3)
    legend_h = 0.25 * math.ceil(len(handles) / 3) / height
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(f"{c.stage} results; convention: {c.convention}"[:160], fontsize=8)
    fig.tight_layout(rect=(0, legend_h + 0.02, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def wandb_tables(c: Comparison) -> dict[str, Any]:
    """{"compare/<metric>": wandb.Table}: per metric, columns method, from, reference, one per scale (OOD
    marked in its name), best (the row's best scales)."""
    import wandb

    tables = {}
    for m in c.metrics:
        cols = ["method", "from", "reference"]
        cols += [f"x{format_scale(s)}" + (" (OOD)" if c.ood_column(s) else "") for s in c.scales] + ["best"]
        data = [
            [row.name, "; ".join(row.sources), row.reference]
            + [row.values.get((m, s)) for s in c.scales]
            + [";".join(format_scale(s) for s in c.scales if c.is_best(i, m, s))]
            for i, row in c.rows_for(m)
        ]
        tables[f"compare/{m}"] = wandb.Table(columns=cols, data=data)
    return tables


def log_to_wandb(c: Comparison, mode: str, project: str, directory: Path, figure: Path | None = None) -> Path:
    """Log the comparison as a new W&B run (job type "compare") in `mode` ("online" / "offline"): a table
    per metric and the figure; returns the run's local folder (offline: upload it with `wandb sync`)."""
    import wandb

    directory.mkdir(parents=True, exist_ok=True)
    config = {"stage": c.stage, "convention": c.convention, "runs": {r.label: r.method for r in c.runs}}
    run = wandb.init(
        project=project,
        name=f"compare-{c.stage}",
        job_type="compare",
        dir=str(directory),
        mode=mode,
        config=config,
    )
    payload: dict[str, Any] = wandb_tables(c)
    if figure is not None and figure.is_file():
        payload["compare/metrics_vs_scale"] = wandb.Image(str(figure))
    run.log(payload)
    folder = Path(run.dir).parent
    run.finish()
    return folder


def write_comparison(c: Comparison, out: Path) -> dict[str, Path]:
    """comparison.md, comparison.csv, comparison.tex and metrics_vs_scale.png in `out`; {name: path}."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"comparison.md": out / "comparison.md", "comparison.tex": out / "comparison.tex"}
    files["comparison.md"].write_text(comparison_markdown(c))
    files["comparison.tex"].write_text(comparison_latex(c))
    files["comparison.csv"] = write_comparison_csv(c, out / "comparison.csv")
    files["metrics_vs_scale.png"] = plot_comparison(c, out / "metrics_vs_scale.png")
    return files
