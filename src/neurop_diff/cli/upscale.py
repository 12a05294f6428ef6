"""`neurop-diff upscale`: upscale image files (PNG, JPEG, TIFF, GeoTIFF) with a trained checkpoint."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tqdm import tqdm

from neurop_diff.evaluation.convention import format_scale
from neurop_diff.inference.io import IMAGE_SUFFIXES, expand_inputs, is_geotiff
from neurop_diff.inference.uncertainty import STD_MAX, check_samples, std_paths

__all__ = ["build_parser", "output_name", "upscale_main"]

EXAMPLES = """examples:
  neurop-diff upscale scene.png --checkpoint diffusion.ckpt --scale 3.7 --out out/
  neurop-diff upscale 'images/*.jpg' tiles/ --checkpoint operator.ckpt --size 1024 1024 --out out/
  neurop-diff upscale s2.tif --checkpoint diffusion.ckpt --scale 4 --bands 4,3,2 --tile 256 --out out/
  # mean of 8 samples + their per-pixel std (scene_x4_std.png / .npy; a GeoTIFF gets scene_x4_std.tif)
  neurop-diff upscale scene.png --checkpoint diffusion.ckpt --scale 4 --samples 8 --out out/
"""


def _bands(text: str) -> tuple[int, ...]:
    try:
        bands = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--bands expects 1-based band numbers like 4,3,2, got {text!r}"
        ) from None
    if len(bands) not in (1, 3):
        raise argparse.ArgumentTypeError(f"--bands takes three bands (R,G,B) or one (grey), got {text!r}")
    return bands


def _samples(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--samples must be an integer >= 1, got {text!r}")
    return value


def _std_max(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"--std-max must be a number > 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neurop-diff upscale",
        description=(
            "Upscale images by any real scale >= 1 with a NeurOp-Diff (diffusion) or SRNO (operator) checkpoint. "
            f"Inputs: files, folders (their {', '.join(IMAGE_SUFFIXES)} files) and glob patterns. Writes "
            "<stem>_x<scale>.<ext> (or <stem>_<H>x<W>.<ext> with --size) into --out, in the input's format; "
            "a GeoTIFF stays a GeoTIFF (CRS and bounds kept, pixel size divided by the scale, nodata kept)."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    parser.add_argument(
        "--checkpoint", required=True, type=Path, help="OperatorModule or DiffusionModule .ckpt"
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--scale", type=float, help="upscaling factor (any real >= 1, e.g. 3.7)")
    target.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="output size in pixels")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created)")
    parser.add_argument(
        "--stage", choices=("diffusion", "operator"), help="default: the checkpoint's own stage"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="sampling steps (diffusion; default: the checkpoint's)"
    )
    parser.add_argument(
        "--sampler",
        choices=("ddim", "ddpm", "euler", "heun", "dpmpp_2m"),
        default=None,
        help="sampler (diffusion; default: the checkpoint's)",
    )
    parser.add_argument("--seed", type=int, default=0, help="noise seed (diffusion; default 0)")
    parser.add_argument(
        "--samples",
        type=_samples,
        default=1,
        metavar="K",
        help="diffusion samples (seeds seed..seed+K-1, K x the time): K > 1 writes their per-pixel mean as the "
        "image and their per-pixel std beside it, <name>_std.png (colour map) + .npy, or <name>_std.tif for a "
        "GeoTIFF (default 1; e.g. 8)",
    )
    parser.add_argument(
        "--std-max",
        type=_std_max,
        default=STD_MAX,
        help=f"top of the std colour scale in [0, 1] image units (default {STD_MAX:g}; brighter = more spread)",
    )
    parser.add_argument(
        "--tile", type=int, help="diffusion tile size in HR pixels (default: the UNet's training size)"
    )
    parser.add_argument("--overlap", type=int, help="diffusion tile overlap in HR pixels (default: tile / 4)")
    parser.add_argument("--tile-batch", type=int, default=4, help="tiles per UNet call (default 4)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, MPS, else CPU), cpu, cuda, cuda:1...")
    parser.add_argument(
        "--bands",
        type=_bands,
        help="1-based bands to use as R,G,B (e.g. 4,3,2) or one band as grey; default: 1 band -> grey, "
        "3 -> 1,2,3, more -> the first three (with a warning)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def output_name(src: Path, scale: float | None, size: tuple[int, int] | None) -> str:
    """``<stem>_x<scale><suffix>`` (scale written as in metric keys: 4.0 -> "4", 3.7 -> "3.7"), or
    ``<stem>_<H>x<W><suffix>`` for a size."""
    tag = f"x{format_scale(scale)}" if scale is not None else f"{size[0]}x{size[1]}"
    return f"{src.stem}_{tag}{src.suffix}"


def _check_out(parser: argparse.ArgumentParser, out: Path) -> None:
    """Exits with one line when ``--out`` cannot be the output folder (a file, or not writable)."""
    if out.exists() and not out.is_dir():
        parser.exit(2, f"neurop-diff upscale: error: --out {out} is an existing file; --out is a folder\n")
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        parser.exit(2, f"neurop-diff upscale: error: --out {out}: {existing} is a file, not a folder\n")
    if not os.access(existing, os.W_OK | os.X_OK):
        parser.exit(2, f"neurop-diff upscale: error: --out {out}: {existing} is not writable\n")


def upscale_main(argv: list[str]) -> None:
    """Entry point of `neurop-diff upscale` (``argv`` without the subcommand)."""
    from neurop_diff.inference.memory import MemoryCheckError
    from neurop_diff.inference.upscale import load_model, resolve_device, upscale_file

    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.scale is not None and not ns.scale >= 1:
        parser.error(f"--scale must be >= 1, got {ns.scale}")
    size = tuple(ns.size) if ns.size else None
    try:
        files = expand_inputs(ns.inputs)
    except FileNotFoundError as err:
        parser.error(str(err))
    _check_out(parser, ns.out)
    try:
        resolve_device(ns.device)  # an unknown or absent device: say so before reading anything
    except ValueError as err:
        parser.exit(2, f"neurop-diff upscale: error: --device: {err}\n")
    targets: dict[Path, Path] = {}
    written: dict[Path, Path] = {}  # every file to write (with the std maps) -> its input
    for f in files:
        dst = ns.out / output_name(f, ns.scale, size)
        for path in (dst, *(std_paths(dst, is_geotiff(f)) if ns.samples > 1 else ())):
            if path in written:
                parser.error(
                    f"{f} and {written[path]} would both be written to {path}: upscale them into different "
                    "--out folders"
                )
            if path.exists() and not ns.overwrite:
                parser.error(f"{path} exists (pass --overwrite to replace it)")
            written[path] = f
        targets[f] = dst
    try:
        model = load_model(ns.checkpoint, ns.device)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"neurop-diff upscale: error: {err}\n")
    try:
        check_samples(ns.samples, ns.stage or model.stage, str(ns.checkpoint))
    except ValueError as err:
        parser.exit(2, f"neurop-diff upscale: error: --samples {ns.samples}: {err}\n")
    ns.out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(targets.items(), desc="images", unit="img", disable=ns.no_progress or len(targets) < 2)
    for src, dst in bar:
        bar.set_postfix_str(src.name)
        notes: list[str] = []  # the std map's summary, said after the mean image's line
        try:
            upscale_file(
                src, dst, ns.scale, size, checkpoint=model, bands=ns.bands, device=model.device, stage=ns.stage,
                steps=ns.steps, sampler=ns.sampler, seed=ns.seed, tile=ns.tile, overlap=ns.overlap, tile_batch=ns.tile_batch,
                progress=not ns.no_progress, samples=ns.samples, std_max=ns.std_max, report=notes.append,
            )  # fmt: skip
        except (ImportError, OSError, ValueError, MemoryCheckError) as err:
            # Bad input (a GeoTIFF without rasterio, wrong bands, an unreadable file): say which, no traceback.
            parser.exit(2, f"neurop-diff upscale: error: {src}: {err}\n")
        tqdm.write(f"wrote {dst}" + (f" (mean of {ns.samples} samples)" if ns.samples > 1 else ""))
        for note in notes:
            tqdm.write(note)
