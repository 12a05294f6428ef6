"""Does the diffusion stage learn, and does it add the right detail? Parameterisations trained for one budget,
evaluated with distortion and realism measures at several checkpoints and sampler lengths.

    python benchmarks/diffusion_learning.py --phase train --variants x0_res eps     # one training process
    python benchmarks/diffusion_learning.py --phase eval                             # every saved checkpoint
    python benchmarks/diffusion_learning.py --phase report                           # table + figures

At the demo's size (RSSCN7 at 96 px, the demo's operator: `configs/operator.yaml` + `configs/model/small.yaml`,
600 steps; the demo's UNet: `configs/diffusion_small.yaml`, batch 8, EMA 0.99), each variant is trained with the documented CLI for the
same number of optimizer steps (given in steps so the result does not depend on the machine's load; the seconds
per step are printed). A checkpoint (EMA weights) is kept every `--eval-every` steps. The eval phase samples every
checkpoint on `--val-images` val images at x2, x4, x8 with DDIM (trailing spacing unless the variant says
otherwise) at each of `--ddim-steps` (a flow: Euler at each of `--flow-steps`), from the same seeded noise, and measures PSNR and SSIM (RGB, no crop, 8-bit
quantised), LR-PSNR, SWD of Laplacian patches (l0..l2, x1e3) and LSD-hi (evaluation/realism.py), with bicubic and
the operator beside them, plus the seed spread (`--seeds` samples) at the last checkpoint. Two training processes
of one thread each can run side by side (`--threads 1`); every phase writes into `--out`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
from pathlib import Path

import torch

from neurop_diff.checkpointing import newest_last_checkpoint
from neurop_diff.cli import main as neurop_diff
from neurop_diff.weights import read_checkpoint

REPO = Path(__file__).resolve().parents[1]
SCALES = (2, 4, 8)
#: The new defaults of every variant unless it says otherwise.
CORE = {"noise_embedding": "log_sigma", "level_sampling": "lognormal", "spacing": "trailing"}
#: name -> DiffusionModule options (on top of CORE).
VARIANTS = {
    "eps": {"prediction": "eps", "residual": False},
    "x0_res": {"prediction": "x0", "residual": True},
    "v_res": {"prediction": "v", "residual": True},
    "edm_res": {"prediction": "edm", "residual": True},
    # The probe's recipe: SR3 levels drawn per image instead of the log-normal ones.
    "x0_res_sr3": {"prediction": "x0", "residual": True, "level_sampling": "sr3"},
    # Before this work: SR3's gamma embedding and leading spacing.
    "x0_res_old": {"prediction": "x0", "residual": True, "noise_embedding": "sr3", "level_sampling": "sr3",
                   "spacing": "leading"},
    # Posterior-mean rectified flow (configs/flow_small.yaml): conditioned on the prior or not, two source noises.
    "flow": {"process": "flow"},
    "flow_s0.1": {"process": "flow", "flow_noise": 0.1},
    "flow_uncond": {"process": "flow", "conditioned": False},
}  # fmt: skip
FLOW = {"noise_embedding": "time", "loss": "l2", "sampler": "euler", "flow_noise": 0.2, "conditioned": True}


def options(name: str) -> dict:
    """The variant's DiffusionModule options (its process's defaults under its own)."""
    if VARIANTS[name].get("process") == "flow":
        return {**FLOW, **VARIANTS[name]}
    return {**CORE, **VARIANTS[name]}


def is_flow(name: str) -> bool:
    return VARIANTS[name].get("process") == "flow"


def data_args(args: argparse.Namespace) -> list[str]:
    return [
        f"--data.init_args.root={args.root}",
        "--data.init_args.dataset=rsscn7",
        "--data.init_args.max_eval_images=8",
        f"--data.init_args.val_scales=[{', '.join(map(str, SCALES))}]",
    ]


def train_operator(args: argparse.Namespace) -> Path:
    ckpt = Path(args.out) / "operator" / "bench" / "checkpoints" / "last.ckpt"
    if ckpt.is_file():
        print(f"operator: reusing {ckpt}")
        return ckpt
    neurop_diff([
        "fit", "--config", str(Path(args.configs) / "operator.yaml"),
        "--config", str(Path(args.configs) / "model" / "small.yaml"), *data_args(args),
        f"--trainer.max_steps={args.operator_steps}", f"--trainer.val_check_interval={args.operator_steps}",
        f"--trainer.logger.init_args.save_dir={args.out}", "--trainer.logger.init_args.version=bench",
        "--trainer.enable_progress_bar=false",
    ])  # fmt: skip
    return ckpt


def train_variant(args: argparse.Namespace, name: str, operator: Path) -> float:
    """Fits one variant (a checkpoint every `eval_every` steps); returns the seconds per step of the fit."""
    opts = [f"--model.init_args.{k}={str(v).lower()}" for k, v in options(name).items()]
    config = "flow_small.yaml" if is_flow(name) else "diffusion_small.yaml"
    last = newest_last_checkpoint([Path(args.out, "diffusion", name, "checkpoints")])  # what it resumes
    done = int(read_checkpoint(last, mmap=True)["global_step"]) if last else 0
    start = time.perf_counter()
    neurop_diff([
        "fit", "--config", str(Path(args.configs) / config), *data_args(args), *opts,
        f"--model.init_args.operator_ckpt={operator}",
        f"--trainer.max_steps={args.steps}", f"--trainer.val_check_interval={args.eval_every}",
        f"--trainer.logger.init_args.save_dir={args.out}", "--trainer.logger.init_args.name=diffusion",
        f"--trainer.logger.init_args.version={name}", "--trainer.enable_progress_bar=false",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.filename={step}", "--trainer.callbacks.save_top_k=-1",
        f"--trainer.callbacks.every_n_train_steps={args.eval_every}",
        "--ckpt_path=last",  # a longer budget continues the run's last.ckpt (none: from scratch)
    ])  # fmt: skip
    return (time.perf_counter() - start) / max(args.steps - done, 1)  # the steps this fit ran (it may resume)


def val_batches(args: argparse.Namespace) -> dict[int, dict]:
    """The val images at every scale, as the datamodule makes them (HR 96 px, LR by its degradation)."""
    from neurop_diff.data import SRDataModule

    out = {}
    for s in SCALES:
        dm = SRDataModule(
            dataset="rsscn7", root=args.root, hr_size=96, mode="full", val_scales=[s],
            max_eval_images=args.val_images, eval_batch_size=args.val_images, num_workers=0,
        )  # fmt: skip
        dm.setup("validate")
        out[s] = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    return out


def measures(sr: torch.Tensor, batch: dict, scale: float) -> dict[str, float]:
    """Set means of every measure for SR (B, 3, H, W) in [-1, 1] against the batch's HR and LR."""
    from neurop_diff.evaluation.convention import (
        MetricConvention,
        psnr_per_image,
        quantize,
        ssim_per_image,
        to_unit,
    )
    from neurop_diff.evaluation.realism import lr_psnr, lsd_hi, swd

    conv = MetricConvention()
    pred, target = conv.prepare(sr, scale), conv.prepare(batch["hr"], scale)
    out = {
        "psnr": float(psnr_per_image(pred, target).mean()),
        "ssim": float(ssim_per_image(pred, target).mean()),
        # of the 8-bit SR (what a saved file holds), as SRMetrics does
        "lr_psnr": float(lr_psnr(quantize(to_unit(sr)) * 2 - 1, batch["lr"]).clamp(max=100).mean()),
        "lsd_hi": float(lsd_hi(pred, target).mean()),
    }
    out.update({k: float(v) for k, v in swd(pred, target).items()})
    return out


@torch.no_grad()
def evaluate(args: argparse.Namespace) -> dict:
    """Measures every checkpoint of every variant into `--out/eval.json`, computing only what is missing (a
    longer run or a new sampler length adds columns to the rows already there)."""
    from neurop_diff.lit import DiffusionModule

    batches = val_batches(args)
    path = Path(args.out, "eval.json")
    results = json.loads(path.read_text()) if path.is_file() else {"refs": {}, "runs": {}}
    for name in args.variants:
        found = Path(args.out, "diffusion", name, "checkpoints").glob("step=*.ckpt")
        ckpts = sorted(found, key=lambda p: int(p.stem.split("=")[1].split("-")[0]))
        for ckpt in ckpts:
            step = int(ckpt.stem.split("=")[1].split("-")[0])
            if args.only_at and step not in args.only_at:
                continue
            key = f"{name}@{step}"
            row: dict = results["runs"].setdefault(key, {})
            full = step in args.full_at or (not args.full_at and ckpt == ckpts[-1])
            todo = columns(args, name, full)
            if all(f"x{SCALES[-1]}_{c}" in row for c in todo):
                continue
            model = DiffusionModule.load_from_checkpoint(ckpt, map_location="cpu").eval().model
            row["sampler"] = "euler" if is_flow(name) else "ddim"
            for s, batch in batches.items():
                measure_scale(args, name, model, batch, s, row, todo, results["refs"])
            path.write_text(json.dumps(results, indent=1))
            k = curve_steps(counts(args, name))
            print(
                f"evaluated {key}: " + ", ".join(f"x{s} PSNR {row[f'x{s}_k{k}']['psnr']:.2f}" for s in SCALES)
            )
    return results


def counts(args: argparse.Namespace, name: str) -> list[int]:
    return args.flow_steps if is_flow(name) else args.ddim_steps


def target_steps(args: argparse.Namespace, name: str) -> int:
    """The longest evaluated sampler length within the targets' budget (`--max-calls` network calls)."""
    return max([k for k in counts(args, name) if k <= args.max_calls] or [min(counts(args, name))])


def columns(args: argparse.Namespace, name: str, full: bool) -> list[str]:
    """The row's columns for one scale: every K; at a full checkpoint also every K with the LR projection
    (`--project`) and the seed spread at the target K, without and with it."""
    cols = [f"k{k}" for k in counts(args, name)]
    if full and args.project:
        cols += [f"k{k}_project" for k in counts(args, name)]
    if full and args.seeds > 1:
        k = target_steps(args, name)
        cols += [f"seed_std_k{k}"] + ([f"seed_std_k{k}_project"] if args.project else [])
    return cols


def measure_scale(
    args, name: str, model, batch: dict, s: int, row: dict, todo: list[str], refs: dict
) -> None:
    """Fills the missing `todo` columns of `row` at scale `s` (and the bicubic / operator references)."""
    from neurop_diff.evaluation.spread import seed_std, seed_std_by_texture

    size = tuple(batch["hr"].shape[-2:])
    cond = model.condition(batch["lr"], size)
    if not refs.get(f"x{s}"):
        bic = torch.nn.functional.interpolate(batch["lr"], size=size, mode="bicubic").clamp(-1, 1)
        refs[f"x{s}"] = {"bicubic": measures(bic, batch, s), "operator": measures(cond[1], batch, s)}
    sampler, spacing = ("euler", "leading") if is_flow(name) else ("ddim", options(name)["spacing"])
    draw = functools.partial(
        model.sample, batch["lr"], size, sampler=sampler, spacing=spacing, condition=cond
    )
    for col in todo:
        if f"x{s}_{col}" in row:
            continue
        consistency = "project" if col.endswith("_project") else "none"
        k = int(col.split("k")[-1].split("_")[0])
        if col.startswith("seed_std"):
            draws = torch.stack(
                [draw(steps=k, seed=j, lr_consistency=consistency) for j in range(args.seeds)]
            )
            textured, flat = seed_std_by_texture(draws, batch["hr"])
            row[f"x{s}_{col}"] = {"all": float(seed_std(draws).mean()), "textured": float(textured.mean()),
                                  "flat": float(flat.mean())}  # fmt: skip
            continue
        t = time.perf_counter()
        sr = draw(steps=k, seed=0, lr_consistency=consistency)
        row[f"x{s}_{col}"] = {**measures(sr, batch, s), "s_per_image": (time.perf_counter() - t) / len(sr)}


def curve_steps(counts: list[int]) -> int:
    """The sampler length of the curves: the longest evaluated one up to 20 network calls."""
    return max([k for k in counts if k <= 20] or counts)


def report(args: argparse.Namespace, results: dict) -> str:
    refs, runs = results["refs"], results["runs"]
    lines = [
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}.",
        f"{args.val_images} val images per scale (96 px RSSCN7), seed 0, metrics RGB / no crop / 8-bit; "
        "K = network calls (DDIM steps, Euler steps); `+proj`: LR consistency (project).",
        "",
        "| variant | step | K | PSNR x2 / x4 / x8 | LR-PSNR x2 / x4 / x8 | SWD-l0 x2 / x4 / x8 | LSD-hi x2 / x4 / x8 "
        "| SWD-l0 / LSD-hi vs operator, x4 | s / image, x4 |",
        "| --- | ---: | ---: | --- | --- | --- | --- | --- | ---: |",
    ]  # fmt: skip

    def cells(get) -> list[str]:
        return [" / ".join(f"{get(s, m):.{d}f}" for s in SCALES) for m, d in
                (("psnr", 2), ("lr_psnr", 1), ("swd_l0", 1), ("lsd_hi", 2))]  # fmt: skip

    for ref in ("bicubic", "operator"):
        lines.append(
            f"| {ref} | | | " + " | ".join(cells(lambda s, m, ref=ref: refs[f"x{s}"][ref][m])) + " | | |"
        )
    o4 = refs["x4"]["operator"]
    for key, row in runs.items():
        name, step = key.split("@")
        for col in sorted({c.split("_", 1)[1] for c in row if c.startswith("x2_k")}, key=_k_order):
            r4 = row[f"x4_{col}"]
            rel = f"{r4['swd_l0'] / o4['swd_l0']:.2f}x / {r4['lsd_hi'] / o4['lsd_hi']:.2f}x"
            label = col.removeprefix("k").replace("_project", " +proj")
            lines.append(
                f"| {name} | {step} | {label} | "
                + " | ".join(cells(lambda s, m, row=row, col=col: row[f"x{s}_{col}"][m]))
                + f" | {rel} | {r4['s_per_image']:.2f} |"
            )  # fmt: skip
    return "\n".join([*lines, "", *target_table(args, results)])


def target_table(args: argparse.Namespace, results: dict) -> list[str]:
    """The issue's targets at the targets' budget: every full checkpoint, each variant's longest K within
    `--max-calls`, without and with the LR projection; relative to the operator."""
    refs, runs = results["refs"], results["runs"]
    lines = [
        f"At <= {args.max_calls} network calls (targets: LR-PSNR >= 45, PSNR - operator >= -3 dB, SWD-l0 <= 0.7x,"
        " LSD-hi <= 0.5x, seed std > 0 and textured > flat):",
        "",
        "| variant | step | K | PSNR - operator x2 / x4 / x8 | LR-PSNR x2 / x4 / x8 | SWD-l0 vs operator "
        "| LSD-hi vs operator | seed std x4 textured / flat | s / image x4 |",
        "| --- | ---: | --- | --- | --- | --- | --- | --- | ---: |",
    ]  # fmt: skip
    for key, row in runs.items():
        name, step = key.split("@")
        k = target_steps(args, name)
        for col in (f"k{k}", f"k{k}_project"):
            if f"x2_{col}" not in row or (col == f"k{k}" and f"x2_k{k}_project" not in row):
                continue
            op = {s: refs[f"x{s}"]["operator"] for s in SCALES}
            get = {s: row[f"x{s}_{col}"] for s in SCALES}
            seed = row.get(f"x4_seed_std_{col}")
            spread = f"{seed['textured']:.4f} / {seed['flat']:.4f}" if seed else ""
            lines.append(
                f"| {name} | {step} | {col.removeprefix('k').replace('_project', ' +proj')} | "
                + " / ".join(f"{get[s]['psnr'] - op[s]['psnr']:+.2f}" for s in SCALES) + " | "
                + " / ".join(f"{get[s]['lr_psnr']:.1f}" for s in SCALES) + " | "
                + " / ".join(f"{get[s]['swd_l0'] / op[s]['swd_l0']:.2f}" for s in SCALES) + " | "
                + " / ".join(f"{get[s]['lsd_hi'] / op[s]['lsd_hi']:.2f}" for s in SCALES)
                + f" | {spread} | {get[4]['s_per_image']:.2f} |"
            )  # fmt: skip
    return lines


def _k_order(col: str) -> tuple[int, int]:
    return int(col.removeprefix("k").split("_")[0]), col.endswith("_project")


def _curve_key(row: dict) -> str:
    return (
        f"k{curve_steps([int(c.split('_k')[1]) for c in row if c.startswith('x2_k') and 'project' not in c])}"
    )


def figure(args: argparse.Namespace, results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    refs, runs = results["refs"], results["runs"]
    fig, axes = plt.subplots(3, len(SCALES), figsize=(4.4 * len(SCALES), 10), squeeze=False)
    names = sorted({key.split("@")[0] for key in runs})
    for j, s in enumerate(SCALES):
        for i, metric in enumerate(("psnr", "swd_l0")):
            ax = axes[i][j]
            for name in names:
                pts = sorted((int(key.split("@")[1]), row[f"x{s}_{_curve_key(row)}"][metric])
                             for key, row in runs.items() if key.split("@")[0] == name)  # fmt: skip
                ax.plot(*zip(*pts, strict=True), marker="o", label=name)
            for ref, style in (("bicubic", ":"), ("operator", "--")):
                ax.axhline(refs[f"x{s}"][ref][metric], color="k", ls=style, lw=1, label=ref)
            ax.set_title(f"{'PSNR (dB)' if metric == 'psnr' else 'SWD-l0 (x1e3)'} x{s}, DDIM 20 / Euler 16")
            ax.set_xlabel("training step")
            ax.grid(alpha=0.3)
        ax = axes[2][j]  # perception-distortion plane at the last checkpoint of each variant
        for name in names:
            last = max((key for key in runs if key.split("@")[0] == name), key=lambda q: int(q.split("@")[1]))
            cols = sorted((c.split("_", 1)[1] for c in runs[last] if c.startswith(f"x{s}_k")), key=_k_order)
            plain = [c for c in cols if "project" not in c]
            pts = [(runs[last][f"x{s}_{c}"]["swd_l0"], runs[last][f"x{s}_{c}"]["psnr"]) for c in plain]
            (line,) = ax.plot(*zip(*pts, strict=True), marker="o",
                              label=f"{name} @{last.split('@')[1]} (K = {', '.join(c[1:] for c in plain)})")  # fmt: skip
            proj = [
                (runs[last][f"x{s}_{c}"]["swd_l0"], runs[last][f"x{s}_{c}"]["psnr"])
                for c in cols
                if "project" in c
            ]
            if proj:  # the same K with LR projection: dashed, same colour
                ax.plot(
                    *zip(*proj, strict=True),
                    marker="x",
                    ls="--",
                    color=line.get_color(),
                    label=f"{name} +proj",
                )
        for ref, mk in (("bicubic", "s"), ("operator", "D")):
            ax.scatter(
                refs[f"x{s}"][ref]["swd_l0"], refs[f"x{s}"][ref]["psnr"], marker=mk, color="k", label=ref
            )
        ax.set_xscale("log")  # the eps / v samples that are still noise sit a decade to the right
        ax.set_xlabel("SWD-l0 (x1e3, log scale, lower = closer to HR's detail)")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"perception-distortion x{s}, last step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    axes[2][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--phase", choices=["train", "eval", "report", "all"], default="all")
    parser.add_argument("--root", default=str(REPO.parent / "shared/data/rsscn7"))
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps per variant (the budget)")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--operator-steps", type=int, default=600, help="the demo's operator budget")
    parser.add_argument("--variants", nargs="+", default=["eps", "x0_res", "v_res", "edm_res"],
                        choices=list(VARIANTS))  # fmt: skip
    parser.add_argument("--val-images", type=int, default=32)
    parser.add_argument(
        "--ddim-steps", type=int, nargs="+", default=[5, 20, 50], help="diffusion: DDIM lengths"
    )
    parser.add_argument(
        "--flow-steps", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="flow: Euler lengths"
    )
    parser.add_argument("--project", action="store_true", help="also sample with LR consistency (full steps)")
    parser.add_argument(
        "--full-at",
        type=int,
        nargs="*",
        default=[],
        help="checkpoints (steps) measured with --project and --seeds (default: the last)",
    )
    parser.add_argument("--max-calls", type=int, default=10, help="the targets' budget of network calls")
    parser.add_argument(
        "--only-at", type=int, nargs="*", default=[], help="evaluate only these checkpoints (steps)"
    )
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (two 1-thread runs side by side)"
    )
    parser.add_argument("--out", default=str(REPO / "runs/bench_learning"))
    parser.add_argument("--configs", default=str(REPO / "configs"), help="folder of the small configs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.phase in ("train", "all"):
        operator = train_operator(args)
        for name in args.variants:
            if not Path(args.out, "diffusion", name, "checkpoints", f"step={args.steps}.ckpt").is_file():
                print(f"{name}: {train_variant(args, name, operator):.2f} s/step (fit incl. validation)")
    if args.phase in ("eval", "all"):
        evaluate(args)
    if args.phase in ("report", "all"):
        results = json.loads(Path(args.out, "eval.json").read_text())
        results["runs"] = {k: v for k, v in results["runs"].items() if k.split("@")[0] in args.variants}
        text = report(args, results)
        figure(args, results, Path(args.out, "diffusion_learning.png"))
        Path(args.out, "diffusion_learning.md").write_text(text + "\n")
        print(text)


if __name__ == "__main__":
    main()
