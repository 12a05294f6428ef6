"""Results a person reads: per-scale tables (CSV, Markdown, console); the figures and image grids are in
``evaluation/figures.py``.

Pure functions of plain rows (dicts of str/float) and uint8 images; no Lightning. A per-image row is
`{"stage", "method", "scale", "name", "psnr", "ssim", "lpips"}` (lpips None when LPIPS is unavailable), and
optionally the detail measures of `evaluation/detail.py`: `"hf_share"`, `"hf_psnr"`, `"hf_ssim"` and
`"hf_share_hr"` (HR's share, the reference to compare `hf_share` with); a summary row is
`{"method", "scale", "ood", "psnr", "ssim", "lpips", <detail keys>, "n_images"}` (means over images; a key is
None when a row lacks it). Tables and the figure show the detail columns when the rows have them.

The realism measures (``evaluation/realism.py``): per image ``"lr_psnr"``, ``"lsd_hi"`` and ``"seed_std"``
(None where not measured: seed_std needs several samples), averaged like PSNR; per set the SWD levels
``"swd_l0"``, ``"swd_l1"``, ``"swd_l2"``, which per-image rows do not carry: `summarize` takes them per
(method, scale) from ``set_metrics``. A column of them is shown where any row has a value (empty elsewhere).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from neurop_diff.evaluation.convention import format_scale
from neurop_diff.evaluation.realism import SWD_KEYS

METRICS = ("psnr", "ssim", "lpips")
DETAIL = ("hf_share", "hf_share_hr", "hf_psnr", "hf_ssim")
PER_IMAGE_REALISM = ("lr_psnr", "lsd_hi", "seed_std")
REALISM = ("lr_psnr", *SWD_KEYS, "lsd_hi", "seed_std")
LABELS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS", "hf_share": "energy share > Nyquist/2"}
REALISMLABELS = {
    "lr_psnr": "LR-PSNR (dB)",
    **{k: f"SWD {k[4:]} (x1e3)" for k in SWD_KEYS},
    "lsd_hi": "LSD-hi (dB)",
    "seed_std": "seed std",
}
REALISM_NOTE = (
    "Realism (evaluation/realism.py): LR-PSNR = PSNR of degrade(SR) against the LR input (RGB, no crop); "
    "SWD l0/l1/l2 = sliced Wasserstein distance of 7x7 Laplacian-pyramid patches, the method's set against "
    "HR's, normalised by HR's statistics (x1e3; one value per method and scale; lower is closer); LSD-hi = "
    "log-spectral distance to HR above half Nyquist (dB; lower is closer); seed std = per-pixel std over "
    "samples of different seeds."
)


def has_detail(table: Sequence[dict]) -> bool:
    """Whether rows (or summary rows) carry the detail measures."""
    return bool(table) and all(r.get("hf_share") is not None for r in table)


def present(table: Sequence[dict], keys: Sequence[str]) -> list[str]:
    """The keys of ``keys`` that at least one row of ``table`` has a value for (the columns to show)."""
    return [k for k in keys if any(r.get(k) is not None for r in table)]


def _mean(group: Sequence[dict], key: str) -> float | None:
    values = [r.get(key) for r in group]
    return None if any(v is None for v in values) else float(np.mean(values))


def is_ood(scale: float, scale_max: float | None) -> bool:
    """Out of distribution: beyond the largest training scale (1e-6 tolerance so x4 at scale_max 4 is not)."""
    return scale_max is not None and scale > scale_max + 1e-6


def summarize(
    rows: Sequence[dict],
    methods: Sequence[str],
    scale_max: float | None = None,
    set_metrics: Mapping[tuple[str, float], Mapping[str, float | None]] | None = None,
) -> list[dict]:
    """Mean PSNR/SSIM/LPIPS (and detail, per-image realism) per (scale, method), ordered by scale then
    `methods`; a mean is None if any row lacks the key. The set-level SWD values come from ``set_metrics``
    {(method, scale): {"swd_l0": ...}} (None where absent)."""
    groups: dict[tuple[float, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((float(row["scale"]), row["method"]), []).append(row)
    order = {m: i for i, m in enumerate(methods)}
    summary = []
    for scale, method in sorted(groups, key=lambda k: (k[0], order.get(k[1], len(order)), k[1])):
        group = groups[(scale, method)]
        summary.append(
            {
                "method": method,
                "scale": scale,
                "ood": is_ood(scale, scale_max),
                "psnr": float(np.mean([r["psnr"] for r in group])),
                "ssim": float(np.mean([r["ssim"] for r in group])),
                "lpips": _mean(group, "lpips"),
                **{k: _mean(group, k) for k in DETAIL},
                **{k: _mean(group, k) for k in PER_IMAGE_REALISM},
                **{k: (set_metrics or {}).get((method, scale), {}).get(k) for k in SWD_KEYS},
                "n_images": len(group),
            }
        )
    return summary


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "n/a"
    two = ("psnr", "hf_psnr", "lr_psnr", *SWD_KEYS, "lsd_hi")
    return f"{value:.2f}" if metric in two else f"{value:.4f}"


def _rounded(row: dict) -> dict:
    """Metric values to 6 decimals (float32 noise in files helps nobody)."""
    keys = METRICS + DETAIL + REALISM
    return {k: round(v, 6) if k in keys and v is not None and math.isfinite(v) else v for k, v in row.items()}


def write_metrics_csv(path: Path, summary: Sequence[dict], convention: str, has_lpips: bool) -> Path:
    """One row per method and scale; the convention is a column so every row states it (no NaN: LPIPS column
    is absent when LPIPS is unavailable)."""
    cols = [
        "method",
        "scale",
        "ood",
        "psnr",
        "ssim",
        *(["lpips"] if has_lpips else []),
        *(DETAIL if has_detail(summary) else []),
        *present(summary, REALISM),
        "n_images",
        "convention",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        for row in summary:
            writer.writerow({**_rounded(row), "scale": format_scale(row["scale"]), "convention": convention})
    return path


def write_per_image_csv(path: Path, rows: Sequence[dict], has_lpips: bool) -> Path:
    """Every (stage, method, scale, image) with its PSNR, SSIM (and LPIPS, and the detail measures)."""
    cols = ["stage", "method", "scale", "name", "psnr", "ssim", *(["lpips"] if has_lpips else [])]
    cols += list(DETAIL) if has_detail(rows) else []
    cols += present(rows, PER_IMAGE_REALISM)  # the set-level SWD is in metrics.csv only
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**_rounded(row), "scale": format_scale(row["scale"])})
    return path


def metrics_markdown(summary: Sequence[dict], convention: str, title: str, lpips_note: str) -> str:
    """Markdown table (method, scale, OOD, PSNR, SSIM, LPIPS, [detail measures,] images) after the convention."""
    detail = DETAIL if has_detail(summary) else ()
    realism = present(summary, REALISM)
    lines = [
        f"# {title}",
        "",
        f"Convention: {convention}. LPIPS: {lpips_note}. OOD: scale above the training range.",
        *(
            [
                "Detail (evaluation/detail.py): HF share = spectral energy above half the Nyquist frequency "
                "(HR's beside it); HF PSNR / SSIM = of the high-pass band (image - Gaussian blur, sigma 1.5 px) "
                "against HR's."
            ]
            if detail
            else []
        ),
        *([REALISM_NOTE] if realism else []),
        "",
        "| method | scale | OOD | PSNR (dB) | SSIM | LPIPS |"
        + ("" if not detail else " HF share | HF share HR | HF PSNR (dB) | HF SSIM |")
        + "".join(f" {REALISMLABELS[k]} |" for k in realism)
        + " images |",
        "| --- | ---: | :---: | ---: | ---: | ---: |" + " ---: |" * (len(detail) + len(realism)) + " ---: |",
    ]
    for r in summary:
        extra = "".join(f" {_fmt(r[k], k)} |" for k in detail)
        extra += "".join(f" {_fmt(r.get(k), k)} |" for k in realism)
        lines.append(
            f"| {r['method']} | x{format_scale(r['scale'])} | {'OOD' if r['ood'] else ''} | "
            f"{_fmt(r['psnr'], 'psnr')} | {_fmt(r['ssim'], 'ssim')} | {_fmt(r['lpips'], 'lpips')} |{extra} "
            f"{r['n_images']} |"
        )
    return "\n".join(lines) + "\n"


_CONSOLE = (("PSNR", "psnr", ".2f"), ("SSIM", "ssim", ".4f"), ("LPIPS", "lpips", ".3f"))
_CONSOLE_REALISM = (
    ("LR-PSNR", "lr_psnr", ".2f"),
    ("SWD-l0", "swd_l0", ".1f"),
    ("LSD-hi", "lsd_hi", ".2f"),
    ("seed-sd", "seed_std", ".4f"),
)


def console_table(summary: Sequence[dict], methods: Sequence[str]) -> str:
    """Compact text table grouped by scale, methods side by side: PSNR / SSIM / LPIPS per method; below it,
    where measured, a second block with LR-PSNR / SWD-l0 / LSD-hi (/ seed std) per method."""
    shown = [m for m in methods if any(r["method"] == m for r in summary)]
    blocks = [_console_block(summary, shown, _CONSOLE, 6)]
    measured = present(summary, REALISM)
    realism = [c for c in _CONSOLE_REALISM if c[1] in measured]
    if realism:
        blocks.append(_console_block(summary, shown, realism, 7))
    return "\n\n".join(blocks)


def _console_block(
    summary: Sequence[dict], shown: Sequence[str], cols: Sequence[tuple[str, str, str]], w: int
) -> str:
    by_key = {(r["scale"], r["method"]): r for r in summary}
    scales = sorted({r["scale"] for r in summary})
    width = 2 + len(cols) * (w + 1)  # one cell: "| " + the numbers and their spaces
    head1 = f"{'scale':<10}" + "".join(f"| {m:<{width - 2}}" for m in shown)
    head2 = f"{'':<10}" + "".join("| " + "".join(f"{h:>{w}} " for h, _, _ in cols) for _ in shown)
    lines = [head1, head2, "-" * len(head2)]
    for s in scales:
        ood = any(by_key[(s, m)]["ood"] for m in shown if (s, m) in by_key)
        cells = []
        for m in shown:
            r = by_key.get((s, m))
            if r is None:
                cells.append(f"| {'':<{width - 2}}")
                continue
            values = [r.get(k) for _, k, _ in cols]
            cells.append(
                "| "
                + "".join(
                    f"{'n/a' if v is None else format(v, f):>{w}} "
                    for v, (_, _, f) in zip(values, cols, strict=True)
                )
            )
        label = f"x{format_scale(s)}" + (" OOD" if ood else "")
        lines.append(f"{label:<10}" + "".join(cells))
    return "\n".join(lines)
