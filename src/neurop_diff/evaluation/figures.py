"""Results a person looks at: the metrics-vs-scale and perception-distortion figures, image grids with zoomed
insets. Pure functions of the summary rows of ``evaluation/report.py`` and of images; no Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torch import Tensor

from neurop_diff.evaluation.convention import format_scale
from neurop_diff.evaluation.report import LABELS, METRICS, has_detail


def plot_metrics_vs_scale(
    summary: Sequence[dict], methods: Sequence[str], path: Path, scale_max: float | None, title: str = ""
) -> Path:
    """Figure with PSNR, SSIM, LPIPS (and the HF energy share, HR dashed) against scale, one line per
    method, OOD scales shaded."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    scales = sorted({r["scale"] for r in summary})
    panels = (*METRICS, "hf_share") if has_detail(summary) else METRICS
    fig, axes = plt.subplots(1, len(panels), figsize=(13 * len(panels) / 3, 3.8))
    for ax, metric in zip(axes, panels, strict=True):
        lines = [(m, metric, m, "-") for m in methods]
        if metric == "hf_share":  # HR's share: the level a method restoring texture moves toward
            lines.append((methods[-1], "hf_share_hr", "HR", "--"))
        for method, key, label, style in lines:
            pts = [
                (r["scale"], r.get(key)) for r in summary if r["method"] == method and r.get(key) is not None
            ]
            pts = [(s, v) for s, v in pts if math.isfinite(v)]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o", linestyle=style, label=label)
        if not ax.lines:
            ax.text(0.5, 0.5, f"{LABELS[metric]} n/a", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        if scale_max is not None and scales and scales[-1] > scale_max + 1e-6:
            ax.axvspan(scale_max, scales[-1] + 0.5, color="0.85", zorder=0, label="OOD")
        ax.set_xlabel("scale (HR/LR)")
        ax.set_ylabel(LABELS[metric])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if panels[-1] == "hf_share" and axes[-1].lines:
        axes[-1].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save_figure(fig, path)


def plot_perception_distortion(
    summary: Sequence[dict], methods: Sequence[str], path: Path, title: str = ""
) -> Path | None:
    """The perception-distortion plane (Blau & Michaeli 2018): x = SWD-l0 (x1e3, lower = closer to HR's
    patch statistics), y = PSNR (dB); one point per method and scale, labelled with the scale, one colour per
    method, a method's scales joined in scale order. None (nothing written) when no row has SWD-l0."""
    pts = [r for r in summary if r.get("swd_l0") is not None and math.isfinite(r["swd_l0"])]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    order = [*methods, *sorted({r["method"] for r in pts} - set(methods))]
    for i, method in enumerate(order):
        mine = sorted((r for r in pts if r["method"] == method), key=lambda r: r["scale"])
        if not mine:
            continue
        xs, ys = [r["swd_l0"] for r in mine], [r["psnr"] for r in mine]
        colour = colours[i % len(colours)]
        ax.plot(xs, ys, marker="o", linestyle=":", color=colour, label=method)
        for r in mine:
            text = f"x{format_scale(r['scale'])}" + (" OOD" if r.get("ood") else "")
            ax.annotate(text, (r["swd_l0"], r["psnr"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("SWD l0 (x1e3, lower = more HR-like detail)")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    return _save_figure(fig, path)


def _save_figure(fig, path: Path) -> Path:
    """Lays out, writes (creating the folder) and closes a matplotlib figure; returns its path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def to_uint8(x: Tensor) -> Tensor:
    """Image `(3, H, W)` in [-1, 1] -> uint8 `(3, H, W)` on the CPU (the 8-bit image a PNG would hold)."""
    return torch.round(((x.detach().float() + 1) / 2).clamp(0, 1) * 255).to(torch.uint8).cpu()


def _pil(x: Tensor) -> Image.Image:
    return Image.fromarray(x.permute(1, 2, 0).numpy())


def zoom_box(height: int, width: int, zoom: float) -> tuple[int, int, int, int]:
    """Centre box (left, top, right, bottom) covering `zoom` of each side, at least 1 pixel."""
    ch, cw = max(1, round(height * zoom)), max(1, round(width * zoom))
    top, left = (height - ch) // 2, (width - cw) // 2
    return left, top, left + cw, top + ch


def make_grid(
    items: Sequence[tuple[str, dict[str, Tensor]]],
    columns: Sequence[str],
    zoom: float,
    title: str = "",
    min_panel: int = 128,
) -> Image.Image:
    """Image grid: one row per (name, images) item, one column per key of `columns`; uint8 `(3, H, W)` images.

    Column "lr" is nearest-upsampled to the HR size. Under each image its centre crop (`zoom` of the side,
    boxed in red above) is shown nearest-upscaled to the image size. Images smaller than `min_panel` pixels are
    enlarged by an integer factor (pixel replication) so labels stay readable. Returns a PIL RGB image.
    """
    label_h, pad = 14, 4
    rows, panel_widths = [], []
    for name, images in items:
        h, w = images["hr"].shape[-2:]
        k = max(1, math.ceil(min_panel / max(h, w)))
        ph, pw = h * k, w * k
        box = zoom_box(h, w, zoom)
        row = Image.new("RGB", (len(columns) * (pw + pad) + pad, label_h + 2 * ph + pad), "white")
        draw = ImageDraw.Draw(row)
        draw.text((pad, 1), name, fill="black")
        for j, col in enumerate(columns):
            img = _pil(images[col])
            if img.size != (w, h):
                img = img.resize((w, h), Image.NEAREST)
            crop = img.crop(box).resize((pw, ph), Image.NEAREST)
            x0 = pad + j * (pw + pad)
            row.paste(img.resize((pw, ph), Image.NEAREST), (x0, label_h))
            row.paste(crop, (x0, label_h + ph))
            draw.rectangle(
                (x0 + box[0] * k, label_h + box[1] * k, x0 + box[2] * k - 1, label_h + box[3] * k - 1),
                outline="red",
            )
        rows.append(row)
        panel_widths.append(pw)
    if not rows:
        return Image.new("RGB", (1, 1), "white")
    width = max(r.width for r in rows)
    # Column labels once at the top, at the first row's column positions.
    header = Image.new("RGB", (width, 2 * label_h if title else label_h), "white")
    draw = ImageDraw.Draw(header)
    if title:
        draw.text((pad, 1), title, fill="black")
    for j, col in enumerate(columns):
        label = "LR (nearest)" if col == "lr" else "HR" if col == "hr" else col
        draw.text((pad + j * (panel_widths[0] + pad), header.height - label_h + 1), label, fill="black")
    canvas = Image.new("RGB", (width, header.height + sum(r.height for r in rows)), "white")
    canvas.paste(header, (0, 0))
    y = header.height
    for r in rows:
        canvas.paste(r, (0, y))
        y += r.height
    return canvas
