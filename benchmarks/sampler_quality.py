"""Sampler quality on a trained small model: PSNR/SSIM against HR per sampler and number of steps.

    python benchmarks/sampler_quality.py --checkpoint runs/bench_learning/diffusion/x0_res/checkpoints/last.ckpt

The checkpoint is one of `benchmarks/diffusion_learning.py`'s (96 px RSSCN7). On `--val-images` val images at each
of `--scales`, every sampler runs at 5, 10, 20 and 50 steps from the same starting noise (`starting_noise(seed)`);
the reference is DDIM with 50 steps. Metrics: the default convention (RGB, no crop, 8-bit). Target (issue 13):
some sampler at <= 15 model calls within 0.1 dB of DDIM-50's PSNR.
"""

from __future__ import annotations

import argparse
import os
import platform

import torch

from neurop_diff.data import SRDataModule
from neurop_diff.evaluation.convention import MetricConvention, image_metrics
from neurop_diff.lit import DiffusionModule
from neurop_diff.runtime import tune_cpu_allocator

SAMPLERS = ("ddim", "euler", "heun", "dpmpp_2m")


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--root", default="../shared/data/rsscn7")
    parser.add_argument("--val-images", type=int, default=16)
    parser.add_argument("--scales", type=float, nargs="+", default=[4.0])
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--spacing", choices=("uniform", "karras"), default="uniform")
    args = parser.parse_args()
    tune_cpu_allocator()  # as `neurop-diff` does (NEUROP_DIFF_MALLOC=default: glibc as it is)
    module = DiffusionModule.load_from_checkpoint(args.checkpoint, map_location="cpu").eval()
    model, hp = module.model, module.hparams
    dm = SRDataModule(dataset="rsscn7", root=args.root, hr_size=int(hp.image_size), mode="full",
                      val_scales=args.scales, max_eval_images=args.val_images,
                      eval_batch_size=args.val_images, num_workers=0)  # fmt: skip
    dm.setup("validate")
    convention = MetricConvention()
    print(f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads. Checkpoint {args.checkpoint} (prediction {hp.prediction}, "
          f"residual {hp.residual}); {args.val_images} val images; level spacing {args.spacing} for the ODE "
          "samplers (DDIM: uniform).")  # fmt: skip
    lines = ["| scale | sampler | steps | model calls | PSNR | SSIM | PSNR - DDIM-50 |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for batch in dm.val_dataloader():
        batch = dm.on_after_batch_transfer(batch, 0)
        lr, hr, scale = batch["lr"], batch["hr"], float(batch["scale"][0])
        cond = model.condition(lr, tuple(hr.shape[-2:]))

        def run(sampler: str, steps: int, cond=cond, lr=lr, hr=hr, scale=scale) -> tuple[float, float]:
            spacing = "uniform" if sampler == "ddim" else args.spacing
            sr = model.sample(lr, tuple(hr.shape[-2:]), steps=steps, sampler=sampler, spacing=spacing,
                              seed=int(hp.seed), condition=cond)  # fmt: skip
            m = image_metrics(sr, hr, convention, scale)
            return float(m["psnr"].mean()), float(m["ssim"].mean())

        ref, _ = run("ddim", 50)
        for sampler in SAMPLERS:
            for steps in args.steps:
                psnr, ssim = run(sampler, steps)
                calls = 2 * steps - 1 if sampler == "heun" else steps
                lines.append(f"| x{float(batch['nominal_scale'][0]):g} | {sampler} | {steps} | {calls} | "
                             f"{psnr:.2f} | {ssim:.4f} | {psnr - ref:+.2f} |")  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
