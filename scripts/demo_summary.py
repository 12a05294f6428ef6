"""The demo's closing lines: diffusion vs operator vs bicubic per scale, from a test run's results/test/metrics.csv.

    python scripts/demo_summary.py runs/demo/test/<run>/results/test/metrics.csv

Exit status 0 always (a demo summary never fails the demo); it says plainly whether the diffusion row beats
bicubic at every in-distribution scale.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def main(path: str) -> None:
    lines = [line for line in Path(path).read_text().splitlines() if not line.startswith("#")]
    rows = list(csv.DictReader(lines))
    table: dict[float, dict[str, dict[str, str]]] = {}
    for row in rows:
        table.setdefault(float(row["scale"]), {})[row["method"]] = row
    print(
        "scale | bicubic PSNR/SSIM | operator PSNR/SSIM | diffusion PSNR/SSIM | HF share diffusion/operator/HR"
    )
    wins = []
    for scale in sorted(table):
        m = table[scale]
        cells = [
            f"{float(m[k]['psnr']):6.2f} / {float(m[k]['ssim']):.4f}" if k in m else "n/a"
            for k in ("bicubic", "operator", "diffusion")
        ]
        hf = "n/a"
        if "diffusion" in m and m["diffusion"].get("hf_share"):
            d, o = m["diffusion"], m.get("operator", {})
            hf = f"{float(d['hf_share']):.4f} / {float(o.get('hf_share', 'nan')):.4f} / {float(d['hf_share_hr']):.4f}"
        ood = " (OOD)" if m.get("diffusion", m.get("bicubic", {})).get("ood") == "True" else ""
        print(f"x{scale:g}{ood} | " + " | ".join(cells) + f" | {hf}")
        if not ood and "diffusion" in m:
            d, b = m["diffusion"], m["bicubic"]
            wins.append(float(d["psnr"]) > float(b["psnr"]) and float(d["ssim"]) > float(b["ssim"]))
    verdict = "beats" if wins and all(wins) else "does NOT beat"
    print(
        f"Diffusion {verdict} bicubic in PSNR and SSIM at every in-distribution scale ({sum(wins)}/{len(wins)})."
    )


if __name__ == "__main__":
    main(sys.argv[1])
