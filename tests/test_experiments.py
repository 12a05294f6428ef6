"""`neurop-diff experiment`: the paper-table sets load and compose, and a tiny set runs fit -> test -> compare."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from neurop_diff.cli import main
from neurop_diff.comparison.experiments import load_experiment, plan_experiment, run_experiment
from test_cli import TINY_DATA, TINY_OPERATOR, TINY_UNET

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted((REPO / "configs/experiments").glob("table*/*.yaml"))
SETS = [p for p in SPECS if p.name in ("paper.yaml", "cpu.yaml")]


def test_every_table_has_a_paper_and_a_cpu_set():
    tables = {p.parent.name for p in SETS}
    assert tables == {"table1", "table3", "table4", "table5"}
    assert len(SETS) == 2 * len(tables)


@pytest.mark.parametrize("table", ["table1", "table4"])
def test_tables_1_and_4_have_a_flow_row(table):
    for spec in (REPO / "configs/experiments" / table).glob("[cp]*.yaml"):
        runs = {r.name: r for r in load_experiment(spec, root=REPO).runs}
        flow = runs["neurop_diff_flow"]
        assert flow.stage == "diffusion" and flow.operator == "srno"
        config = yaml.safe_load((REPO / flow.configs[0]).read_text())
        assert config["model"]["init_args"]["process"] == "flow", spec


@pytest.mark.parametrize("spec", SETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_sets_load_and_plan(spec):
    exp = load_experiment(spec, root=REPO)
    stages = [r.stage for r in exp.runs]
    assert stages == sorted(stages, key=("operator", "diffusion").index)  # operators train first
    steps = plan_experiment(exp, Path("/tmp/out"))
    assert [s.command for s in steps] == ["fit", "test"] * len(exp.runs) + ["compare"]
    small = spec.stem == "cpu"
    for run in exp.runs:
        sized = [c for c in run.configs if "configs/experiments" not in c]
        assert any(Path(c).stem.endswith("small") for c in sized) == small, sized
        fit = next(s for s in steps if s.run == run.name and s.command == "fit")
        if run.stage == "diffusion":  # guided by its operator run's checkpoint
            guide = run.operator or next(r.name for r in exp.runs if r.stage == "operator")
            assert fit.argv[fit.argv.index("--model.init_args.operator_ckpt") + 1] == f"@ckpt:{guide}"
    assert steps[-1].argv[-3:-1] == ("--paper", spec.parent.name)


@pytest.mark.parametrize(
    ("fragment", "key", "value"),
    [
        ("table5/encoder.yaml", ("model", "condition"), "encoder"),
        ("table5/encoder.yaml", ("model", "residual"), False),
        ("table5/bicubic.yaml", ("model", "condition"), "bicubic"),
        ("table1/sr3.yaml", ("model", "condition"), "bicubic"),
        (
            "table3/scales.yaml",
            ("data", "test_scales"),
            [2.0, 2.5, 3.0, 3.1, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
        ),
    ],
)
def test_fragments_compose_with_the_stage_configs(capsys, fragment, key, value):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(REPO / "configs/diffusion_small.yaml"),
              "--config", str(REPO / "configs/experiments" / fragment), "--print_config"])  # fmt: skip
    config = yaml.safe_load(capsys.readouterr().out)
    assert config[key[0]]["init_args"][key[1]] == value
    assert config["model"]["class_path"] == "neurop_diff.lit.DiffusionModule"  # the stage's class is kept


def _write(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_bad_specs_name_the_file_and_key(tmp_path):
    good = {
        "name": "x",
        "runs": [
            {
                "name": "op",
                "stage": "operator",
                "configs": ["configs/operator.yaml", "configs/model/small.yaml"],
            }
        ],
    }
    load_experiment(_write(tmp_path, good), root=REPO)
    wrong_guide = {
        "name": "d",
        "stage": "diffusion",
        "operator": "liif",
        "configs": ["configs/diffusion_small.yaml"],
    }
    cases = [
        ({**good, "scales": [4]}, "unknown keys \\['scales'\\]"),
        ({"name": "x", "runs": [{**good["runs"][0], "stage": "gan"}]}, "runs\\[0\\]: stage must be one of"),
        (
            {"name": "x", "runs": [{**good["runs"][0], "configs": ["configs/nope.yaml"]}]},
            "config file not found",
        ),
        ({"name": "x", "runs": good["runs"] * 2}, "unique names"),
        ({"name": "x", "runs": [*good["runs"], wrong_guide]}, "names operator 'liif'"),
    ]
    for spec, message in cases:
        with pytest.raises((ValueError, FileNotFoundError), match=message) as err:
            load_experiment(_write(tmp_path, spec), root=REPO)
        assert "spec.yaml" in str(err.value)


def test_a_tiny_experiment_runs_end_to_end_and_continues(tmp_path, shared_data, monkeypatch):
    """Operator + diffusion + comparison for real (tiny models, a few steps); a second call skips what is done,
    an interrupted fit resumes from its last.ckpt, and a failing command names its run."""
    monkeypatch.chdir(REPO)  # spec config paths are relative to the repository, as from the README
    data = [f"--data.init_args.root={shared_data / 'rsscn7'}", *TINY_DATA]
    steps = ["--trainer.max_steps=2", "--trainer.val_check_interval=2"]
    spec = {
        "name": "tiny",
        "paper": "table5",
        "test_args": ["--data.init_args.test_scales=[4]"],
        "runs": [
            {"name": "srno", "stage": "operator", "configs": ["configs/operator.yaml", "configs/model/small.yaml"],
             "args": [*TINY_OPERATOR, *steps]},
            {"name": "neurop_diff", "stage": "diffusion", "configs": ["configs/diffusion_small.yaml"],
             "args": [*TINY_UNET, *steps]},
        ],
    }  # fmt: skip
    exp = load_experiment(_write(tmp_path, spec))
    out, calls = tmp_path / "out", []

    def execute(argv: list[str]) -> int:
        calls.append(argv)
        main(argv)
        return 0

    folder = run_experiment(exp, out, data, parse=main, execute=execute)
    assert [c[0] for c in calls] == ["fit", "test", "fit", "test", "compare"]
    # the diffusion fit was guided by the operator run's own checkpoint
    guide = calls[2][calls[2].index("--model.init_args.operator_ckpt") + 1]
    assert Path(guide).parent == out / "srno" / "fit" / "checkpoints"
    rows = list(csv.DictReader((folder / "comparison.csv").open()))
    methods = {r["method"] for r in rows}
    assert {"bicubic", "operator (srno)"} <= methods or len(methods) >= 3, methods
    md = (folder / "comparison.md").read_text()
    assert "srno" in md and "neurop_diff" in md and "paper, Table 5" in md
    for run in ("srno", "neurop_diff"):
        results = list(csv.DictReader((out / run / "test/results/test/metrics.csv").open()))
        assert {r["scale"] for r in results} == {"4"}

    calls.clear()
    run_experiment(exp, out, data, parse=main, execute=execute)
    assert calls == []  # everything done: nothing runs again

    (out / "neurop_diff/fit/FINISHED").unlink()
    (out / "neurop_diff/test/results/test/metrics.csv").unlink()
    run_experiment(exp, out, data, parse=main, execute=lambda argv: calls.append(argv) or 0)
    assert [c[0] for c in calls] == ["fit", "test"]
    assert calls[0][-2:] == ["--ckpt_path", str(out / "neurop_diff/fit/checkpoints/last.ckpt")]

    (out / "neurop_diff/fit/FINISHED").unlink()
    with pytest.raises(RuntimeError, match="`neurop-diff fit` of run 'neurop_diff' failed"):
        run_experiment(exp, out, data, parse=main, execute=lambda argv: 1)


def test_commands_are_checked_before_anything_trains(tmp_path):
    spec = {
        "name": "bad",
        "test_args": ["--model.init_args.sampling_steps=20"],  # a diffusion option, given to the operator too
        "runs": [
            {
                "name": "srno",
                "stage": "operator",
                "configs": ["configs/operator.yaml", "configs/model/small.yaml"],
            }
        ],
    }
    calls = []
    with pytest.raises(ValueError, match="the test command of run 'srno' does not parse") as err:
        run_experiment(
            load_experiment(_write(tmp_path, spec), root=REPO), tmp_path, parse=main, execute=calls.append
        )
    assert "sampling_steps" in str(err.value) and calls == []
