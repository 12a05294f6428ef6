"""Pure result tables, figure and image grids from plain rows and uint8 images."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from neurop_diff.evaluation.figures import (
    make_grid,
    plot_metrics_vs_scale,
    plot_perception_distortion,
    to_uint8,
    zoom_box,
)
from neurop_diff.evaluation.report import (
    console_table,
    is_ood,
    metrics_markdown,
    summarize,
    write_metrics_csv,
    write_per_image_csv,
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


def realism_rows() -> tuple[list[dict], dict]:
    """rows() with per-image LR-PSNR and LSD-hi, a seed spread for diffusion only, and set-level SWD."""
    out = []
    for r in rows(False):
        k = METHODS.index(r["method"])
        extra = {"lr_psnr": 50.0 - k + (r["name"] == "x/b"), "lsd_hi": 1.0 + k}
        extra["seed_std"] = 0.02 if r["method"] == "diffusion" else None
        out.append({**r, **extra})
    sets = {(m, s): {"swd_l0": 100.0 * (3 - k) + s, "swd_l1": 10.0, "swd_l2": 1.0} for k, m in
            enumerate(METHODS) for s in (2.0, 4.0, 9.0)}  # fmt: skip
    return out, sets


def test_realism_columns_in_summary_files_and_console(tmp_path):
    table, sets = realism_rows()
    summary = summarize(table, METHODS, 8.0, sets)
    op4 = next(r for r in summary if r["method"] == "operator" and r["scale"] == 4.0)  # k = 1
    assert (op4["lr_psnr"], op4["lsd_hi"], op4["seed_std"]) == (49.5, 2.0, None)
    assert (op4["swd_l0"], op4["swd_l1"], op4["swd_l2"]) == (204.0, 10.0, 1.0)
    assert summarize(table, METHODS, 8.0)[0]["swd_l0"] is None  # no set values given: absent
    csv_rows = read(write_metrics_csv(tmp_path / "m.csv", summary, "RGB", has_lpips=False))
    assert list(csv_rows[0])[3:-2] == [
        "psnr",
        "ssim",
        "lr_psnr",
        "swd_l0",
        "swd_l1",
        "swd_l2",
        "lsd_hi",
        "seed_std",
    ]
    assert {r["method"]: r["seed_std"] for r in csv_rows if r["scale"] == "2"} == {
        "bicubic": "",
        "operator": "",
        "diffusion": "0.02",
    }
    per = read(write_per_image_csv(tmp_path / "p.csv", table, has_lpips=False))
    assert list(per[0])[4:] == ["psnr", "ssim", "lr_psnr", "lsd_hi", "seed_std"]  # SWD is a set value
    md = metrics_markdown(summary, "RGB", "t", "n/a")
    assert (
        "| operator | x4 |  | 34.50 | 0.8600 | n/a | 49.50 | 204.00 | 10.00 | 1.00 | 2.00 | n/a | 2 |" in md
    )
    text = console_table(summary, METHODS).splitlines()
    realism = text[text.index("") + 1 :]
    assert realism[1].split("|")[1].split() == ["LR-PSNR", "SWD-l0", "LSD-hi", "seed-sd"]
    x4 = next(line for line in realism if line.startswith("x4"))
    assert x4.split("|")[2].split() == ["49.50", "204.0", "2.00", "n/a"]
    assert len({len(line.rstrip()) for line in realism[1:]}) <= 2  # columns line up


def test_perception_distortion_figure(tmp_path):
    table, sets = realism_rows()
    summary = summarize(table, METHODS, 8.0, sets)
    path = plot_perception_distortion(summary, METHODS, tmp_path / "pd" / "perception_distortion.png", "t")
    img = Image.open(path)
    assert img.size == (640, 480) and np.asarray(img.convert("L")).std() > 10
    # one colour per method: the default cycle's first three colours are drawn
    rgb = np.asarray(img.convert("RGB")).reshape(-1, 3).astype(int)
    for colour in ((31, 119, 180), (255, 127, 14), (44, 160, 44)):
        assert (np.abs(rgb - colour).sum(1) < 10).sum() > 50
    assert plot_perception_distortion(summarize(rows(), METHODS), METHODS, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


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
