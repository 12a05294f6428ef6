"""Large-scene inference: time and peak memory of `upscale` on big inputs (random weights, default sizes).

Cases (each runs in a fresh subprocess, so peak RSS is its own):

- ``operator``: a 1024 x 1024 LR at x4 (4096 x 4096 output) with the default SRNO (~2.0M parameters),
  exact chunked evaluation over the whole scene (``--chunk`` points per chunk).
- ``diffusion``: a 512 x 512 LR at x4 (2048 x 2048 output) with the default NeurOp-Diff UNet (~47.5M
  parameters, ``--unet small`` for a 4x narrower one), ``--steps`` DDIM steps on 256-px tiles overlapping by
  64 px, the operator prior computed once for the whole scene.

Usage: ``python benchmarks/large_scene.py [--cases operator diffusion] [--steps 2] [--out table.md]``;
``--sizes 128 256`` runs every case at these LR sides instead and reports the slope of peak RSS per output
pixel between the two (bounded memory would show a slope near 0; neurop_diff.inference.memory uses it).
The LR is a real image from ../shared/data (NEUROP_DIFF_DATA) resized to the LR size, else random.
Prints a markdown table: wall time, the stage split, peak RSS, and the RSS before inference (model + input).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from neurop_diff.runtime import tune_cpu_allocator

REPO = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def _lr_image(size: int):
    import numpy as np
    from PIL import Image

    data = Path(os.environ.get("NEUROP_DIFF_DATA", REPO.parent / "shared" / "data"))
    candidates = sorted(data.glob("aid/*/*.png"))
    if candidates:
        return np.asarray(Image.open(candidates[0]).convert("RGB").resize((size, size), Image.BICUBIC))
    return np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)


def run_case(case: str, lr_size: int, steps: int, unet: str, chunk: int, tile_batch: int) -> dict:
    import torch

    from neurop_diff.diffusion.tiling import plan_tiles
    from neurop_diff.inference import load_model
    from neurop_diff.inference.upscale import upscale_tensor
    from neurop_diff.lit.diffusion import DiffusionModule
    from neurop_diff.models.srno import SRNO

    torch.manual_seed(0)
    img = _lr_image(lr_size)
    lr = torch.from_numpy(img.astype("float32") / 255).permute(2, 0, 1)[None] * 2 - 1
    size = (4 * lr_size, 4 * lr_size)
    result = {"case": case, "lr": lr_size, "out": size[0], "threads": torch.get_num_threads()}
    if case == "operator":
        model = dataclasses.replace(load_model(SRNO().eval(), "cpu"), chunk_size=chunk)
        result["params_m"] = sum(p.numel() for p in model.operator.parameters()) / 1e6
        result["rss_before_mb"] = _rss_mb()
        t0 = time.perf_counter()
        out = upscale_tensor(lr, size, model, stage="operator")
        result["time_s"] = time.perf_counter() - t0
        result["detail"] = f"chunk {chunk} points, {result['time_s'] / (size[0] * size[1] / 1e6):.1f} s/Mpx"
    else:
        module = DiffusionModule(operator_args={}, base_channels={"default": 64, "small": 16}[unet])
        model = load_model(module.eval(), "cpu")
        result["params_m"] = sum(p.numel() for p in module.unet.parameters()) / 1e6
        result["rss_before_mb"] = _rss_mb()
        prior_time = []
        condition = module.model.condition  # what NeurOpDiff.sample (upscale's path) calls

        def timed_condition(*args, **kwargs):  # split the prior's time from the sampling's
            t = time.perf_counter()
            out = condition(*args, **kwargs)
            prior_time.append(time.perf_counter() - t)
            return out

        module.model.condition = timed_condition
        t0 = time.perf_counter()
        out = upscale_tensor(lr, size, model, steps=steps, tile_batch=tile_batch)
        result["time_s"] = time.perf_counter() - t0
        t_prior = prior_time[0]
        n_tiles = len(plan_tiles(size, 256, 64, module.unet.factor)[1])
        per_tile = (result["time_s"] - t_prior) / (steps * n_tiles)
        # The same denoiser on one untiled 256^2 canvas (best of 3): what a tile costs without tiling.
        x, gamma = torch.randn(1, 3, 256, 256), torch.full((1,), 1.0, dtype=torch.float64)  # VE sigma
        cond = torch.randn(1, module.unet.in_channels - 3, 256, 256)
        untiled = []
        with torch.inference_mode():
            for _ in range(3):
                t = time.perf_counter()
                module.model.denoised(x, gamma, cond)
                untiled.append(time.perf_counter() - t)
        overlap_share = n_tiles * 256**2 / (size[0] * size[1]) - 1
        result["detail"] = (
            f"{steps} steps x {n_tiles} tiles of 256 (overlap 64, {overlap_share:.0%} extra pixels); prior "
            f"{t_prior:.0f} s, UNet {per_tile:.2f} s/tile vs {min(untiled):.2f} s untiled 256^2 "
            f"({per_tile / min(untiled) - 1:+.0%})"
        )
    if tuple(out.shape[-2:]) != size or not torch.isfinite(out).all():
        raise RuntimeError(f"{case}: bad output {tuple(out.shape)}")
    result["peak_rss_mb"] = _rss_mb()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cases", nargs="+", default=["operator", "diffusion"], choices=["operator", "diffusion"]
    )
    parser.add_argument("--lr-operator", type=int, default=1024, help="LR side of the operator case")
    parser.add_argument("--lr-diffusion", type=int, default=512, help="LR side of the diffusion case")
    parser.add_argument("--steps", type=int, default=2, help="DDIM steps of the diffusion case")
    parser.add_argument("--unet", choices=["default", "small"], default="default")
    parser.add_argument("--chunk", type=int, default=65536, help="operator query points per chunk")
    parser.add_argument("--tile-batch", type=int, default=4)
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--sizes", type=int, nargs="+", help="LR sides to run every case at (e.g. 128 256)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    ns = parser.parse_args(argv)
    tune_cpu_allocator()  # as `neurop-diff` does (NEUROP_DIFF_MALLOC=default: glibc as it is)
    if ns.case:
        lr_size = ns.lr_operator if ns.case == "operator" else ns.lr_diffusion
        print(json.dumps(run_case(ns.case, lr_size, ns.steps, ns.unet, ns.chunk, ns.tile_batch)))
        return
    rows = []
    runs = (
        [(c, n, n) for c in ns.cases for n in ns.sizes]
        if ns.sizes
        else [(c, ns.lr_operator, ns.lr_diffusion) for c in ns.cases]
    )
    for case, lr_op, lr_diff in runs:
        cmd = [sys.executable, __file__, "--case", case, "--steps", str(ns.steps), "--unet", ns.unet,
               "--chunk", str(ns.chunk), "--tile-batch", str(ns.tile_batch), "--lr-operator",
               str(lr_op), "--lr-diffusion", str(lr_diff)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            sys.exit(f"{case} failed:\n{proc.stderr[-4000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # each case as soon as it is done
    cpu = platform.processor() or platform.machine()
    lines = [
        f"Large-scene inference on CPU ({cpu}, {rows[0]['threads']} threads, torch "
        f"{__import__('torch').__version__}), random weights:",
        "",
        "| case | LR -> output | model (M params) | time (s) | detail | RSS before (MiB) | peak RSS (MiB) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} x4 | {r['lr']}^2 -> {r['out']}^2 | {r['params_m']:.1f} | {r['time_s']:.1f} | "
            f"{r['detail']} | {r['rss_before_mb']:.0f} | {r['peak_rss_mb']:.0f} |"
        )
    for case in ns.cases if ns.sizes and len(ns.sizes) > 1 else []:
        mine = sorted((r for r in rows if r["case"] == case), key=lambda r: r["out"])
        a, b = mine[0], mine[-1]
        slope = (b["peak_rss_mb"] - a["peak_rss_mb"]) * 2**20 / max(b["out"] ** 2 - a["out"] ** 2, 1)
        lines.append(
            f"\n{case}: peak RSS grows by {slope:.0f} bytes per output pixel ({a['out']}^2 -> {b['out']}^2)"
        )
    table = "\n".join(lines)
    print(table)
    if ns.out:
        ns.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
