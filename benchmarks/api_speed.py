"""The Python API against the command: one 64^2 -> 256^2 x4 DDIM-20 upscale through `upscale_tensor`.

    python benchmarks/api_speed.py [--steps 20] [--repeat 3] [--rounds 2] [--threads 2]

`neurop-diff` tunes glibc's allocator at start-up (`neurop_diff.runtime.tune_cpu_allocator`); a Python caller
gets the same tuning from `load_model`'s first CPU load. This measures what a Python user sees: a fresh process
imports `neurop_diff.inference`, loads a default-size NeurOp-Diff checkpoint (authors' UNet 47.5M, SRNO 2.0M,
random weights: speed does not depend on them) and calls `upscale_tensor` once to warm up, then `--repeat` times;
once as shipped (`tuned`) and once with ``NEUROP_DIFF_MALLOC=default`` (`untuned`: glibc as is, what the API did
before). The two kinds of process alternate `--rounds` times so the machine's drift falls on both.
Target: the API's time equals the command's (the tuned figure), i.e. untuned / tuned >= 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[3]))
from neurop_diff.inference import load_model, upscale_tensor
from neurop_diff.runtime import tune_cpu_allocator
model = load_model(sys.argv[1], device="cpu")
lr = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
times = []
for i in range(int(sys.argv[2]) + 1):  # the first call warms up
    start = time.perf_counter()
    upscale_tensor(lr, (256, 256), model, "diffusion", steps=int(sys.argv[4]), sampler="ddim")
    times.append(time.perf_counter() - start)
print(json.dumps({"tuned": tune_cpu_allocator(), "times": times[1:]}))
"""


def make_checkpoint(path: Path) -> Path:
    """A default-size NeurOp-Diff checkpoint in Lightning's format (random weights)."""
    import torch

    from neurop_diff.lit.authors import lightning_checkpoint
    from neurop_diff.lit.diffusion import DiffusionModule

    torch.manual_seed(0)
    torch.save(lightning_checkpoint(DiffusionModule(operator_args={})), path)  # the default SRNO, untrained
    return path


def run_child(ckpt: Path, args: argparse.Namespace, tuned: bool) -> dict:
    env = dict(os.environ)
    env.pop("NEUROP_DIFF_MALLOC", None)
    if not tuned:
        env["NEUROP_DIFF_MALLOC"] = "default"
    cmd = [sys.executable, "-c", CHILD, str(ckpt), str(args.repeat), str(args.threads), str(args.steps)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if result["tuned"] != tuned:
        raise SystemExit(f"the child's allocator state is {result['tuned']}, expected {tuned}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per process (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="tuned/untuned process pairs, alternating")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"tuned": [], "untuned": []}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(Path(tmp) / "neuropdiff.ckpt")
        for r in range(args.rounds):
            for name in ("untuned", "tuned") if r % 2 == 0 else ("tuned", "untuned"):
                t = run_child(ckpt, args, tuned=name == "tuned")["times"]
                times[name] += t
                print(f"round {r + 1} {name}: " + " ".join(f"{x:.2f}" for x in t), flush=True)
    load = os.getloadavg()[0]
    print(f"\n{args.threads} threads, DDIM {args.steps}, 64^2 -> 256^2 (one tile), load average {load:.2f}")
    print("| allocator | median s | min s | max s | calls |\n| --- | ---: | ---: | ---: | ---: |")
    for name, t in times.items():
        label = "glibc as is (`NEUROP_DIFF_MALLOC=default`)" if name == "untuned" else "tuned on first load"
        print(f"| {label} | {statistics.median(t):.2f} | {min(t):.2f} | {max(t):.2f} | {len(t)} |")
    ratio = statistics.median(times["untuned"]) / statistics.median(times["tuned"])
    print(f"untuned / tuned: {ratio:.2f}x")


if __name__ == "__main__":
    main()
