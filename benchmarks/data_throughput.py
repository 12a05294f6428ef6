"""Train-loader throughput of SRDataModule, including the per-batch degradation (on_after_batch_transfer).

Usage: python benchmarks/data_throughput.py [--root ../shared/data/rsscn7] [--batches 50] [--batch-size 16]
[--workers 2] [--device cpu]. Prints a markdown table (images/s, batches/s per mode) and the machine.
The one-off decode of the split (HR protocol) is timed separately; it is not part of the loader rate.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from neurop_diff.data.datamodule import SRDataModule

REPO = Path(__file__).resolve().parents[1]


def measure(dm: SRDataModule, batches: int, device: torch.device) -> tuple[float, float, tuple[int, ...]]:
    """Seconds for ``batches`` train batches (load + transfer + pairs) after one warm-up batch."""
    loader = iter(dm.train_dataloader())
    done, images, shape = 0, 0, ()
    start = None
    while done < batches + 1:
        try:
            batch = next(loader)
        except StopIteration:  # a small split: start another epoch
            loader = iter(dm.train_dataloader())
            continue
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        pair = dm.on_after_batch_transfer(batch, 0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if start is None:  # the first batch pays for worker start-up
            start = time.perf_counter()
        else:
            images += pair["hr"].shape[0]
            shape = tuple(pair["lr"].shape)
        done += 1
    return time.perf_counter() - start, images, shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "rsscn7"))
    parser.add_argument("--dataset", default="rsscn7", choices=["ucmerced", "aid", "rsscn7", "folder"])
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    rows = []
    decode_s = None
    datasets = None
    for mode in ("patch", "full"):
        dm = SRDataModule(dataset=args.dataset, root=args.root, mode=mode, batch_size=args.batch_size,
                          num_workers=args.workers, seed=0)  # fmt: skip
        if datasets is None:
            t0 = time.perf_counter()
            dm.setup("fit")
            decode_s = time.perf_counter() - t0
            datasets = dm.datasets
        dm.datasets = datasets
        seconds, images, shape = measure(dm, args.batches, device)
        rows.append((mode, images / seconds, args.batches / seconds, shape))

    n_train = len(datasets["train"])
    print(f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, device {device}, "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"Data: {args.dataset} at {args.root}; train {n_train} + val {len(datasets['val'])} images decoded "
          f"to 256x256 uint8 in {decode_s:.1f} s (once)")  # fmt: skip
    print(f"Train loader: batch {args.batch_size}, {args.workers} workers, {args.batches} batches after 1 warm-up, "
          "scale ~ U(1, 8) per batch, degradation included\n")  # fmt: skip
    print("| mode | images/s | batches/s | last LR batch shape |")
    print("| --- | ---: | ---: | --- |")
    for mode, ips, bps, shape in rows:
        print(f"| {mode} | {ips:.0f} | {bps:.1f} | {shape} |")


if __name__ == "__main__":
    main()
