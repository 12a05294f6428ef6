"""Time and peak memory of SRNO inference (default size, random weights) at x4: 64^2 -> 256^2,
256^2 -> 1024^2, 512^2 -> 2048^2. Each case runs in a fresh subprocess so peak RSS values do not mix.

    python benchmarks/operator_speed.py [--chunk-size auto|none|INT] [--threads N]

Prints a markdown table (case, seconds, peak RSS MB, target, pass) and the machine. Peak RSS includes the
Python/torch baseline (reported separately). Targets: to-256^2 under 1 s; to-1024^2 under 2 GB; to-2048^2
under 4 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

from neurop_diff.runtime import tune_cpu_allocator

CASES = [  # (LR side, HR side, target seconds or None, target peak RSS MB or None)
    (64, 256, 1.0, None),
    (256, 1024, None, 2048),
    (512, 2048, None, 4096),
]


def run_case(lr_side: int, hr_side: int, chunk: str, threads: int | None) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)
    from neurop_diff.models import SRNO

    torch.manual_seed(0)
    model = SRNO().eval()
    lr = torch.rand(1, 3, lr_side, lr_side) * 2 - 1
    chunk_size = None if chunk == "none" else ("auto" if chunk == "auto" else int(chunk))
    with torch.inference_mode():
        model(lr[:, :, :8, :8], (16, 16))  # warm-up of the kernels, negligible memory
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # Median of 3 for the quick case (one run is at the mercy of the scheduler), one run for the big ones.
        runs = []
        for _ in range(3 if hr_side <= 512 else 1):
            start, cpu = time.perf_counter(), time.process_time()
            out = model(lr, (hr_side, hr_side), chunk_size=chunk_size)
            runs.append((time.perf_counter() - start, time.process_time() - cpu))
        seconds, cpu = sorted(runs)[len(runs) // 2]
    assert out.shape == (1, 3, hr_side, hr_side) and bool(torch.isfinite(out).all())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_mb": peak, "baseline_mb": baseline}


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"load average {load}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk-size", default="auto", help="auto (default), none or an int")
    parser.add_argument("--only", type=int, nargs="*", help="case indices to run (default: all)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)  # child process: run one case
    args = parser.parse_args()
    tune_cpu_allocator()  # as `neurop-diff` does (NEUROP_DIFF_MALLOC=default: glibc as it is)
    if args.case is not None:
        lr_side, hr_side, _, _ = CASES[args.case]
        print(json.dumps(run_case(lr_side, hr_side, args.chunk_size, args.threads)))
        return
    print(f"machine: {machine()}; chunk_size={args.chunk_size}, threads={args.threads or 'default'}\n")
    print("| case | time s | CPU s | peak RSS MB (baseline) | target | pass |")
    print("| --- | --- | --- | --- | --- | --- |")
    for i, (lr_side, hr_side, max_s, max_mb) in enumerate(CASES):
        if args.only is not None and i not in args.only:
            continue
        cmd = [sys.executable, __file__, "--case", str(i), "--chunk-size", args.chunk_size]
        cmd += ["--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        case = f"{lr_side}^2 -> {hr_side}^2 (x4)"
        if proc.returncode != 0:
            print(f"| {case} | failed | | | | no ({proc.stderr.strip().splitlines()[-1:]}) |")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        target = f"< {max_s:g} s" if max_s else f"< {max_mb / 1024:g} GB"
        ok = r["seconds"] < max_s if max_s else r["peak_mb"] < max_mb
        print(
            f"| {case} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | {r['peak_mb']:.0f} ({r['baseline_mb']:.0f}) "
            f"| {target} | {'yes' if ok else 'no'} |"
        )
    print(f"\nafter: load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
