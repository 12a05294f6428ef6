"""`neurop-diff experiment SPEC.yaml`: run one paper table's experiment set (fit, test, compare).

The set itself (spec, plan, check, run) is ``neurop_diff.comparison.experiments``; the ``neurop-diff`` entry
point that checks every command before anything trains is handed in (``parse``), never imported from here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from neurop_diff.comparison.experiments import load_experiment, run_experiment

__all__ = ["experiment_main"]

DESCRIPTION = (
    "`neurop-diff experiment SPEC.yaml`: the runs of one paper table (fit, then test) and their comparison."
)


def experiment_main(argv: list[str], *, parse: Callable[[list[str]], None]) -> None:
    """`neurop-diff experiment SPEC [--out DIR] [--wandb] [--force] [--dry-run] [-- ARGS for fit and test]`;
    ``parse`` is the ``neurop-diff`` entry point (it checks every command before anything trains)."""
    extra: list[str] = []
    if "--" in argv:
        argv, extra = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = argparse.ArgumentParser(prog="neurop-diff experiment", description=DESCRIPTION)
    parser.add_argument(
        "spec", type=Path, help="an experiment spec, e.g. configs/experiments/table5/cpu.yaml"
    )
    parser.add_argument("--out", type=Path, help="folder of the runs (default runs/experiments/<name>)")
    parser.add_argument(
        "--wandb", action="store_true", help="also log every run to W&B, grouped by experiment"
    )
    parser.add_argument("--force", action="store_true", help="redo steps whose results exist")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ns = parser.parse_args(argv)
    try:
        exp = load_experiment(ns.spec)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"neurop-diff experiment: error: {err}\n")
    out = ns.out or Path("runs") / "experiments" / exp.name
    print(
        f"{exp.name}: {exp.description}\nruns: {', '.join(r.name for r in exp.runs)}; output: {out}",
        flush=True,
    )
    try:
        folder = run_experiment(
            exp, out, extra, wandb=ns.wandb, force=ns.force, dry_run=ns.dry_run, parse=parse
        )
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        parser.exit(1, f"neurop-diff experiment: error: {err}\n")
    if not ns.dry_run:
        print(f"\ncomparison: {folder}/ (comparison.md, .csv, .tex, metrics_vs_scale.png)")
