"""GPU readiness in one table: mixed-precision fit steps, DDP, sampling and training throughput, torch.compile.

    python benchmarks/gpu.py                 # on a CUDA machine: the default (authors') UNet at 256 px
    python benchmarks/gpu.py --tiny          # anywhere (the test suite runs this on the CPU so it never rots)

Rows: `fit` with each precision (`32-true`, `16-mixed`, `bf16-mixed`) through the real CLI path (a Lightning
Trainer on `SRDataModule` over generated PNGs; DDP over every visible GPU when there are several); sampling T
steps per image at several batch sizes (DDIM through `NeurOpDiff.sample`, under autocast, channels_last);
training images/s at batch 10 (the paper's); optionally the same with `torch.compile`. Targets (issue 13): T = 50
under 0.3 s per image at batch 1 (paper: 1.52 s on an RTX 4090).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from neurop_diff.cli import main as neurop_diff
from neurop_diff.diffusion.schedule import make_schedule, sample_levels
from neurop_diff.models.neuropdiff import NeurOpDiff
from neurop_diff.models.srno import SRNO
from neurop_diff.models.unet import UNet

TINY = {
    "base_channels": 8,
    "channel_mults": (1, 2),
    "attn_resolutions": (),
    "image_size": 32,
    "norm_groups": 4,
}
TINY_OP = {"encoder_blocks": 1, "encoder_width": 8, "width": 16, "blocks": 1, "heads": 2, "head_width": 16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _images(folder: Path, n: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(
                folder / c / f"{i}.png"
            )
    return folder


def fit_rows(args: argparse.Namespace, device: torch.device, tmp: Path) -> list[str]:
    size = 32 if args.tiny else 256
    root = _images(tmp / "data", 5, size)
    op_args = TINY_OP if args.tiny else {}
    unet = {**TINY} if args.tiny else {}
    rows = []
    for precision in args.precisions:
        cli = [
            "fit", "--config", str(Path(__file__).resolve().parents[1] / "configs/diffusion_small.yaml"),
            "--data.init_args.dataset=folder", f"--data.init_args.root={root}", f"--data.init_args.hr_size={size}",
            "--data.init_args.batch_size=2", "--data.init_args.max_eval_images=2", "--data.init_args.val_scales=[2]",
            "--data.init_args.test_scales=[2]", "--data.init_args.scale_max=4",
            "--model.init_args.operator_ckpt=null", "--model.init_args.condition=bicubic",
            f"--model.init_args.image_size={size}", "--model.init_args.sampling_steps=2",
            f"--trainer.accelerator={'cuda' if device.type == 'cuda' else 'cpu'}",
            f"--trainer.devices={max(torch.cuda.device_count(), 1) if device.type == 'cuda' else 1}",
            f"--trainer.precision={precision}", f"--trainer.max_steps={args.fit_steps}",
            f"--trainer.val_check_interval={args.fit_steps}", "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={tmp / 'runs'}", f"--trainer.default_root_dir={tmp / 'runs'}",
        ]  # fmt: skip
        for key, value in {**unet, **op_args}.items():
            if key in TINY:
                cli.append(f"--model.init_args.{key}={list(value) if isinstance(value, tuple) else value}")
        start = time.perf_counter()
        try:
            neurop_diff(cli)
            status = "ok"
        except Exception as err:  # report and go on: one unsupported precision must not hide the others
            status = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:80]}"
        rows.append(
            f"| fit {args.fit_steps} steps | {precision} | | {time.perf_counter() - start:.1f} s | {status} |"
        )
    return rows


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast(
            "cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        )
    return contextlib.nullcontext()


def speed_rows(args: argparse.Namespace, device: torch.device, compiled: bool) -> list[str]:
    torch.manual_seed(0)
    size = 32 if args.tiny else 256
    unet = UNet(in_channels=6, **(TINY if args.tiny else {}), channels_last=True).to(device)
    model = NeurOpDiff(unet, make_schedule(), SRNO(**(TINY_OP if args.tiny else {})).to(device)).to(device)
    if compiled:
        model.unet = torch.compile(model.unet)
    rows, tag = [], " + compile" if compiled else ""
    model.eval()
    for batch in args.sample_batches:
        lr = torch.rand(batch, 3, size // 4, size // 4, device=device) * 2 - 1
        with torch.inference_mode(), _autocast(device):
            model.sample(lr, (size, size), steps=2)  # warm-up
            _sync(device)
            start = time.perf_counter()
            model.sample(lr, (size, size), steps=args.steps)
            _sync(device)
        per = (time.perf_counter() - start) / batch
        rows.append(f"| sample T={args.steps}{tag} | autocast | {batch} | {per:.3f} s/img | |")
    model.train()
    opt = torch.optim.Adam(model.unet.parameters(), lr=1e-4)
    b = args.train_batch
    hr = torch.rand(b, 3, size, size, device=device) * 2 - 1
    lr = torch.nn.functional.interpolate(hr, size=(size // 4, size // 4), mode="bicubic", antialias=True)
    cond, _ = model.condition(lr, (size, size), with_prior=False)
    times = []
    for _ in range(args.train_iters + 1):
        _sync(device)
        start = time.perf_counter()
        with _autocast(device):
            gamma = sample_levels(model.schedule, b, device=device)
            loss = model.training_loss(hr, cond, gamma, torch.randn_like(hr))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter() - start)
    rows.append(f"| train{tag} | autocast | {b} | {b / min(times[1:]):.2f} img/s | |")
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny models at 32 px: a CPU smoke run")
    parser.add_argument("--precisions", nargs="+", default=["32-true", "16-mixed", "bf16-mixed"])
    parser.add_argument("--fit-steps", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--sample-batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--train-batch", type=int, default=10)
    parser.add_argument("--train-iters", type=int, default=5)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    lines = [f"Device: {name} x{max(torch.cuda.device_count(), 1)}, torch {torch.__version__}",
             "| what | precision | batch | time | status |", "| --- | --- | ---: | ---: | --- |"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        lines += fit_rows(args, device, Path(tmp))
    lines += speed_rows(args, device, compiled=False)
    if args.compile:
        lines += speed_rows(args, device, compiled=True)
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
