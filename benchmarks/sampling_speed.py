"""Sampling speed of the user's path: one 64^2 -> 256^2 image at x4 with the default (authors') UNet and SRNO.

    python benchmarks/sampling_speed.py [--batches 1 4] [--steps 10 20 50 100] [--run-steps 10]

Measured through `NeurOpDiff.sample` (what `neurop-diff test` and `neurop_diff.upscale` call): the prior's time,
the time per UNet step (median over `--repeat` calls), the share of a full run spent outside the UNet, peak RSS,
and the UNet's achieved GFLOP/s against this CPU's matmul peak (a 4096^2 fp32 matmul in the same run). Every
sampler is run end to end for `--run-steps` steps; the seconds per image at the other step counts are
prior + steps x (UNet step + measured per-step overhead), computed from those measurements (the table says so).
Random weights: speed does not depend on them. Target (2 threads, quiet machine): T = 50 under 25 s per image.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from neurop_diff.diffusion.schedule import make_schedule
from neurop_diff.models.neuropdiff import NeurOpDiff
from neurop_diff.models.srno import SRNO
from neurop_diff.models.unet import UNet
from neurop_diff.runtime import tune_cpu_allocator

SAMPLERS = ("ddim", "dpmpp_2m", "euler", "heun", "ddpm")


def peak_gflops(n: int = 4096, repeat: int = 3) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeat))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def build(channels_last: bool) -> NeurOpDiff:
    torch.manual_seed(0)
    unet = UNet(channels_last=channels_last).eval()
    return NeurOpDiff(unet, make_schedule(), SRNO().eval(), condition="operator")


@torch.inference_mode()
def measure(model: NeurOpDiff, batch: int, args: argparse.Namespace) -> dict[str, float]:
    lr = torch.rand(batch, 3, 64, 64) * 2 - 1
    size = (256, 256)
    prior_s = _timed(lambda: model.condition(lr, size, with_prior=False))
    cond = model.condition(lr, size, with_prior=False)
    x = torch.randn(batch, 3, *size)
    gamma = torch.full((batch,), 1.0, dtype=torch.float64)  # VE sigma
    model.denoised(x, gamma, cond[0])  # warm-up
    step_s = statistics.median(_timed(lambda: model.denoised(x, gamma, cond[0])) for _ in range(args.repeat))
    with FlopCounterMode(display=False) as counter:
        model.unet(torch.cat([x, cond[0]], 1), gamma.float())
    flops = counter.get_total_flops()
    runs = {}
    steps = args.run_steps
    for sampler in args.samplers:
        calls = {"ddpm": model.schedule.T, "heun": 2 * steps - 1}.get(sampler, steps)
        if sampler == "ddpm" and not args.ddpm:
            continue
        total = _timed(lambda s=sampler: model.sample(lr, size, steps=steps, sampler=s, condition=cond))
        runs[sampler] = (total, calls)
    return {"prior": prior_s, "step": step_s, "flops": flops, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 100])
    parser.add_argument("--run-steps", type=int, default=10, help="steps of the end-to-end run per sampler")
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS[:4]), choices=SAMPLERS)
    parser.add_argument("--ddpm", action="store_true", help="also run DDPM end to end (T = 2000 UNet calls)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--channels-last", choices=("on", "off", "both"), default="both")
    args = parser.parse_args()
    tune_cpu_allocator()  # as `neurop-diff` does (NEUROP_DIFF_MALLOC=default: glibc as it is)
    peak = peak_gflops()
    print(f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}; "
          f"fp32 matmul peak {peak:.0f} GFLOP/s")  # fmt: skip
    layouts = {"on": [True], "off": [False], "both": [False, True]}[args.channels_last]
    lines = [
        "| channels_last | batch | prior s | UNet step s | UNet GFLOP/s (% of peak) | sampler | "
        + " | ".join(f"T={t} s/img" for t in args.steps)
        + " | outside UNet |",
        "| --- | ---: | ---: | ---: | ---: | --- | " + " | ".join("---:" for _ in args.steps) + " | ---: |",
    ]
    for cl in layouts:
        model = build(cl)
        for batch in args.batches:
            m = measure(model, batch, args)
            gflops = m["flops"] / m["step"] / 1e9
            for sampler, (total, calls) in m["runs"].items():
                overhead = max(total - m["prior"] - calls * m["step"], 0.0) / calls
                per_call = m["step"] + overhead
                cells = []
                for t in args.steps:
                    n = {"ddpm": model.schedule.T, "heun": 2 * t - 1}.get(sampler, t)
                    est = (m["prior"] + n * per_call) / batch
                    cells.append(f"{est:.1f}" + ("" if t == args.run_steps else "*"))
                share = (total - calls * m["step"]) / total
                lines.append(
                    f"| {'on' if cl else 'off'} | {batch} | {m['prior']:.2f} | {m['step']:.2f} | "
                    f"{gflops:.0f} ({100 * gflops / peak:.0f}%) | {sampler} | " + " | ".join(cells)
                    + f" | {100 * share:.1f}% |"
                )  # fmt: skip
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("\n".join(lines))
    print(f"* computed from the measured prior, UNet step and per-step overhead of the T={args.run_steps} run. "
          f"Peak RSS {rss:.0f} MiB.")  # fmt: skip


if __name__ == "__main__":
    main()
