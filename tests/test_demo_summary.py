"""scripts/demo_summary.py: the demo's closing table and the sentence on what the sample adds."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "demo_summary.py"
HEADER = "method,scale,ood,psnr,ssim,lr_psnr,swd_l0,lsd_hi,n_images\n"


def _summary(tmp_path: Path, rows: str, capsys) -> str:
    path = tmp_path / "metrics.csv"
    path.write_text("# convention line\n" + HEADER + rows)
    main = runpy.run_path(str(SCRIPT))["main"]
    main(str(path))
    return capsys.readouterr().out


def test_a_sample_with_hr_like_detail_is_said_to_add_it(tmp_path, capsys):
    out = _summary(
        tmp_path,
        "bicubic,4,False,24.9,0.62,41.0,480,27.0,8\noperator,4,False,25.4,0.66,46.0,400,20.0,8\n"
        "diffusion,4,False,24.4,0.63,44.0,280,10.0,8\ndiffusion,9,True,20.0,0.40,30.0,900,30.0,8\n"
        "operator,9,True,22.0,0.45,44.0,500,20.0,8\n",
        capsys,
    )
    assert "x9 (OOD)" in out and "24.40 / 0.6300 /  44.0 /  280.0 / 10.00" in out
    last = out.strip().splitlines()[-1]
    assert "adds detail closer to HR's" in last and "SWD-l0 0.70x, LSD-hi 0.50x" in last  # x9 (OOD) left out
    assert "1.00 dB below" in last and "LR-PSNR 44.0-44.0 dB" in last


@pytest.mark.parametrize(("swd", "words"), [("398", "adds no clear detail"), ("600", "adds no clear detail")])
def test_a_prior_like_or_noisy_sample_is_not_praised(tmp_path, capsys, swd, words):
    rows = f"operator,2,False,30.0,0.87,45.0,400,10.0,8\ndiffusion,2,False,30.1,0.87,45.0,{swd},9.9,8\n"
    last = _summary(tmp_path, rows, capsys).strip().splitlines()[-1]
    assert words in last and "0.10 dB above" in last
