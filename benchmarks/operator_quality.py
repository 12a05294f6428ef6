"""Operator quality after a fixed CPU budget: train SRNO on RSSCN7 (train split) for N minutes, then report val
PSNR/SSIM per scale for the operator and for bicubic. Target: the operator beats bicubic at every scale.

    python benchmarks/operator_quality.py --minutes 20 --root ../shared/data/rsscn7

It is the documented CLI recipe (`neurop-diff fit --config configs/operator.yaml --config configs/model/small.yaml ...` with a time limit
and a mid-size SRNO on 256 px images) followed by a read of the run's results/val/metrics.csv.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from pathlib import Path

import torch

from neurop_diff.cli import main as neurop_diff

REPO = Path(__file__).resolve().parents[1]


def run(args: argparse.Namespace) -> Path:
    version = time.strftime("%Y%m%d-%H%M%S")
    config = [
        "--config",
        str(REPO / "configs/operator.yaml"),
        "--config",
        str(REPO / "configs/model/small.yaml"),
    ]
    data = [
        f"--data.init_args.root={args.root}",
        "--data.init_args.dataset=rsscn7",
        "--data.init_args.hr_size=256",
        "--data.init_args.lr_patch=48",
        "--data.init_args.batch_size=16",
        f"--data.init_args.max_eval_images={args.eval_images}",
        "--data.init_args.eval_batch_size=4",
    ]
    cli = [
        "fit", *config, *data,
        "--model.init_args.encoder_blocks=8",
        "--model.init_args.encoder_width=64",
        "--model.init_args.width=128",
        "--model.init_args.heads=8",
        "--model.init_args.head_width=128",
        "--model.init_args.sample_q=2304",
        "--model.init_args.lr=4e-4",
        f"--trainer.max_time=00:00:{args.minutes:02d}:00",
        f"--trainer.max_steps={args.max_steps}",  # the cosine horizon; max_time usually stops first
        "--trainer.val_check_interval=null",
        "--trainer.check_val_every_n_epoch=100000",
        "--trainer.log_every_n_steps=50",
        f"--trainer.logger.init_args.save_dir={args.out}",
        f"--trainer.logger.init_args.version={version}",
    ]  # fmt: skip
    neurop_diff(cli)
    run_dir = Path(args.out) / "operator" / version
    # max_time stops before the end-of-epoch validation: validate the last checkpoint explicitly.
    neurop_diff([
        "validate", *config, *data,
        f"--trainer.logger.init_args.save_dir={args.out}", "--trainer.logger.init_args.name=operator_val",
        f"--trainer.logger.init_args.version={version}",
        f"--ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
    ])  # fmt: skip
    return Path(args.out) / "operator_val" / version / "results" / "val" / "metrics.csv"


def table(metrics_csv: Path) -> str:
    rows = [r for r in csv.DictReader(line for line in metrics_csv.open() if not line.startswith("#"))]
    by_scale: dict[str, dict[str, dict[str, str]]] = {}
    for row in rows:
        by_scale.setdefault(row["scale"], {})[row["method"]] = row
    lines = [
        "| scale | bicubic PSNR | operator PSNR | bicubic SSIM | operator SSIM | operator wins |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for scale, methods in sorted(by_scale.items(), key=lambda kv: float(kv[0])):
        b, o = methods["bicubic"], methods["operator"]
        win = float(o["psnr"]) > float(b["psnr"]) and float(o["ssim"]) > float(b["ssim"])
        lines.append(
            f"| x{scale} | {float(b['psnr']):.2f} | {float(o['psnr']):.2f} | {float(b['ssim']):.4f} "
            f"| {float(o['ssim']):.4f} | {'yes' if win else 'NO'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default=str(REPO.parent / "shared/data/rsscn7"))
    parser.add_argument("--minutes", type=int, default=20)
    parser.add_argument("--max-steps", type=int, default=2500, help="schedule horizon (about 20 min here)")
    parser.add_argument("--eval-images", type=int, default=56, help="val images (round-robin over classes)")
    parser.add_argument("--out", default=str(REPO / "runs/bench"))
    args = parser.parse_args()
    metrics_csv = run(args)
    print(f"\nMachine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(
        f"Operator quality after {args.minutes} min of training on RSSCN7 (val, {args.eval_images} images):"
    )
    print(table(metrics_csv))
    print(f"(from {metrics_csv})")


if __name__ == "__main__":
    main()
