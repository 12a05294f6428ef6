"""Does the diffusion stage learn? Every parameterisation trained for the same budget, with learning curves.

    python benchmarks/diffusion_learning.py --steps 1500 --eval-every 300 --root ../shared/data/rsscn7

At the demo's size (RSSCN7 at 96 px, the demo's operator: `configs/operator_small.yaml`, 600 steps; the demo's
UNet: `configs/diffusion_small.yaml`, batch 8, EMA 0.99), each variant is trained with the documented CLI for the
same number of optimizer steps (the budget is given in steps so the result does not depend on the load of the
machine; the seconds per step are measured and printed). Every `--eval-every` steps the run validates with the
default sampler (DDIM, 20 steps, EMA weights) on `--val-images` val images at x2, x4, x8 through `SRMetrics`, with
the bicubic and operator rows beside it. At the end: sample diversity (mean per-pixel std over 4 seeds, [0, 1]
units) and how much detail each sample adds (high-frequency share of spectral energy above half Nyquist; the
PSNR of the high-pass band against HR's). Writes `docs/diffusion_learning.md` and `docs/diffusion_learning.png`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import time
from pathlib import Path

import torch

from neurop_diff.cli import main as neurop_diff

REPO = Path(__file__).resolve().parents[1]
SCALES = (2, 4, 8)
#: name -> DiffusionModule options.
VARIANTS = {
    "eps": {"prediction": "eps", "residual": False},
    "v": {"prediction": "v", "residual": False},
    "x0_res": {"prediction": "x0", "residual": True},
    "v_res": {"prediction": "v", "residual": True},
    "eps_res": {"prediction": "eps", "residual": True},
    "x0": {"prediction": "x0", "residual": False},
    "edm_res": {"prediction": "edm", "residual": True},
    "edm": {"prediction": "edm", "residual": False},
    "x0_res_lr5e-5": {"prediction": "x0", "residual": True, "lr_schedule": "[5.0e-5]"},
    "x0_res_ip": {"prediction": "x0", "residual": True, "input_perturbation": 0.1},
    "x0_res_minsnr": {"prediction": "x0", "residual": True, "loss_weighting": "min_snr"},
}


def data_args(args: argparse.Namespace) -> list[str]:
    return [
        f"--data.init_args.root={args.root}",
        "--data.init_args.dataset=rsscn7",
        f"--data.init_args.max_eval_images={args.val_images}",
        f"--data.init_args.val_scales=[{', '.join(map(str, SCALES))}]",
    ]


def train_operator(args: argparse.Namespace) -> Path:
    ckpt = Path(args.out) / "operator" / "bench" / "checkpoints" / "last.ckpt"
    if ckpt.is_file():
        print(f"operator: reusing {ckpt}")
        return ckpt
    neurop_diff([
        "fit", "--config", str(Path(args.configs) / "operator_small.yaml"), *data_args(args),
        f"--trainer.max_steps={args.operator_steps}", f"--trainer.val_check_interval={args.operator_steps}",
        f"--trainer.logger.init_args.save_dir={args.out}", "--trainer.logger.init_args.version=bench",
        "--trainer.enable_progress_bar=false",
    ])  # fmt: skip
    return ckpt


def train_variant(args: argparse.Namespace, name: str, operator: Path) -> tuple[Path, float]:
    """Fits one variant; returns its run folder and the wall-clock seconds of the fit."""
    run = Path(args.out) / "diffusion" / name
    opts = [f"--model.init_args.{k}={str(v).lower()}" for k, v in VARIANTS[name].items()]
    start = time.perf_counter()
    neurop_diff([
        "fit", "--config", str(Path(args.configs) / "diffusion_small.yaml"), *data_args(args), *opts,
        f"--model.init_args.operator_ckpt={operator}",
        f"--model.init_args.sampling_steps={args.sampling_steps}",
        f"--trainer.max_steps={args.steps}", f"--trainer.val_check_interval={args.eval_every}",
        f"--trainer.logger.init_args.save_dir={args.out}", "--trainer.logger.init_args.name=diffusion",
        f"--trainer.logger.init_args.version={name}", "--trainer.enable_progress_bar=false",
    ])  # fmt: skip
    return run, time.perf_counter() - start


def curve(run: Path) -> list[dict[str, float]]:
    """Validation rows of a run's CSV log: step and every val/* metric."""
    rows = []
    with (run / "metrics.csv").open() as f:
        for row in csv.DictReader(f):
            vals = {k: float(v) for k, v in row.items() if k.startswith("val/") and v not in ("", None)}
            if vals:
                rows.append({"step": float(row["step"]) + 1, **vals})
    return rows


@torch.no_grad()
def diversity_and_detail(args: argparse.Namespace, run: Path) -> dict[str, float]:
    """Mean per-pixel std over seeds at x4 and the high-frequency figures of sample, operator and HR."""
    from neurop_diff.data import SRDataModule
    from neurop_diff.lit import DiffusionModule

    try:
        from neurop_diff.evaluation.detail import hf_share
    except ImportError:  # older trees: no detail measure
        hf_share = None
    module = DiffusionModule.load_from_checkpoint(
        run / "checkpoints" / "last.ckpt", map_location="cpu"
    ).eval()
    dm = SRDataModule(
        dataset="rsscn7", root=args.root, hr_size=96, mode="full", val_scales=[4],
        max_eval_images=args.diversity_images, eval_batch_size=args.diversity_images, num_workers=0,
    )  # fmt: skip
    dm.setup("validate")
    batch = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    lr, hr = batch["lr"], batch["hr"]
    size = tuple(hr.shape[-2:])
    cond = module.model.condition(lr, size)
    samples = torch.stack([
        module.model.sample(lr, size, steps=args.sampling_steps, seed=s, condition=cond)
        for s in range(args.seeds)
    ])  # fmt: skip
    out = {"std": float(((samples + 1) / 2).std(0).mean())}
    if hf_share is not None:
        to01 = lambda x: ((x.clamp(-1, 1) + 1) / 2).float()  # noqa: E731
        out["hf_sample"] = float(hf_share(to01(samples[0])).mean())
        out["hf_operator"] = float(hf_share(to01(cond[1])).mean()) if cond[1] is not None else float("nan")
        out["hf_hr"] = float(hf_share(to01(hr)).mean())
    return out


def first_beat(rows: list[dict[str, float]], key: str, ref: str) -> str:
    """The first evaluated step where `key` beats `ref` at every scale, else a log-linear extrapolation."""
    for r in rows:
        if all(r.get(f"{key}_x{s}", -1) > r.get(f"{ref}_x{s}", math.inf) for s in SCALES):
            return f"{int(r['step'])}"
    if len(rows) < 2:
        return "not reached"
    worst = [min(r[f"{key}_x{s}"] - r[f"{ref}_x{s}"] for s in SCALES) for r in rows]
    a, b = rows[-2], rows[-1]
    slope = (worst[-1] - worst[-2]) / (math.log(b["step"]) - math.log(a["step"]))
    if slope <= 0:
        return f"not reached (gap {worst[-1]:.2f} dB, not closing)"
    return (
        f"not reached; extrapolated ~{int(b['step'] * math.exp(-worst[-1] / slope))} (gap {worst[-1]:.2f} dB)"
    )


def report(args: argparse.Namespace, results: dict[str, dict], seconds: dict[str, float]) -> str:
    lines = [
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average at the end {os.getloadavg()[0]:.1f}.",
        f"Budget: {args.steps} optimizer steps per variant (batch 8, 96 px RSSCN7, EMA 0.99), evaluated every "
        f"{args.eval_every} steps on {args.val_images} val images, DDIM {args.sampling_steps} steps, eta 0.",
        "",
        "| variant | step | " + " | ".join(f"PSNR x{s}" for s in SCALES) + " | "
        + " | ".join(f"SSIM x{s}" for s in SCALES) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in SCALES * 2) + " |",
    ]  # fmt: skip
    any_rows = next(iter(results.values()))["curve"]
    last = any_rows[-1]
    for ref in ("bicubic", "operator"):
        lines.append(
            f"| {ref} | | " + " | ".join(f"{last[f'val/psnr_{ref}_x{s}']:.2f}" for s in SCALES) + " | "
            + " | ".join(f"{last[f'val/ssim_{ref}_x{s}']:.4f}" for s in SCALES) + " |"
        )  # fmt: skip
    for name, res in results.items():
        for r in res["curve"]:
            lines.append(
                f"| {name} | {int(r['step'])} | " + " | ".join(f"{r[f'val/psnr_x{s}']:.2f}" for s in SCALES)
                + " | " + " | ".join(f"{r[f'val/ssim_x{s}']:.4f}" for s in SCALES) + " |"
            )  # fmt: skip
    lines += ["", "| variant | s/step (fit incl. val) | first step beating bicubic (PSNR) | x4 SSIM vs operator "
              "| seed std x4 | HF share sample / operator / HR |", "| --- | ---: | --- | ---: | ---: | --- |"]  # fmt: skip
    for name, res in results.items():
        c = res["curve"]
        gap = c[-1]["val/ssim_x4"] - c[-1]["val/ssim_operator_x4"]
        d = res["detail"]
        hf = (
            f"{d['hf_sample']:.4f} / {d['hf_operator']:.4f} / {d['hf_hr']:.4f}" if "hf_sample" in d else "n/a"
        )
        lines.append(
            f"| {name} | {seconds[name] / args.steps:.2f} | {first_beat(c, 'val/psnr', 'val/psnr_bicubic')} "
            f"| {gap:+.4f} | {d['std']:.4f} | {hf} |"
        )
    return "\n".join(lines)


def figure(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(SCALES), figsize=(4.2 * len(SCALES), 7), squeeze=False)
    last = next(iter(results.values()))["curve"][-1]
    for j, s in enumerate(SCALES):
        for i, metric in enumerate(("psnr", "ssim")):
            ax = axes[i][j]
            for name, res in results.items():
                c = res["curve"]
                ax.plot([r["step"] for r in c], [r[f"val/{metric}_x{s}"] for r in c], marker="o", label=name)
            for ref, style in (("bicubic", ":"), ("operator", "--")):
                ax.axhline(last[f"val/{metric}_{ref}_x{s}"], color="k", ls=style, lw=1, label=ref)
            ax.set_title(f"{metric.upper()} x{s}")
            ax.set_xlabel("training step")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default=str(REPO.parent / "shared/data/rsscn7"))
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps per variant (the budget)")
    parser.add_argument("--eval-every", type=int, default=300)
    parser.add_argument("--operator-steps", type=int, default=600, help="the demo's operator budget")
    parser.add_argument(
        "--variants", nargs="+", default=["eps", "v", "x0_res", "v_res"], choices=list(VARIANTS)
    )
    parser.add_argument("--val-images", type=int, default=16)
    parser.add_argument("--sampling-steps", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--diversity-images", type=int, default=8)
    parser.add_argument("--out", default=str(REPO / "runs/bench_learning"))
    parser.add_argument(
        "--docs",
        default=None,
        help="folder for the report and figure (default: --out; docs/ holds the curated page)",
    )
    parser.add_argument("--configs", default=str(REPO / "configs"), help="folder of the small configs")
    parser.add_argument("--resume", action="store_true", help="keep the variants already in OUT/results.json")
    args = parser.parse_args()
    operator = train_operator(args)
    results, seconds = {}, {}
    saved = Path(args.out, "results.json")
    if args.resume and saved.is_file():
        old = json.loads(saved.read_text())
        results = {k: v for k, v in old["results"].items() if k in args.variants}
        seconds = {k: v for k, v in old["seconds"].items() if k in results}
    for name in args.variants:
        if name in results:
            continue
        run, seconds[name] = train_variant(args, name, operator)
        results[name] = {"curve": curve(run), "detail": diversity_and_detail(args, run)}
        saved.write_text(json.dumps({"results": results, "seconds": seconds}, indent=1))
    text = report(args, results, seconds)
    docs = Path(args.docs or args.out)
    figure(results, docs / "diffusion_learning.png")
    (docs / "diffusion_learning.md").write_text(
        "# Diffusion learning benchmark\n\n`python benchmarks/diffusion_learning.py "
        f"--steps {args.steps} --eval-every {args.eval_every} --variants {' '.join(args.variants)}`\n\n"
        + text
        + "\n\n![learning curves](diffusion_learning.png)\n"
    )
    print(text)


if __name__ == "__main__":
    main()
