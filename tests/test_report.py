"""Pure result tables, figure and image grids from plain rows and uint8 images."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from neurop_diff.evaluation.report import (
    console_table,
    is_ood,
    make_grid,
    metrics_markdown,
    plot_metrics_vs_scale,
    summarize,
    to_uint8,
    write_metrics_csv,
    write_per_image_csv,
    zoom_box,
)

METHODS = ["bicubic", "operator", "diffusion"]


def rows(with_lpips: bool = True) -> list[dict]:
    out = []
    for scale in (4.0, 2.0, 9.0):
        for k, method in enumerate(["diffusion", "bicubic", "operator"]):
            for i, name in enumerate(["x/a", "x/b"]):
                out.append(
                    {
                        "stage": "test",
                        "method": method,
                        "scale": scale,
                        "name": name,
                        "psnr": 40 - scale - k + i,  # mean over the two images: 40.5 - scale - k
                        "ssim": 0.9 - 0.01 * scale,
                        "lpips": 0.01 * scale + 0.1 * i if with_lpips else None,
                    }
                )
    return out


def test_summarize_means_order_and_ood():
    summary = summarize(rows(), METHODS, scale_max=8.0)
    assert [(r["scale"], r["method"]) for r in summary] == [(s, m) for s in (2.0, 4.0, 9.0) for m in METHODS]
    r = next(r for r in summary if r["scale"] == 4.0 and r["method"] == "bicubic")  # k = 1
    assert r["psnr"] == pytest.approx(35.5)
    assert r["ssim"] == pytest.approx(0.86)
    assert r["lpips"] == pytest.approx(0.09)
    assert r["n_images"] == 2
    assert [r["ood"] for r in summary if r["method"] == "operator"] == [False, False, True]
    assert all(r["lpips"] is None for r in summarize(rows(False), METHODS))
    assert not any(r["ood"] for r in summarize(rows(), METHODS, scale_max=None))


def test_is_ood():
    assert not is_ood(4.0, 4.0) and not is_ood(4.0000001, 4.0) and is_ood(4.01, 4.0) and not is_ood(12, None)


def read(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_files_with_and_without_lpips(tmp_path):
    summary = summarize(rows(), METHODS, 8.0)
    table = read(write_metrics_csv(tmp_path / "a" / "metrics.csv", summary, "RGB, ...", has_lpips=True))
    assert list(table[0]) == ["method", "scale", "ood", "psnr", "ssim", "lpips", "n_images", "convention"]
    assert table[0]["scale"] == "2" and table[-1]["ood"] == "True" and table[0]["convention"] == "RGB, ..."
    assert float(table[1]["psnr"]) == pytest.approx(40.5 - 2 - 2)  # operator, k = 2
    plain = read(write_metrics_csv(tmp_path / "m.csv", summarize(rows(False), METHODS), "Y", has_lpips=False))
    assert "lpips" not in plain[0] and all(v not in ("", "nan", "None") for r in plain for v in r.values())
    per = read(write_per_image_csv(tmp_path / "p.csv", rows(False), has_lpips=False))
    assert len(per) == 18 and list(per[0]) == ["stage", "method", "scale", "name", "psnr", "ssim"]


def test_markdown_and_console_tables():
    summary = summarize(rows(), METHODS, 8.0)
    md = metrics_markdown(summary, "Y (BT.601), border crop ceil(scale) px", "test results", "alex")
    lines = md.splitlines()
    assert lines[0] == "# test results" and "Y (BT.601)" in lines[2]
    assert "| diffusion | x9 | OOD | 31.50 | 0.8100 | 0.1400 | 2 |" in lines
    assert "| bicubic | x2 |  | 37.50 | 0.8800 | 0.0700 | 2 |" in lines
    text = console_table(summarize(rows(False), METHODS, 8.0), METHODS)
    out = text.splitlines()
    assert out[0].split("|")[1].strip() == "bicubic" and out[0].split("|")[3].strip() == "diffusion"
    x9 = next(line for line in out if line.startswith("x9"))
    assert "OOD" in x9 and x9.count("n/a") == 3 and "31.50" in x9
    assert len({len(line.rstrip()) for line in out[1:]}) <= 2  # columns line up


def test_figure_is_written(tmp_path):
    path = plot_metrics_vs_scale(
        summarize(rows(), METHODS, 8.0), METHODS, tmp_path / "f" / "fig.png", 8.0, "t"
    )
    img = Image.open(path)
    assert img.size == (1300, 380)
    assert np.asarray(img.convert("L")).std() > 10  # something was drawn


def test_zoom_box_and_uint8():
    assert zoom_box(256, 256, 0.25) == (96, 96, 160, 160)
    assert zoom_box(10, 20, 0.01) == (9, 4, 10, 5)
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 4).expand(3, 1, 4)
    assert to_uint8(x)[0, 0].tolist() == [0, 128, 255, 255]


def test_grid_layout_and_content():
    g = torch.Generator().manual_seed(0)
    hr = torch.randint(0, 256, (3, 160, 160), generator=g, dtype=torch.uint8)
    lr = hr[:, ::4, ::4].contiguous()
    items = [("a", {"lr": lr, "hr": hr, "sr": hr.flip(-1)}), ("b", {"lr": lr, "hr": hr, "sr": hr})]
    grid = np.asarray(make_grid(items, ["lr", "sr", "hr"], zoom=0.25))
    assert grid.shape == (14 + 2 * (14 + 2 * 160 + 4), 3 * 164 + 4, 3)
    top = 14 + 14
    lr_panel = grid[top : top + 160, 4 : 4 + 160]
    assert np.array_equal(
        lr_panel[::4, ::4][:9, :9], lr.permute(1, 2, 0).numpy()[:9, :9]
    )  # nearest upsampling
    box = zoom_box(160, 160, 0.25)
    zoomed = grid[top + 160 : top + 320 : 4, 4 + 2 * 164 : 4 + 2 * 164 + 160 : 4]
    assert np.array_equal(zoomed, hr[:, box[1] : box[3], box[0] : box[2]].permute(1, 2, 0).numpy())
    red = grid[top + box[1], 4 + 164 + box[0] + 5]
    assert red.tolist() == [255, 0, 0]
    small = make_grid([("s", {"lr": lr[:, :8, :8], "hr": hr[:, :32, :32]})], ["lr", "hr"], 0.5, "title")
    assert small.size == (2 * (128 + 4) + 4, 28 + 14 + 2 * 128 + 4)  # 32 px shown 4x
