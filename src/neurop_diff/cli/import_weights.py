"""`neurop-diff import-weights SOURCE --out CKPT`: the authors' published weights as a neurop-diff checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["import_weights_main"]


def import_weights_main(argv: list[str]) -> None:
    """Entry point of `neurop-diff import-weights` (``argv`` without the subcommand)."""
    from neurop_diff.lit.authors import import_weights

    parser = argparse.ArgumentParser(
        prog="neurop-diff import-weights",
        description=(
            "Convert the authors' published weights into a neurop-diff checkpoint that `--ckpt_path` and "
            "`model.init_args.operator_ckpt` accept. SRNO files (srno_weight.pth, SRNO epoch-*.pth) and LIIF "
            "files (edsr-baseline-liif.pth) become an OperatorModule checkpoint (arch srno / liif); NeurOp-Diff "
            "training checkpoints (step_*.pth) a DiffusionModule one."
        ),
    )
    parser.add_argument("source", type=Path, help="the authors' .pth file")
    parser.add_argument("--out", type=Path, required=True, help="the .ckpt file to write")
    parser.add_argument(
        "--raw", action="store_true", help="NeurOp-Diff: take the raw weights instead of the EMA"
    )
    ns = parser.parse_args(argv)
    try:
        written = import_weights(ns.source, ns.out, use_ema=not ns.raw)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"neurop-diff import-weights: error: {err}\n")
    print(f"wrote {written}")
