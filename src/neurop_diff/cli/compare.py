"""`neurop-diff compare RUN_DIR...`: one comparison of several runs' test results (``comparison/compare.py``).

Lightning is loaded only to log to W&B: the mode comes from ``neurop_diff.loggers.resolve_mode`` (online with
an account and a network, offline otherwise), imported then.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

from neurop_diff.comparison.compare import METRICS, build_comparison, default_metrics, load_runs
from neurop_diff.comparison.paper import DATASETS, TABLES, paper_rows
from neurop_diff.comparison.tables import comparison_markdown, log_to_wandb, write_comparison

__all__ = ["compare_main", "compare_parser"]

ModeResolver = Callable[[], tuple[str, str | None]]


def compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neurop-diff compare",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Compare the test results of several runs in one table per metric: methods as rows, scales as\n"
            "columns, the best run per column in bold, out-of-distribution scales marked x9†. Each run gives\n"
            "its own method's row (named from its config.yaml / hparams.yaml); bicubic and a diffusion run's\n"
            "operator condition are shown once when runs hold the same numbers on the same images. Runs\n"
            "measured under different metric conventions are refused. Writes comparison.md, comparison.csv,\n"
            "comparison.tex (booktabs) and metrics_vs_scale.png to --out and prints the Markdown."
        ),
        epilog=(
            "examples:\n"
            "  neurop-diff compare runs/small/operator/v0 runs/small/diffusion/v0 --out comparison\n"
            "  neurop-diff compare runs/a=SRNO runs/b=NeurOp-Diff --scales 2 2.5 4 9 --paper table3"
        ),
    )
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR[=LABEL]",
        help="a run directory (holding results/<stage>/metrics.csv), its results/<stage> folder or that "
        "csv; '=LABEL' names its row",
    )
    parser.add_argument("--labels", nargs="+", help="row names, one per run (instead of RUN_DIR=LABEL)")
    parser.add_argument(
        "--scales", nargs="+", type=float, help="only these scales (e.g. 2 2.5 4); default all"
    )
    parser.add_argument(
        "--metric",
        nargs="+",
        default=None,
        choices=METRICS,
        help="the metrics to tabulate, one table each (default: psnr ssim lpips, and lr_psnr swd_l0 lsd_hi "
        "seed_std where a run recorded them)",
    )
    parser.add_argument("--out", type=Path, default=Path("comparison"), help="output folder (./comparison)")
    parser.add_argument("--stage", choices=("test", "val"), default="test", help="which results (test)")
    parser.add_argument(
        "--paper",
        nargs="+",
        choices=TABLES,
        default=[],
        help="add the paper's numbers of these tables as reference rows, labelled '<method> (paper, Table "
        "N)', never marked best (the authors' convention may differ from the runs')",
    )
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        help="Table 1's dataset block (default: the runs' dataset when it is one of these, else ucmerced)",
    )
    parser.add_argument(
        "--allow-mixed-conventions",
        action="store_true",
        help="tabulate runs measured under different metric conventions (refused by default)",
    )
    parser.add_argument(
        "--wandb",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="log the tables and figure as a W&B run (offline without an account); default: when a run "
        "was logged to W&B and wandb is installed",
    )
    return parser


def compare_main(argv: list[str], resolve_mode: ModeResolver | None = None) -> dict[str, Path]:
    """Run `neurop-diff compare` with `argv` (after the command name); returns the files written.
    ``resolve_mode`` gives the W&B mode (default: ``neurop_diff.loggers.resolve_mode``)."""
    parser = compare_parser()
    ns = parser.parse_args(argv)
    try:
        runs = load_runs(ns.runs, ns.stage, ns.labels)
        datasets = {r.dataset for r in runs}
        dataset = ns.dataset or (datasets.pop() if len(datasets) == 1 and datasets <= set(DATASETS) else None)
        paper = [row for table in ns.paper for row in paper_rows(table, dataset or "ucmerced")]
        comparison = build_comparison(
            runs,
            ns.metric or default_metrics(runs),
            ns.scales,
            paper,
            ns.allow_mixed_conventions,
            stage=ns.stage,
        )
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"neurop-diff compare: error: {err}\n")
    files = write_comparison(comparison, ns.out)
    print(comparison_markdown(comparison))
    projects = [r.wandb_project for r in runs if r.wandb_project]
    use_wandb = ns.wandb if ns.wandb is not None else bool(projects)
    if use_wandb and importlib.util.find_spec("wandb") is None:
        print("W&B: wandb is not installed; no W&B table" + (" (--wandb)" if ns.wandb else ""))
    elif use_wandb:
        if resolve_mode is None:
            from neurop_diff.loggers import resolve_mode
        mode, reason = resolve_mode()
        if mode != "disabled":
            if reason:
                print(f"W&B: logging offline because {reason}.")
            directory = Path(os.environ.get("WANDB_DIR") or ns.out)
            folder = log_to_wandb(
                comparison,
                mode,
                projects[0] if projects else "neurop-diff",
                directory,
                files["metrics_vs_scale.png"],
            )
            files["wandb"] = folder
            if mode == "offline":
                print(f"W&B: offline run in {folder}; upload it with `wandb sync {folder}`")
    print("wrote " + ", ".join(str(p) for p in files.values()))
    return files
