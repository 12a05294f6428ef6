"""Diffusion training speed at 256^2: images/s with the default (authors') UNet, the frozen SRNO prior, EMA on.

    python benchmarks/train_speed.py [--batches 1 4] [--iters 3]

One training step as `DiffusionModule.training_step` does it (prior once, noise level and noise drawn, the
model's `training_loss`, Adam, then the EMA update that Lightning's `EMAWeightAveraging` makes through
`torch.optim.swa_utils`), timed part by part: prior, forward, backward, optimizer, EMA. Median over `--iters`
steps after one warm-up step. Target (issue 13): at least 2x the authors' code measured on this machine
(0.23 img/s at batch 1, 0.15 img/s at batch 4).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from neurop_diff.diffusion.schedule import make_schedule, sample_levels
from neurop_diff.lit.base import adam
from neurop_diff.models.neuropdiff import NeurOpDiff
from neurop_diff.models.srno import SRNO
from neurop_diff.models.unet import UNet
from neurop_diff.runtime import tune_cpu_allocator
from sampling_speed import peak_gflops  # benchmarks/ is the script's directory


def step_parts(model: NeurOpDiff, opt, ema, batch: int, g: torch.Generator) -> dict[str, float]:
    hr = torch.rand(batch, 3, 256, 256, generator=g) * 2 - 1
    lr = torch.nn.functional.interpolate(hr, size=(64, 64), mode="bicubic", antialias=True)
    t = {}
    start = time.perf_counter()
    cond, _ = model.condition(lr, (256, 256), with_prior=False)
    t["prior"] = time.perf_counter() - start
    gamma = sample_levels(model.schedule, batch, generator=g)
    noise = torch.randn(hr.shape, generator=g)
    start = time.perf_counter()
    loss = model.training_loss(hr, cond, gamma, noise)
    t["forward"] = time.perf_counter() - start
    start = time.perf_counter()
    loss.backward()
    t["backward"] = time.perf_counter() - start
    start = time.perf_counter()
    opt.step()
    opt.zero_grad(set_to_none=True)
    t["optimizer"] = time.perf_counter() - start
    start = time.perf_counter()
    ema.update_parameters(model.unet)
    t["ema"] = time.perf_counter() - start
    return t


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    tune_cpu_allocator()  # as `neurop-diff` does (NEUROP_DIFF_MALLOC=default: glibc as it is)
    print(f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}; channels_last "
          f"{'on' if args.channels_last else 'off'}; fp32 matmul peak {peak_gflops():.0f} GFLOP/s "
          "(4096^2: how fast this CPU is now)")  # fmt: skip
    parts = ("prior", "forward", "backward", "optimizer", "ema")
    lines = ["| batch | img/s | s/step | " + " | ".join(f"{p} s" for p in parts) + " |",
             "| ---: | ---: | ---: | " + " | ".join("---:" for _ in parts) + " |"]  # fmt: skip
    for batch in args.batches:
        torch.manual_seed(0)
        model = NeurOpDiff(
            UNet(channels_last=args.channels_last), make_schedule(), SRNO(), condition="operator"
        )
        model.train()
        opt = adam(model.unet.parameters(), lr=1e-4)  # DiffusionModule's optimizer (fused on CPU)
        ema = AveragedModel(model.unet, multi_avg_fn=get_ema_multi_avg_fn(0.999), use_buffers=True)
        g = torch.Generator().manual_seed(0)
        step_parts(model, opt, ema, batch, g)  # warm-up
        runs = [step_parts(model, opt, ema, batch, g) for _ in range(args.iters)]
        med = {p: statistics.median(r[p] for r in runs) for p in parts}
        total = sum(med.values())
        lines.append(f"| {batch} | {batch / total:.3f} | {total:.2f} | "
                     + " | ".join(f"{med[p]:.2f}" for p in parts) + " |")  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
