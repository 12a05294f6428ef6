"""Degradation helpers: coordinates, cells, LR sizes, scale sampling, and bicubic against PIL on real images."""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from neurop_diff.data.degradation import (
    bicubic_resize,
    degrade,
    lr_size,
    make_cell,
    make_coord,
    sample_scale,
    validate_scale_range,
)

DEGRADATION_PY = Path(__file__).resolve().parents[1] / "src" / "neurop_diff" / "data" / "degradation.py"


def test_make_coord_hand_values():
    coord = make_coord((2, 4))
    assert coord.shape == (2, 4, 2) and coord.dtype == torch.float32
    # pixel centres: rows -1 + (2i+1)/2 = -0.5, 0.5; columns -1 + (2j+1)/4 = -0.75, -0.25, 0.25, 0.75
    assert coord[0, 0].tolist() == [-0.5, -0.75]
    assert coord[1, 3].tolist() == [0.5, 0.75]
    assert coord[:, 2, 0].tolist() == [-0.5, 0.5]  # y varies along rows
    assert coord[1, :, 1].tolist() == [-0.75, -0.25, 0.25, 0.75]  # x varies along columns
    assert make_coord((3, 3), dtype=torch.float64)[1, 1].tolist() == [0.0, 0.0]


def test_make_coord_flipped_is_an_identity_grid_for_grid_sample():
    img = torch.rand(1, 3, 5, 7)
    grid = make_coord((5, 7)).flip(-1)[None]
    out = F.grid_sample(img, grid, mode="nearest", align_corners=False)
    assert torch.equal(out, img)


def test_make_cell_values_and_batch():
    assert make_cell((4, 8)).tolist() == [0.5, 0.25]
    cell = make_cell((256, 128), batch_size=3)
    assert cell.shape == (3, 2)
    assert torch.allclose(cell, torch.tensor([[2 / 256, 2 / 128]] * 3))
    with pytest.raises(ValueError, match="positive"):
        make_cell((0, 4))


@pytest.mark.parametrize(
    ("hr", "scale", "expected"),
    [((256, 256), 3, (85, 85)), ((256, 256), 3.1, (83, 83)), ((256, 256), 2.5, (102, 102)),
     ((400, 300), 4, (100, 75)), ((5, 5), 10, (1, 1)), ((256, 256), 1, (256, 256))],
)  # fmt: skip
def test_lr_size(hr, scale, expected):
    assert lr_size(hr, scale) == expected


def test_lr_size_rejects_bad_scales():
    for bad in (0, -2, math.nan, math.inf):
        with pytest.raises(ValueError, match="scale"):
            lr_size((8, 8), bad)


def test_degrade_shape_range_true_scale():
    hr = torch.rand(2, 3, 256, 256) * 2 - 1
    hr[:, :, ::2, ::2] = 1.0  # a checkerboard of extremes makes bicubic overshoot: LR must be clamped
    lr, true_scale = degrade(hr, 3.0)
    assert lr.shape == (2, 3, 85, 85)
    assert true_scale == 256 / 85
    assert lr.min() >= -1 and lr.max() <= 1
    same, s1 = degrade(hr, 1.0)
    assert s1 == 1.0 and torch.equal(same, hr)
    with pytest.raises(ValueError, match="float"):
        degrade(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 2)


def test_bicubic_resize_checks_shape():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        bicubic_resize(torch.zeros(3, 8, 8), (4, 4))
    assert bicubic_resize(torch.zeros(1, 3, 8, 8), (4, 6)).shape == (1, 3, 4, 6)


def _real_images(shared_data: Path) -> list[Path]:
    files = [
        *sorted((shared_data / "rsscn7" / "aGrass").glob("*.jpg"))[:1],
        *sorted((shared_data / "rsscn7" / "gParking").glob("*.jpg"))[:1],
        shared_data / "ucmerced" / "agricultural" / "agricultural00.png",
        shared_data / "ucmerced" / "airplane" / "airplane00.png",
        shared_data / "aid" / "Parking" / "parking_60.png",  # has saturated highlights: the worst case
    ]
    for f in files:
        assert f.is_file(), f
    return files


def _two_pass_uint8(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL's algorithm shape: horizontal pass, round + clamp to uint8, vertical pass, round + clamp."""
    x = torch.from_numpy(a.copy()).permute(2, 0, 1)[None].double()
    y = F.interpolate(x, size=(a.shape[0], size[1]), mode="bicubic", antialias=True).round().clamp(0, 255)
    y = F.interpolate(y, size=size, mode="bicubic", antialias=True).round().clamp(0, 255)
    return y[0].permute(1, 2, 0).numpy()


def test_degrade_matches_pil_bicubic_on_real_images(shared_data):
    """Measured on these images: mean |torch - PIL| <= 0.30/255, max 10/255 (at a few saturated pixels).

    The max comes from PIL clamping its intermediate (horizontal-pass) result to uint8: the same two-pass
    computation with that clamp matches PIL to 1/255 everywhere, so nothing else differs.
    """
    for path in _real_images(shared_data):
        img = Image.open(path).convert("RGB")
        a = np.asarray(img)
        hr = torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
        for scale in (2, 2.5, 3, 3.1, 4, 6.7, 8):
            lr, _ = degrade(hr, scale)
            h, w = lr.shape[-2:]
            assert (h, w) == (round(a.shape[0] / scale), round(a.shape[1] / scale))
            ref = np.asarray(img.resize((w, h), Image.Resampling.BICUBIC)).astype(np.float64)
            ours = (lr[0].permute(1, 2, 0).double().numpy() + 1) * 127.5
            diff = np.abs(ours - ref)
            assert diff.mean() <= 0.35, (path.name, scale, diff.mean())  # bound: 1/255 -> measured 0.30
            assert np.percentile(np.abs(np.round(ours) - ref), 99) <= 1, (path.name, scale)
            assert diff.max() <= 12, (path.name, scale, diff.max())
            assert np.abs(_two_pass_uint8(a, (h, w)) - ref).max() <= 1, (path.name, scale)


def test_sample_scale_is_uniform_and_seeded():
    g = torch.Generator().manual_seed(123)
    draws = np.array([sample_scale(1.0, 8.0, g) for _ in range(1000)])
    assert draws.min() >= 1.0 and draws.max() <= 8.0
    counts, _ = np.histogram(draws, bins=7, range=(1, 8))
    # expected 142.9 per bin; chi-square with 6 dof: 22.5 is the 0.999 quantile
    chi2 = ((counts - 1000 / 7) ** 2 / (1000 / 7)).sum()
    assert chi2 < 22.5, counts
    assert abs(draws.mean() - 4.5) < 0.2
    assert draws.min() < 1.1 and draws.max() > 7.9  # the whole range is reached
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert [sample_scale(2, 4, g1) for _ in range(5)] == [sample_scale(2, 4, g2) for _ in range(5)]
    assert sample_scale(3.0, 3.0, g1) == 3.0


@pytest.mark.parametrize(
    ("smin", "smax", "match"),
    [(0.5, 4, "scale_min"), (2, 1.5, "scale_max"), (math.nan, 4, "scale_min"), (1, math.inf, "scale_max"),
     (1, math.nan, "scale_max"), ("2", 4, "scale_min")],
)  # fmt: skip
def test_validate_scale_range_rejects(smin, smax, match):
    with pytest.raises(ValueError, match=match):
        validate_scale_range(smin, smax)


def test_validate_scale_range_accepts():
    validate_scale_range(1, 1)
    validate_scale_range(1.0, 8.0)


def test_degradation_does_not_import_lightning():
    tree = ast.parse(DEGRADATION_PY.read_text())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.split(".")[0] in ("lightning", "pytorch_lightning")]
    code = "import sys, neurop_diff.data.degradation, neurop_diff.data.datasets; print('lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
