"""One comparison of several runs' results: methods as rows, scales as columns, one table per metric.

Pure (no Lightning). Each run (``comparison/runs.py``: its ``results/<stage>/metrics.csv`` and
recorded config) gives its own method's row; its extra rows (``bicubic``, a diffusion run's ``operator``
condition) are shown once when several runs hold the same numbers on the same images (`same_data`); the
paper's numbers (``comparison/paper.py``) can be added as reference rows, never marked best.
``comparison/tables.py`` writes the files; ``neurop-diff compare`` (``cli/compare.py``) is the command.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from neurop_diff.comparison.paper import PAPER_CONVENTION, PaperRow
from neurop_diff.comparison.runs import (
    METRICS,
    Run,
    find_results,
    load_run,
    load_runs,
    scale_key,
)
from neurop_diff.evaluation.convention import format_scale

__all__ = [
    "Comparison",
    "Row",
    "Run",
    "build_comparison",
    "default_metrics",
    "find_results",
    "load_run",
    "load_runs",
    "scale_key",
]

# Best: max, but min LPIPS, SWD and LSD-hi and, for hf_share, closest to HR's own share (the level texture
# restoration moves toward; more is noise); the seed spread has no best (read it with PSNR and SWD).
LOWER_IS_BETTER = frozenset({"lpips", "swd_l0", "swd_l1", "swd_l2", "lsd_hi"})
NO_BEST = frozenset({"seed_std"})
DIGITS = {"psnr": 2, "hf_psnr": 2, "lr_psnr": 2, "swd_l0": 2, "swd_l1": 2, "swd_l2": 2, "lsd_hi": 2}  # else 4
BASE_METRICS = ("psnr", "ssim", "lpips")
DEFAULT_REALISM = ("lr_psnr", "swd_l0", "lsd_hi", "seed_std")  # shown by default where a run has them
Key = tuple[str, float]  # (metric, scale)


@dataclass
class Row:
    """A table row: a method's values per (metric, scale); `shown` keeps the paper's printed text."""

    name: str
    key: str
    sources: list[str]
    values: dict[Key, float]
    n_images: dict[float, int]
    ood: set[float]
    convention: str
    dataset: str | None = None
    reference: bool = False
    shown: dict[Key, str] = field(default_factory=dict)

    def text(self, metric: str, scale: float) -> str:
        """The cell as shown: the paper's text, the value rounded (2 decimals for PSNR, 4 otherwise) or '-'."""
        if (metric, scale) in self.shown:
            return self.shown[(metric, scale)]
        value = self.values.get((metric, scale))
        return "-" if value is None else f"{value:.{DIGITS.get(metric, 4)}f}"


@dataclass
class Comparison:
    """Rows (runs' first, paper's last), the scales and metrics shown, the best rows per (metric, scale)."""

    stage: str
    runs: list[Run]
    rows: list[Row]
    scales: list[float]
    metrics: list[str]
    convention: str
    notes: list[str]
    best: dict[Key, set[int]] = field(default_factory=dict)

    def is_best(self, i: int, metric: str, scale: float) -> bool:
        return i in self.best.get((metric, scale), set())

    def ood_column(self, scale: float) -> bool:
        return any(scale in r.ood for r in self.rows if r.values.keys() & {(m, scale) for m in self.metrics})

    def rows_for(self, metric: str) -> list[tuple[int, Row]]:
        """(index, row) of the rows shown in `metric`'s table: every run row ('-' where it lacks a value),
        paper rows only where the paper gives that metric."""
        return [
            (i, r)
            for i, r in enumerate(self.rows)
            if not r.reference or any((metric, s) in r.values for s in self.scales)
        ]

    @property
    def scale_max(self) -> float | None:
        known = {r.scale_max for r in self.runs if r.scale_max is not None}
        return min(known) if known else None


def _row(run: Run, method: str, name: str) -> Row:
    mine = [r for r in run.rows if r["method"] == method]
    values = {(k, r["scale"]): r[k] for r in mine for k in (*METRICS, "hf_share_hr") if r[k] is not None}
    return Row(
        name=name,
        key=method,
        sources=[run.label],
        values=values,
        n_images={r["scale"]: r["n_images"] for r in mine},
        ood={r["scale"] for r in mine if r["ood"]},
        convention=run.convention,
        dataset=run.dataset,
    )


def same_data(a: Row, b: Row, rel: float = 5e-5) -> bool:
    """Whether two rows are one method on the same images: same convention and dataset, the same number of
    images and (up to float noise: `rel`) the same values at every scale both have."""
    shared = a.n_images.keys() & b.n_images.keys()
    other_dataset = None not in (a.dataset, b.dataset) and a.dataset != b.dataset
    if not shared or a.convention != b.convention or other_dataset:
        return False
    if any(a.n_images[s] != b.n_images[s] for s in shared):
        return False
    keys = {k for k in a.values.keys() & b.values.keys() if k[1] in shared}
    return all(abs(a.values[k] - b.values[k]) <= rel * max(1.0, abs(a.values[k])) + 1e-6 for k in keys)


def _merge(into: Row, other: Row) -> None:
    """Add `other`'s sources and the scales `into` lacks (where both have a scale, `into`'s values stay)."""
    into.sources += [s for s in other.sources if s not in into.sources]
    into.ood |= {s for s in other.ood if s not in into.n_images}
    for k, v in other.values.items():
        into.values.setdefault(k, v)
    for s, n in other.n_images.items():
        into.n_images.setdefault(s, n)


def collect_rows(runs: list[Run]) -> tuple[list[Row], list[str]]:
    """The runs' rows and notes: bicubic first, then per run its extra rows and its own row; an extra row
    holding the same data as an earlier row (`same_data`) is merged into it (its sources say where from)."""
    own = [_row(r, r.own, r.method) for r in runs]
    names = [r.name for r in own]
    for r, run in zip(own, runs, strict=True):
        if names.count(r.name) > 1:
            r.name = f"{r.name} [{run.label}]"
    extras: list[Row] = []
    for run in runs:
        for method in dict.fromkeys(r["method"] for r in run.rows):
            if method == run.own:
                continue
            name = method if method == "bicubic" else f"{method} (condition of {run.label})"
            row = _row(run, method, name)
            twin = next((x for x in own + extras if x.key == method and same_data(x, row)), None)
            if twin is not None:
                _merge(twin, row)
            else:
                extras.append(row)
    notes = []
    for key in dict.fromkeys(r.key for r in extras):
        same = [r for r in extras if r.key == key]
        if len(same) > 1:  # one method on different data: one row per run, named by it
            for r in same:
                r.name = f"{r.name} [{r.sources[0]}]"
            notes.append(f"{key}: the runs' numbers differ (other images or scales): one row per run")
    for r in extras + own:
        if len(r.sources) > 1:
            notes.append(f"{r.name}: the same numbers in {', '.join(r.sources)} (same images): shown once")
    rows = [r for r in extras if r.key == "bicubic"]
    for run, run_own in zip(runs, own, strict=True):
        rows += [r for r in extras if r.key != "bicubic" and r.sources[0] == run.label] + [run_own]
    return rows, notes


def paper_row(p: PaperRow) -> Row:
    values = {(m, s): float(t) for m, by_scale in p.values.items() for s, t in by_scale.items()}
    return Row(
        name=p.label,
        key=p.method,
        sources=[f"paper, Table {p.table}"],
        values=values,
        n_images={},
        ood={s for _, s in values if p.is_ood(s)},
        convention=PAPER_CONVENTION,
        dataset=p.dataset,
        reference=True,
        shown={(m, s): t for m, by_scale in p.values.items() for s, t in by_scale.items()},
    )


def check_conventions(runs: list[Run], allow_mixed: bool = False) -> str:
    """The runs' common convention; a ValueError naming two runs that disagree (unless `allow_mixed`)."""
    first = runs[0]
    other = next((r for r in runs if r.convention != first.convention), None)
    if other is None:
        return first.convention
    if not allow_mixed:
        raise ValueError(
            f"the runs use different metric conventions: {first.label} ({first.csv}) '{first.convention}', "
            f"{other.label} ({other.csv}) '{other.convention}'; their numbers are not comparable. Test them "
            "with the same SRMetrics settings (channel, crop_border, quantize), or pass "
            "--allow-mixed-conventions to tabulate them anyway"
        )
    return "mixed: " + "; ".join(f"{r.label}: {r.convention}" for r in runs)


def _best(rows: list[Row], metric: str, scale: float) -> set[int]:
    """Indices of the best runs' rows at (metric, scale), compared as shown (ties all marked); paper rows
    never; none when fewer than two rows have a value."""
    cand = [(i, r) for i, r in enumerate(rows) if not r.reference and (metric, scale) in r.values]
    if len(cand) < 2 or metric in NO_BEST:
        return set()
    digits = DIGITS.get(metric, 4)

    def score(r: Row) -> float:
        v = round(r.values[(metric, scale)], digits)
        hr = r.values.get(("hf_share_hr", scale))
        if metric == "hf_share" and hr is not None:
            return -round(abs(v - hr), digits)
        return -v if metric in LOWER_IS_BETTER else v

    top = max(score(r) for _, r in cand)
    return {i for i, r in cand if score(r) == top}


def default_metrics(runs: list[Run]) -> list[str]:
    """PSNR, SSIM, LPIPS, then LR-PSNR, SWD-l0, LSD-hi and the seed spread where a run recorded them."""
    return [
        *BASE_METRICS,
        *(m for m in DEFAULT_REALISM if any(r.get(m) is not None for x in runs for r in x.rows)),
    ]


def build_comparison(
    runs: list[Run],
    metrics: list[str] | tuple[str, ...] | None = None,
    scales: list[float] | None = None,
    paper: list[PaperRow] | None = None,
    allow_mixed_conventions: bool = False,
    stage: str = "test",
) -> Comparison:
    """The comparison of `runs` (and the paper's `paper` rows) at `scales` (default: every scale of a run)
    in `metrics` (default: `default_metrics`)."""
    if not runs:
        raise ValueError("compare needs at least one run")
    metrics = default_metrics(runs) if metrics is None else metrics
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {', '.join(unknown)}: choose from {', '.join(METRICS)}")
    convention = check_conventions(runs, allow_mixed_conventions)
    rows, notes = collect_rows(runs)
    if convention.startswith("mixed"):
        notes.append("the runs use different metric conventions (--allow-mixed-conventions): see each run")
    have = sorted({s for r in rows for s in r.n_images})
    if scales is None:
        shown = have
    else:
        shown = sorted({scale_key(s) for s in scales})
        paper_scales = {s for p in paper or [] for by in p.values.values() for s in by}
        missing = [s for s in shown if s not in have and s not in paper_scales]
        if missing:
            raise ValueError(
                f"--scales {', '.join(format_scale(s) for s in missing)}: no run has results there "
                f"(the runs have x{', x'.join(format_scale(s) for s in have)})"
            )
    for p in paper or []:
        row = paper_row(p)
        if not any(s in shown for _, s in row.values):
            notes.append(f"{row.name}: no value at the scales shown: left out")
            continue
        rows.append(row)
        if p.note and f"Table {p.table}: {p.note}" not in notes:
            notes.append(f"Table {p.table}: {p.note}")
    if paper:
        notes.append(
            f"paper rows: as printed in the paper, under its convention ({PAPER_CONVENTION}), which may "
            "differ from the runs'; never marked best"
        )
        ours = {r.dataset for r in runs if r.dataset}
        for table in dict.fromkeys(p.table for p in paper):
            theirs = {p.dataset for p in paper if p.table == table}
            if ours and ours != theirs:
                notes.append(
                    f"Table {table} is on {', '.join(sorted(theirs))}, the runs on {', '.join(sorted(ours))}"
                )
    for m in metrics:
        if not any((m, s) in r.values for r in rows for s in shown):
            notes.append(f"{m}: no run recorded it ('-')")
    comparison = Comparison(stage, runs, rows, shown, list(metrics), convention, notes)
    comparison.best = {(m, s): _best(rows, m, s) for m in metrics for s in shown}
    return comparison
