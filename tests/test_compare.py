"""`neurop-diff compare`: runs' results in one table per metric, with a real `neurop-diff test` run among them."""

from __future__ import annotations

import csv
import json
import re
import struct
import time
from pathlib import Path

import pytest
import yaml

from neurop_diff.cli import main
from neurop_diff.comparison.compare import build_comparison, load_run, load_runs
from neurop_diff.comparison.paper import TABLE3_SCALES, TABLE3_UNPLACED, paper_rows
from neurop_diff.comparison.tables import (
    comparison_latex,
    comparison_markdown,
    figure_size,
    read_comparison_csv,
)
from test_cli import TINY_DATA, TINY_OPERATOR

REPO = Path(__file__).resolve().parents[1]
CONV = "RGB, no border crop, 8-bit quantised, data range [0,1]"
Y_CONV = "Y (BT.601), border crop ceil(scale) px, 8-bit quantised, data range [0,1]"

# (psnr, ssim, lpips) per scale; x9 is out of distribution (training scales up to x8)
BICUBIC = {2.0: (30.0, 0.85, 0.2), 2.5: (28.0, 0.80, 0.25), 4.0: (25.0, 0.65, 0.3), 9.0: (21.0, 0.40, 0.45)}
CONDITION = {2.0: (31.0, 0.87, 0.15), 2.5: (29.0, 0.81, 0.2), 4.0: (26.0, 0.68, 0.25), 9.0: (22.0, 0.45, 0.3)}
DIFFUSION = {2.0: (30.5, 0.88, 0.1), 2.5: (29.1, 0.83, 0.12), 4.0: (26.5, 0.70, 0.15), 9.0: (22.4, 0.50, 0.2)}
OPERATOR = {
    2.0: (31.2, 0.865, None),
    2.5: (29.3, 0.82, None),
    4.0: (26.4, 0.69, None),
    9.0: (22.5, 0.48, None),
}
DIFF_ARGS = {"prediction": "x0", "residual": True, "condition": "operator"}


def write_run(
    root: Path,
    name: str,
    cls: str,
    init_args: dict,
    methods: dict[str, dict],
    n_images: int = 8,
    convention: str = CONV,
    logger: dict | None = None,
) -> Path:
    """A run folder as `neurop-diff test` leaves it: config.yaml and results/test/metrics.csv (no LPIPS
    column when no method has LPIPS, as the writer does)."""
    run = root / name
    (run / "results" / "test").mkdir(parents=True)
    config = {
        "trainer": {
            "logger": logger or {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {}}
        },
        "model": {"class_path": f"neurop_diff.lit.{cls}", "init_args": init_args},
        "data": {
            "class_path": "neurop_diff.data.SRDataModule",
            "init_args": {"dataset": "rsscn7", "scale_max": 8.0},
        },
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    lpips = any(v[2] is not None for values in methods.values() for v in values.values())
    cols = ["method", "scale", "ood", "psnr", "ssim", *(["lpips"] if lpips else []), "n_images", "convention"]
    with open(run / "results" / "test" / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for scale in sorted(next(iter(methods.values()))):
            for method, values in methods.items():
                p, s, lp = values[scale]
                w.writerow(
                    [method, f"{scale:g}", scale > 8, p, s, *([lp] if lpips else []), n_images, convention]
                )
    return run


@pytest.fixture
def two_runs(tmp_path) -> list[Path]:
    diff = write_run(
        tmp_path, "diff", "DiffusionModule", DIFF_ARGS,
        {"bicubic": BICUBIC, "operator": CONDITION, "diffusion": DIFFUSION},
    )  # fmt: skip
    op = write_run(
        tmp_path, "op", "OperatorModule", {"width": 16}, {"bicubic": BICUBIC, "operator": OPERATOR}
    )
    return [diff, op]


def table(md: str, title: str) -> list[str]:
    """The rows of the Markdown table under `## {title}` (header and separator dropped)."""
    part = md.split(f"## {title}", 1)[1].split("\n\n", 2)[1]
    return [line for line in part.splitlines() if line.startswith("|")][2:]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


def test_table_cells_best_marks_ood_and_shared_bicubic(two_runs):
    c = build_comparison(load_runs([str(p) for p in two_runs]))
    md = comparison_markdown(c)
    assert "| method | from | x2 | x2.5 | x4 | x9† |" in md
    assert "† out of distribution: above the training scale range (x8)" in md
    assert f"Metric convention: {CONV}." in md
    psnr = {cells(r)[0]: cells(r)[1:] for r in table(md, "PSNR (dB)")}
    # bicubic: one row read from both runs (same images and numbers); the condition operator differs from the
    # operator run's own numbers, so it keeps its own row named after its run.
    diff, op = (r.label for r in c.runs)
    assert list(psnr) == [
        "bicubic",
        f"operator (condition of {diff})",
        "diffusion (x0, residual, condition operator)",
        "operator (srno)",
    ]
    assert psnr["bicubic"] == [f"{diff}, {op}", "30.00", "28.00", "25.00", "21.00"]
    assert psnr[f"operator (condition of {diff})"][1:] == ["31.00", "29.00", "26.00", "22.00"]
    assert psnr["operator (srno)"][1:] == ["**31.20**", "**29.30**", "26.40", "**22.50**"]
    assert psnr["diffusion (x0, residual, condition operator)"][1:] == [
        "30.50",
        "29.10",
        "**26.50**",
        "22.40",
    ]
    ssim = {cells(r)[0]: cells(r)[2:] for r in table(md, "SSIM")}
    assert ssim["diffusion (x0, residual, condition operator)"] == [
        "**0.8800**",
        "**0.8300**",
        "**0.7000**",
        "**0.5000**",
    ]
    lpips = {cells(r)[0]: cells(r)[2:] for r in table(md, "LPIPS (lower is better)")}
    assert lpips["operator (srno)"] == ["-", "-", "-", "-"]  # its run has no LPIPS: '-', no crash
    assert lpips["diffusion (x0, residual, condition operator)"] == [
        "**0.1000**",
        "**0.1200**",
        "**0.1500**",
        "**0.2000**",
    ]
    assert any("bicubic: the same numbers in" in n for n in c.notes)


def test_same_method_on_other_images_keeps_one_row_per_run(tmp_path):
    a = write_run(tmp_path, "a", "OperatorModule", {}, {"bicubic": BICUBIC, "operator": OPERATOR}, n_images=8)
    b = write_run(
        tmp_path, "b", "OperatorModule", {}, {"bicubic": BICUBIC, "operator": CONDITION}, n_images=4
    )
    c = build_comparison(load_runs([f"{a}=SRNO small", f"{b}=SRNO large"]))
    names = [r.name for r in c.rows]
    assert names == [
        f"bicubic [{c.runs[0].label}]",
        f"bicubic [{c.runs[1].label}]",
        "SRNO small",
        "SRNO large",
    ]
    assert any("bicubic: the runs' numbers differ" in n for n in c.notes)


def test_conventions_must_agree(tmp_path, capsys):
    a = write_run(tmp_path, "a", "OperatorModule", {}, {"bicubic": BICUBIC, "operator": OPERATOR})
    b = write_run(
        tmp_path, "b", "OperatorModule", {}, {"bicubic": BICUBIC, "operator": OPERATOR}, convention=Y_CONV
    )
    runs = load_runs([str(a), str(b)])
    with pytest.raises(ValueError, match="different metric conventions") as err:
        build_comparison(runs)
    for text in (runs[0].label, runs[1].label, CONV, Y_CONV, "--allow-mixed-conventions"):
        assert text in str(err.value)
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(a), str(b), "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2 and Y_CONV in capsys.readouterr().err
    c = build_comparison(runs, allow_mixed_conventions=True)
    assert c.convention.startswith("mixed") and Y_CONV in c.convention
    assert len([r for r in c.rows if r.key == "bicubic"]) == 2  # other conventions: never one row


def test_latex_is_well_formed(two_runs):
    runs = load_runs([f"{two_runs[0]}=NeurOp_Diff & co", str(two_runs[1])])
    tex = comparison_latex(build_comparison(runs, scales=[2, 2.5, 4, 8, 9], paper=paper_rows("table3")))
    unescaped = re.sub(r"\\[{}]", "", tex)
    assert unescaped.count("{") == unescaped.count("}")
    depth = 0
    for ch in unescaped:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") == 3
    assert r"NeurOp\_Diff \& co" in tex  # the label escaped
    for block in tex.split(r"\begin{tabular}")[1:]:
        spec = re.match(r"\{([lrc]+)\}", block).group(1)
        body = block.split(r"\end{tabular}")[0]
        rows = [line for line in body.splitlines() if line.endswith(r"\\")]
        assert len(rows) >= 5
        for line in rows:
            assert len(re.split(r"(?<!\\)&", line)) == len(spec) == 1 + 5  # method + x2 x2.5 x4 x8 x9
    assert r"$\times$9$^\dagger$" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    psnr = tex.split(r"\begin{table}")[1]
    assert r"operator (srno) & \textbf{31.20} & \textbf{29.30} & 26.40 & - & \textbf{22.50} \\" in psnr
    assert r"NeurOp-Diff (paper, Table 3) & - & - & - & 24.51 & 24.13 \\" in psnr  # never bold


def test_csv_round_trip(two_runs, tmp_path):
    c = build_comparison(
        load_runs([str(p) for p in two_runs]), metrics=["psnr", "lpips"], paper=paper_rows("table4")
    )
    from neurop_diff.comparison.tables import write_comparison_csv

    back = read_comparison_csv(write_comparison_csv(c, tmp_path / "c.csv"))
    expected = [(m, i, r) for m in c.metrics for i, r in c.rows_for(m)]
    assert len(back) == len(expected)
    for got, (m, i, row) in zip(back, expected, strict=True):
        assert (got["metric"], got["method"], got["reference"]) == (m, row.name, row.reference)
        assert got["values"] == {s: row.values.get((m, s)) for s in c.scales}
        assert got["best"] == {s for s in c.scales if c.is_best(i, m, s)}
        assert got["ood"] == {s for s in c.scales if s in row.ood and (m, s) in row.values}
    op = next(r for r in back if r["metric"] == "psnr" and r["method"] == "operator (srno)")
    assert op["best"] == {2.0, 2.5, 9.0} and op["ood"] == {9.0} and op["values"][4.0] == 26.4
    liif = next(r for r in back if r["method"] == "LIIF (paper, Table 4)" and r["metric"] == "lpips")
    assert liif["reference"] and liif["values"][4.0] == 0.182 and liif["best"] == set()


def test_paper_rows_exact_numbers_never_best(two_runs):
    runs = load_runs([str(p) for p in two_runs])
    c = build_comparison(runs, scales=[4, 8, 9, 10], paper=paper_rows("table3") + paper_rows("table1", "aid"))
    md = comparison_markdown(c)
    psnr = {cells(r)[0]: cells(r)[2:] for r in table(md, "PSNR (dB)")}
    assert psnr["*NeurOp-Diff (paper, Table 3)*"] == ["-", "24.51", "24.13", "23.88"]
    assert psnr["*NeurOp-Diff (paper, Table 1)*"] == ["27.57", "23.45", "-", "-"]  # AID
    assert psnr["*SR3 (paper, Table 1)*"] == ["26.24", "22.54", "-", "-"]
    ssim = {cells(r)[0]: cells(r)[2:] for r in table(md, "SSIM")}
    assert ssim["*NeurOp-Diff (paper, Table 3)*"] == ["-", "0.650", "0.641", "0.633"]  # as printed
    assert ssim["*NeurOp-Diff (paper, Table 1)*"][0] == "0.6845"  # above every run, yet not bold
    assert "x10†" in md and "x8 |" in md and "x8†" not in md
    assert "**" not in "".join(line for line in md.splitlines() if "(paper," in line)
    assert any("may differ from the runs'" in n and "no border crop" in n for n in c.notes)
    assert any("Table 3 is on ucmerced, the runs on rsscn7" in n for n in c.notes)
    lpips = [cells(r)[0] for r in table(md, "LPIPS (lower is better)")]
    assert "*NeurOp-Diff (paper, Table 1)*" not in lpips  # Table 1 has no LPIPS


def test_paper_numbers_are_the_papers():
    # method.md section 5 (the paper's Table 1 headline and Table 3 continuous results)
    headline = {"ucmerced": ("28.14", "0.7761", "24.51", "0.6502"), "aid": ("27.57", "0.6845", "23.45", "0.5599"),
                "rsscn7": ("27.74", "0.6509", "23.73", "0.5889")}  # fmt: skip
    for dataset, (p4, s4, p8, s8) in headline.items():
        ours = next(r for r in paper_rows("table1", dataset) if r.method == "NeurOp-Diff")
        assert ours.values == {"psnr": {4.0: p4, 8.0: p8}, "ssim": {4.0: s4, 8.0: s8}}
    t3 = next(r for r in paper_rows("table3") if r.method == "NeurOp-Diff")
    assert t3.values["lpips"] == {8.0: "0.195", 9.0: "0.206", 10.0: "0.212"}
    assert TABLE3_SCALES[-3:] == (8.0, 9.0, 10.0)
    assert TABLE3_UNPLACED["NeurOp-Diff"]["psnr"] == ("33.93", "30.76", "26.89", "25.50")
    assert [r.label for r in paper_rows("table5")][
        -1
    ] == "NeurOp-Diff, neural operator condition (paper, Table 5)"
    with pytest.raises(ValueError, match="choose one of"):
        paper_rows("table2")


def test_scales_filter(two_runs):
    runs = load_runs([str(p) for p in two_runs])
    c = build_comparison(runs, scales=[2.5, 9.0])
    assert c.scales == [2.5, 9.0]
    md = comparison_markdown(c)
    assert "| method | from | x2.5 | x9† |" in md and "x4" not in md.split("## PSNR")[1]
    with pytest.raises(
        ValueError, match=r"--scales 7: no run has results there \(the runs have x2, x2.5, x4, x9\)"
    ):
        build_comparison(runs, scales=[7.0])


def test_missing_results_are_named(tmp_path, two_runs):
    with pytest.raises(FileNotFoundError, match="no such file or directory; expected a run directory"):
        load_run(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"no results/val/metrics.csv; .*it has results for: test"):
        load_run(two_runs[0], stage="val")
    with pytest.raises(FileNotFoundError, match=r"runs below it: .*diff"):
        load_run(tmp_path)
    logger_csv = tmp_path / "logger.csv"
    logger_csv.write_text("epoch,step,val/psnr\n0,4,25.1\n")
    with pytest.raises(ValueError, match=r"is not a results table .*not the logger's metrics.csv"):
        load_run(logger_csv)
    # the results folder and the csv itself name the same run
    assert (
        load_run(two_runs[0] / "results" / "test").path
        == load_run(two_runs[0] / "results/test/metrics.csv").path
    )


def test_method_names_from_config_hparams_and_labels(tmp_path, two_runs):
    assert load_run(two_runs[0]).method == "diffusion (x0, residual, condition operator)"
    assert load_run(two_runs[1]).method == "operator (srno)"
    (two_runs[0] / "config.yaml").unlink()
    (two_runs[0] / "hparams.yaml").write_text(
        "condition: bicubic\nprediction: eps\nwidth: 3\nt: !!python/tuple [1, 2]\n"
    )
    assert load_run(two_runs[0]).method == "diffusion (eps, condition bicubic)"
    runs = load_runs([str(p) for p in two_runs], labels=["NeurOp-Diff (ours)", "SRNO"])
    assert [r.method for r in runs] == ["NeurOp-Diff (ours)", "SRNO"]
    with pytest.raises(ValueError, match="2 runs: give one per run"):
        load_runs([str(p) for p in two_runs], labels=["one"])


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--help"])
    text = capsys.readouterr().out
    assert exit_.value.code == 0
    for option in ("RUN_DIR[=LABEL]", "--scales", "--metric", "--out", "--stage", "--paper", "--dataset",
                   "--labels", "--allow-mixed-conventions", "--wandb", "table3"):  # fmt: skip
        assert option in text, option
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "compare         compare the test results of several runs" in capsys.readouterr().out


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def real_run(
    tmp_path_factory,
) -> Path:
    """An untrained tiny SRNO tested for real by `neurop-diff test` at x2, x2.5 and x9 (OOD), no LPIPS."""
    from conftest import shared_data_dir

    root = tmp_path_factory.mktemp("real")
    data = shared_data_dir() / "rsscn7"
    if not data.is_dir():
        pytest.skip(f"shared test images not found at {data}")
    metrics = root / "metrics.yaml"
    metrics.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "neurop_diff.callbacks.SRMetrics", "init_args": {"lpips": False, "grid_images": 0}},
    ]}}))  # fmt: skip
    main([
        "test", "--config", str(REPO / "configs/operator.yaml"), "--config", str(REPO / "configs/model/small.yaml"), "--config", str(metrics),
        f"--data.init_args.root={data}", *TINY_DATA, *TINY_OPERATOR,
        "--data.init_args.test_scales=[2, 2.5, 9]",
        f"--trainer.logger.init_args.save_dir={root}", "--trainer.logger.init_args.name=operator",
        "--trainer.logger.init_args.version=v0",
    ])  # fmt: skip
    return root / "operator" / "v0"


def test_compare_a_real_test_run(real_run, tmp_path, capsys):
    real = list(csv.DictReader((real_run / "results/test/metrics.csv").open()))
    assert {r["scale"] for r in real} == {"2", "2.5", "9"} and "lpips" not in real[0]
    # a second run tested on the same images: its bicubic rows are the real run's
    diffusion = {
        float(r["scale"]): (30.0 + float(r["scale"]) / 10, 0.9, 0.12)
        for r in real
        if r["method"] == "bicubic"
    }
    other = write_run(tmp_path, "diff", "DiffusionModule", DIFF_ARGS, {"diffusion": diffusion}, n_images=2)
    with open(other / "results/test/metrics.csv", "a", newline="") as f:
        w = csv.writer(f)
        for r in real:
            if r["method"] == "bicubic":
                w.writerow(
                    [
                        "bicubic",
                        r["scale"],
                        r["ood"],
                        r["psnr"],
                        r["ssim"],
                        "",
                        r["n_images"],
                        r["convention"],
                    ]
                )
    out = tmp_path / "cmp"
    main(["compare", str(real_run), str(other), "--out", str(out), "--no-wandb"])
    printed = capsys.readouterr().out
    md = (out / "comparison.md").read_text()
    assert md.strip() in printed
    psnr = {cells(r)[0]: cells(r)[1:] for r in table(md, "PSNR (dB)")}
    assert list(psnr) == ["bicubic", "operator (srno)", "diffusion (x0, residual, condition operator)"]
    assert psnr["bicubic"][0] == "operator/v0, tmp/diff".replace("tmp", tmp_path.name)
    bic = {r["scale"]: float(r["psnr"]) for r in real if r["method"] == "bicubic"}
    own = {r["scale"]: float(r["psnr"]) for r in real if r["method"] == "operator"}
    assert [c.strip("*") for c in psnr["bicubic"][1:]] == [f"{bic[s]:.2f}" for s in ("2", "2.5", "9")]
    assert [c.strip("*") for c in psnr["operator (srno)"][1:]] == [f"{own[s]:.2f}" for s in ("2", "2.5", "9")]
    assert "| method | from | x2 | x2.5 | x9† |" in md  # the real run's ood column says x9
    lpips = {cells(r)[0]: cells(r)[2:] for r in table(md, "LPIPS (lower is better)")}
    assert (
        lpips["operator (srno)"] == ["-", "-", "-"]
        and lpips["diffusion (x0, residual, condition operator)"][0] == "0.1200"
    )
    # the real run recorded the realism measures: LR-PSNR, SWD-l0 and LSD-hi are tabulated by default
    # beside PSNR / SSIM / LPIPS ('-' for the run whose csv has no such column); no seed spread (one sample)
    assert [m for m in ("LR-PSNR (dB)", "SWD l0 (x1e3)", "LSD-hi (dB)", "Seed std") if f"## {m}" in md] == [
        "LR-PSNR (dB)",
        "SWD l0 (x1e3)",
        "LSD-hi (dB)",
    ]
    swd0 = {cells(r)[0]: cells(r)[2:] for r in table(md, "SWD l0 (x1e3) (lower is better)")}
    real_swd = {r["scale"]: float(r["swd_l0"]) for r in real if r["method"] == "operator"}
    assert [c.strip("*") for c in swd0["operator (srno)"]] == [
        f"{real_swd[s]:.2f}" for s in ("2", "2.5", "9")
    ]
    assert swd0["diffusion (x0, residual, condition operator)"] == ["-", "-", "-"]
    assert png_size(out / "metrics_vs_scale.png") == tuple(round(100 * v) for v in figure_size(6, 3))
    assert {p.name for p in out.iterdir()} == {
        "comparison.md",
        "comparison.csv",
        "comparison.tex",
        "metrics_vs_scale.png",
    }


def test_wandb_offline_table(tmp_path, two_runs, monkeypatch):
    """A run logged to W&B makes compare log its table there (offline without an account)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    wandb_logger = {"class_path": "neurop_diff.loggers.WandbLogger", "init_args": {"project": "my-project"}}
    logged = write_run(tmp_path, "logged", "OperatorModule", {}, {"bicubic": BICUBIC, "operator": OPERATOR},
                       logger=wandb_logger)  # fmt: skip
    main(
        ["compare", str(two_runs[0]), str(logged), "--out", str(tmp_path / "cmp"), "--metric", "psnr", "ssim"]
    )
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = {p.name.split("_")[0]: p for p in (runs[0] / "files/media/table/compare").glob("*.table.json")}
    assert set(files) == {"psnr", "ssim"}
    psnr = json.loads(files["psnr"].read_text())
    assert psnr["columns"] == ["method", "from", "reference", "x2", "x2.5", "x4", "x9 (OOD)", "best"]
    rows = {r[0]: r for r in psnr["data"]}
    assert rows["operator (srno)"][3:] == [31.2, 29.3, 26.4, 22.5, "2;2.5;9"]
    assert rows["bicubic"][3:7] == [30.0, 28.0, 25.0, 21.0]
    # The run record is written by wandb's service process, which may still be flushing after finish().
    deadline, record = time.monotonic() + 30, b""
    while b"my-project" not in record and time.monotonic() < deadline:
        time.sleep(0.2)
        record = next(runs[0].glob("run-*.wandb")).read_bytes()
    assert b"my-project" in record


def test_cli_paper_block_follows_the_runs_dataset(two_runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    main(
        [
            "compare",
            *map(str, two_runs),
            "--paper",
            "table1",
            "--scales",
            "2.5",
            "4",
            "--out",
            str(out),
            "--no-wandb",
        ]
    )
    printed = capsys.readouterr().out
    psnr = {cells(r)[0]: cells(r)[2:] for r in table((out / "comparison.md").read_text(), "PSNR (dB)")}
    assert psnr["*NeurOp-Diff (paper, Table 1)*"] == ["-", "27.74"]  # the runs are on RSSCN7
    assert psnr["diffusion (x0, residual, condition operator)"] == ["29.10", "**26.50**"]
    assert "| method | from | x2.5 | x4 |" in printed and not (tmp_path / "cmp" / "wandb").exists()


REALISM_COLS = ("lr_psnr", "swd_l0", "swd_l1", "swd_l2", "lsd_hi", "seed_std")


def add_realism(run: Path, values: dict[str, dict[float, tuple]]) -> Path:
    """Rewrite a run's metrics.csv with the realism columns: {method: {scale: 6 values (None = empty)}}."""
    path = run / "results" / "test" / "metrics.csv"
    old = list(csv.DictReader(path.open()))
    cols = [*list(old[0])[:-2], *REALISM_COLS, "n_images", "convention"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in old:
            v = values.get(r["method"], {}).get(float(r["scale"]), (None,) * 6)
            w.writerow({**r, **{k: "" if x is None else x for k, x in zip(REALISM_COLS, v, strict=True)}})
    return run


def test_old_results_without_realism_columns_load_beside_new_ones(two_runs, tmp_path):
    old = build_comparison(load_runs([str(p) for p in two_runs]))
    assert old.metrics == ["psnr", "ssim", "lpips"]  # csvs written before the realism measures
    assert all(r[k] is None for run in old.runs for r in run.rows for k in REALISM_COLS)
    diff, op = two_runs
    add_realism(
        diff,
        {
            "diffusion": {s: (44.0 - s, 80.0 + s, 9.0, 1.0, 3.0 + s / 10, 0.02) for s in DIFFUSION},
            "operator": {s: (50.0 - s, 300.0 + s, 20.0, 2.0, 12.0, None) for s in CONDITION},
            "bicubic": {s: (40.0, 500.0, 90.0, 9.0, 15.0, None) for s in BICUBIC},
        },
    )
    c = build_comparison(load_runs([str(diff), str(op)]))
    assert c.metrics == ["psnr", "ssim", "lpips", "lr_psnr", "swd_l0", "lsd_hi", "seed_std"]
    md = comparison_markdown(c)
    name = "diffusion (x0, residual, condition operator)"
    swd0 = {cells(r)[0]: cells(r)[2:] for r in table(md, "SWD l0 (x1e3) (lower is better)")}
    assert swd0[name] == ["**82.00**", "**82.50**", "**84.00**", "**89.00**"]  # the lowest is best
    assert swd0["operator (srno)"] == ["-", "-", "-", "-"]  # its csv has no such column
    lr = {cells(r)[0]: cells(r)[2:] for r in table(md, "LR-PSNR (dB)")}
    assert lr[f"operator (condition of {c.runs[0].label})"][0] == "**48.00**"  # the highest is best
    spread = {cells(r)[0]: cells(r)[2:] for r in table(md, "Seed std (spread over seeds; no best)")}
    assert spread[name] == ["0.0200"] * 4 and "**" not in "".join(v for x in spread.values() for v in x)
    out = tmp_path / "cmp"
    main(["compare", str(diff), str(op), "--out", str(out), "--no-wandb", "--metric", "psnr", "swd_l2"])
    back = read_comparison_csv(out / "comparison.csv")
    assert {r["metric"] for r in back} == {"psnr", "swd_l2"}
    l2 = next(r for r in back if r["metric"] == "swd_l2" and r["method"] == name)
    assert l2["values"] == {2.0: 1.0, 2.5: 1.0, 4.0: 1.0, 9.0: 1.0} and l2["best"] == {2.0, 2.5, 4.0, 9.0}
