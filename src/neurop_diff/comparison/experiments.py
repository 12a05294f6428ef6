"""Experiment sets: the runs of one paper table (fit, then test) and their comparison (`neurop-diff experiment`).

A spec (``configs/experiments/table*/{paper,cpu}.yaml``) names the runs, each a list of config files that
compose with the stage configs (later files override earlier ones, as ``--config`` does) plus extra arguments:

    name: table5_cpu
    description: ...
    paper: table5                   # reference rows for `neurop-diff compare --paper`
    test_args: [--data.init_args.test_scales, "[4]"]
    runs:
      - {name: srno, stage: operator, configs: [configs/operator.yaml, configs/model/small.yaml]}
      - {name: bicubic, stage: diffusion, operator: srno,
         configs: [configs/diffusion_small.yaml, configs/experiments/table5/bicubic.yaml]}

Operator runs train first; a diffusion run is guided by the checkpoint of its ``operator`` run (default: the
first one). Every run logs to ``<out>/<run>/{fit,test}`` with a CSV logger (and W&B with ``--wandb``, runs
grouped by the experiment), so the stage configs' loggers are replaced. A run whose test results exist is
skipped and an unfinished fit resumes from its last.ckpt, so a stopped experiment continues where it stopped
(``--force`` redoes everything). Arguments after
``--`` go to every fit and test (e.g. ``-- --config configs/data/aid.yaml``).
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = [
    "Experiment",
    "Run",
    "Step",
    "check_experiment",
    "checkpoint_of",
    "load_experiment",
    "plan_experiment",
    "run_experiment",
]

STAGES = ("operator", "diffusion")
_KEYS = {"name", "description", "paper", "test_args", "compare_args", "runs"}
_RUN_KEYS = {"name", "label", "stage", "configs", "args", "operator"}


@dataclass(frozen=True)
class Run:
    """One training run of an experiment and how it is tested."""

    name: str
    stage: str
    configs: tuple[str, ...]
    args: tuple[str, ...] = ()
    operator: str | None = None
    label: str | None = None  # its row in the comparison (default: the name)


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    runs: tuple[Run, ...]
    paper: str | None = None
    test_args: tuple[str, ...] = ()
    compare_args: tuple[str, ...] = ()


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise ValueError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(str(v) for v in value)


def load_experiment(path: str | Path, root: Path | None = None) -> Experiment:
    """Read and check a spec; config paths are relative to ``root`` (default: the working directory, else the
    repository folder holding the spec) and come back absolute."""
    path = Path(path)
    # Config paths are relative to the working directory, else to the repository holding the spec.
    roots = [root] if root else [Path.cwd(), *(p for p in path.resolve().parents if (p / "configs").is_dir())]
    if not path.is_file():
        raise FileNotFoundError(f"experiment spec not found: {path}")
    spec = yaml.safe_load(path.read_text())
    if not isinstance(spec, dict) or "runs" not in spec:
        raise ValueError(
            f"{path}: expected a mapping with 'name' and 'runs' (see neurop_diff.comparison.experiments)"
        )
    unknown = set(spec) - _KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; expected some of {sorted(_KEYS)}")
    runs = []
    for i, item in enumerate(spec["runs"] or []):
        where = f"{path}: runs[{i}]"
        if not isinstance(item, dict) or not {"name", "stage", "configs"} <= set(item):
            raise ValueError(f"{where}: expected a mapping with name, stage and configs, got {item!r}")
        if set(item) - _RUN_KEYS:
            raise ValueError(
                f"{where}: unknown keys {sorted(set(item) - _RUN_KEYS)}; expected {sorted(_RUN_KEYS)}"
            )
        if item["stage"] not in STAGES:
            raise ValueError(f"{where}: stage must be one of {STAGES}, got {item['stage']!r}")
        configs = tuple(_find(c, roots, where) for c in _strings(item["configs"], f"{where}.configs"))
        args = _configs_found(_strings(item.get("args", []), where), roots, where)
        label = str(item.get("label", item["name"]))
        runs.append(Run(str(item["name"]), item["stage"], configs, args, item.get("operator"), label))
    names = [r.name for r in runs]
    if not runs or len(set(names)) != len(names):
        raise ValueError(f"{path}: runs need unique names, got {names}")
    operators = [r.name for r in runs if r.stage == "operator"]
    for r in runs:
        if r.operator is not None and r.operator not in operators:
            raise ValueError(
                f"{path}: run {r.name!r} names operator {r.operator!r}; operator runs: {operators}"
            )
    # Operators first: every diffusion run needs its operator's checkpoint.
    runs.sort(key=lambda r: STAGES.index(r.stage))
    return Experiment(str(spec.get("name", path.stem)), str(spec.get("description", "")).strip(), tuple(runs),
                      spec.get("paper"),
                      _configs_found(_strings(spec.get("test_args", []), f"{path}: test_args"), roots, f"{path}: test_args"),
                      _strings(spec.get("compare_args", []), f"{path}: compare_args"))  # fmt: skip


def _configs_found(args: tuple[str, ...], roots: Sequence[Path], where: str) -> tuple[str, ...]:
    """``args`` with the file after each ``--config`` found like the run's configs."""
    return tuple(_find(a, roots, where) if i and args[i - 1] == "--config" else a for i, a in enumerate(args))


def _find(config: str, roots: Sequence[Path], where: str) -> str:
    for root in roots:
        if (root / config).is_file():
            return str((root / config).resolve())
    raise FileNotFoundError(
        f"{where}: config file not found: {config} (looked in {', '.join(map(str, roots))})"
    )


def checkpoint_of(run_dir: Path) -> Path:
    """The checkpoint a finished fit leaves to test: best.ckpt (best val PSNR), else last.ckpt."""
    for name in ("best.ckpt", "last.ckpt"):
        if (run_dir / "fit" / "checkpoints" / name).is_file():
            return run_dir / "fit" / "checkpoints" / name
    raise FileNotFoundError(
        f"no best.ckpt or last.ckpt under {run_dir / 'fit' / 'checkpoints'}: did the fit run?"
    )


def _logger(out: Path, run: str, version: str, exp: str, wandb: bool) -> str:
    csv = {"class_path": "lightning.pytorch.loggers.CSVLogger",
           "init_args": {"save_dir": str(out), "name": run, "version": version}}  # fmt: skip
    loggers = [csv]
    if wandb:
        loggers.append({"class_path": "neurop_diff.loggers.WandbLogger",
                        "init_args": {"name": f"{exp}-{run}-{version}", "group": exp, "save_dir": str(out)}})  # fmt: skip
    return "--trainer.logger=" + json.dumps(loggers)


@dataclass(frozen=True)
class Step:
    run: str
    command: str  # fit | test | compare
    argv: tuple[str, ...]
    done: Path  # exists once the step has finished


def plan_experiment(exp: Experiment, out: Path, extra: Sequence[str] = (), wandb: bool = False) -> list[Step]:
    """The neurop-diff commands of ``exp`` in order (operators, diffusion runs, then the comparison)."""
    steps, first_operator = [], next((r.name for r in exp.runs if r.stage == "operator"), None)
    for r in exp.runs:
        configs = [a for c in r.configs for a in ("--config", c)]
        common = [*configs, *r.args]
        fit = [*common, *extra, _logger(out, r.name, "fit", exp.name, wandb)]
        guide = r.operator or first_operator
        if r.stage == "diffusion" and guide is not None:
            fit += ["--model.init_args.operator_ckpt", f"@ckpt:{guide}"]
        test = [*common, *exp.test_args, *extra, _logger(out, r.name, "test", exp.name, wandb),
                "--ckpt_path", f"@ckpt:{r.name}"]  # fmt: skip
        steps.append(Step(r.name, "fit", ("fit", *fit), out / r.name / "fit" / "FINISHED"))
        steps.append(
            Step(r.name, "test", ("test", *test), out / r.name / "test" / "results" / "test" / "metrics.csv")
        )
    compare = [str(out / r.name / "test") + f"={r.label or r.name}" for r in exp.runs]
    compare += ["--out", str(out / "comparison"), *exp.compare_args]
    compare += ["--paper", exp.paper] if exp.paper else []
    compare += ["--wandb"] if wandb else ["--no-wandb"]
    steps.append(Step("*", "compare", ("compare", *compare), out / "comparison" / "comparison.md"))
    return steps


def check_experiment(
    exp: Experiment, out: Path, extra: Sequence[str] = (), *, parse: Callable[[list[str]], None]
) -> None:
    """Parse every fit and test command of ``exp`` before anything trains (``parse``, the ``neurop-diff``
    entry point given by the command line, with ``--print_config``, in this process): a wrong key or value
    fails now, naming the run, not after the first runs have trained."""
    for step in plan_experiment(exp, out, extra):
        if step.command == "compare":
            continue
        argv, drop = [], False
        for a in step.argv:  # checkpoints do not exist yet: leave them out of the check
            if drop or a in ("--ckpt_path", "--model.init_args.operator_ckpt"):
                drop = not drop
                continue
            argv.append(a)
        err = io.StringIO()
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                parse([*argv, "--print_config"])
        except SystemExit as stop:
            if stop.code not in (0, None):
                lines = [
                    x for x in err.getvalue().splitlines() if x.strip() and not x.startswith(("usage", " "))
                ]
                detail = "\n".join(lines[-8:]) or f"exit {stop.code}"
                raise ValueError(f"experiment {exp.name}: the {step.command} command of run {step.run!r} does "
                                 f"not parse:\n{detail}\n  command: neurop-diff {shlex.join(argv)}") from None  # fmt: skip


def _resolve(argv: Sequence[str], out: Path) -> list[str]:
    return [str(checkpoint_of(out / a[6:])) if a.startswith("@ckpt:") else a for a in argv]


def run_experiment(
    exp: Experiment,
    out: Path,
    extra: Sequence[str] = (),
    *,
    wandb: bool = False,
    force: bool = False,
    dry_run: bool = False,
    parse: Callable[[list[str]], None],
    execute: Callable[[list[str]], int] | None = None,
) -> Path:
    """Run every step not yet done (``force``: all); returns the comparison folder. ``parse`` checks every
    command first (:func:`check_experiment`); ``execute`` runs one ``neurop-diff`` argv (default: a fresh
    ``python -m neurop_diff`` process, so runs never share state)."""
    execute = execute or (lambda argv: subprocess.call([sys.executable, "-m", "neurop_diff", *argv]))
    steps = plan_experiment(exp, out, extra, wandb)
    check_experiment(exp, out, extra, parse=parse)
    for k, step in enumerate(steps, 1):
        head = f"== [{k}/{len(steps)}] {exp.name}: {step.command} {step.run}"
        if step.done.is_file() and not force:
            print(f"{head}: done already ({step.done}), skipped", flush=True)
            continue
        if dry_run:
            print(f"{head}\n   neurop-diff {shlex.join(step.argv)}", flush=True)
            continue
        argv = _resolve(step.argv, out)
        last = out / step.run / "fit" / "checkpoints" / "last.ckpt"
        if step.command == "fit" and last.is_file() and not force:
            head += f" (resumed from {last})"
            argv += ["--ckpt_path", str(last)]
        print(head, flush=True)
        t0 = time.perf_counter()
        code = execute(argv)
        if code:
            raise RuntimeError(f"experiment {exp.name}: `neurop-diff {step.command}` of run {step.run!r} failed "
                               f"(exit {code}); fix it and run the same command again to continue")  # fmt: skip
        if step.command == "fit":
            step.done.write_text(f"finished {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        print(f"   {step.command} {step.run}: {time.perf_counter() - t0:.0f} s", flush=True)
    return out / "comparison"
