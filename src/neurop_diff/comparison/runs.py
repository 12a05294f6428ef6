"""A run's recorded results for `neurop-diff compare`: its ``results/<stage>/metrics.csv`` and the method
named from its ``config.yaml`` (LightningCLI) or ``hparams.yaml``. Pure (no Lightning).

The csv is the metrics callback's (``evaluation/report.py``): one row per method and scale with its ``ood``
flag (scale above the training range), ``n_images`` and the metric ``convention``; its module's own method
is listed last at each scale (bicubic, extra rows, own).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from neurop_diff.evaluation.convention import format_scale

# The realism measures (evaluation/realism.py) after the distortion ones; a results csv written before them
# (or a run without them) lacks their columns: they read as None ('-' in the tables).
REALISM = ("lr_psnr", "swd_l0", "swd_l1", "swd_l2", "lsd_hi", "seed_std")
METRICS = ("psnr", "ssim", "lpips", "hf_share", "hf_psnr", "hf_ssim", *REALISM)
_REQUIRED = ("method", "scale", "psnr", "ssim", "n_images", "convention")


def scale_key(scale: float | str) -> float:
    """Scales compare as written in results (two decimals): 2.5, "2.50" and 2.5000001 are one scale."""
    return float(format_scale(float(scale)))


@dataclass
class Run:
    """One run's results. `label` names its rows' source ("diffusion/x0_res"); `method` its own row."""

    path: Path
    csv: Path
    label: str
    method: str
    own: str  # the method key of its own row in metrics.csv ("operator", "diffusion")
    rows: list[dict]
    convention: str
    dataset: str | None = None
    scale_max: float | None = None
    wandb_project: str | None = None  # the project of its WandbLogger, when it had one


def find_results(path: Path, stage: str = "test") -> tuple[Path, Path]:
    """(run directory, metrics.csv) from a run directory, its ``results/<stage>`` folder or the csv itself."""
    path = Path(path)
    expected = (
        f"a run directory holding results/{stage}/metrics.csv (written by `neurop-diff {stage}` with the "
        f"SRMetrics callback), its results/{stage} folder or that metrics.csv"
    )
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory; expected {expected}")
    if path.is_file():
        csv_path = path
    elif (path / "metrics.csv").is_file() and path.parent.name == "results":
        csv_path = path / "metrics.csv"
    else:
        csv_path = path / "results" / stage / "metrics.csv"
        if not csv_path.is_file():
            other = sorted(p.parent.name for p in path.glob("results/*/metrics.csv"))
            found = [*path.glob("*/results/*/metrics.csv"), *path.glob("*/*/results/*/metrics.csv")]
            below = sorted(f"{p.parents[2]} ({p.parent.name})" for p in found)
            hint = f"; it has results for: {', '.join(other)} (--stage)" if other else ""
            hint += f"; runs below it: {', '.join(below[:6])}" if below else ""
            raise FileNotFoundError(f"{path}: no {csv_path.relative_to(path)}; expected {expected}{hint}")
    run_dir = csv_path.parent.parent.parent if csv_path.parent.parent.name == "results" else csv_path.parent
    return run_dir, csv_path


def read_results_csv(path: Path) -> list[dict]:
    """The rows of a results metrics.csv: scale and metrics as float (None when empty or the column is
    absent), ood as bool."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path} is not a results table (no column {', '.join(missing)}; it has "
                f"{', '.join(reader.fieldnames or []) or 'none'}): expected results/<stage>/metrics.csv, "
                "not the logger's metrics.csv"
            )
        rows = []
        for raw in reader:
            row: dict[str, Any] = {"method": raw["method"], "scale": scale_key(raw["scale"])}
            row["ood"] = str(raw.get("ood", "")).strip().lower() == "true"
            row["n_images"] = int(float(raw["n_images"]))
            row["convention"] = raw["convention"]
            for k in (*METRICS, "hf_share_hr"):
                v = (raw.get(k) or "").strip()
                row[k] = float(v) if v and v.lower() not in ("none", "nan", "n/a") else None
            rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no results rows")
    return rows


class _Loader(yaml.SafeLoader):
    """YAML that reads Python-tagged values (tuples in hparams.yaml) as plain lists instead of failing."""


_Loader.add_multi_constructor(
    "tag:yaml.org,2002:python/",
    lambda loader, suffix, node: (
        loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else None
    ),
)


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """{"class": model class name or None, "model": init args, "data": init args, "loggers": [class_path,
    init args]} from ``config.yaml``, else ``hparams.yaml`` (flat: model and data together); {} when neither."""
    for name in ("config.yaml", "hparams.yaml"):
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            cfg = yaml.load(path.read_text(), Loader=_Loader) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML ({err})") from err
        if not isinstance(cfg, dict):
            continue
        if isinstance(cfg.get("model"), dict):
            model, data = cfg["model"], cfg.get("data") or {}
            loggers = (cfg.get("trainer") or {}).get("logger")
            loggers = loggers if isinstance(loggers, list) else [loggers]
            return {
                "class": str(model.get("class_path", "")).rsplit(".", 1)[-1] or None,
                "model": model.get("init_args") or {},
                "data": data.get("init_args") or {} if isinstance(data, dict) else {},
                "loggers": [
                    (str(lg.get("class_path", "")), lg.get("init_args") or {})
                    for lg in loggers
                    if isinstance(lg, dict)
                ],
            }
        kind = "DiffusionModule" if "condition" in cfg else "OperatorModule" if "width" in cfg else None
        return {"class": kind, "model": cfg, "data": cfg, "loggers": []}
    return {}


def describe_method(config: dict[str, Any], own: str) -> str:
    """The run's own method, e.g. "diffusion (x0, residual, condition operator)" or "operator (srno)"."""
    args = config.get("model") or {}
    if config.get("class") == "DiffusionModule" or (not config and own == "diffusion"):
        parts = [str(args.get("prediction", "eps"))] + (["residual"] if args.get("residual") else [])
        parts.append(f"condition {args.get('condition', 'operator')}")
        return f"diffusion ({', '.join(parts)})"
    if config.get("class") == "OperatorModule":
        return f"operator ({args.get('arch', 'srno')})"
    return own


def load_run(spec: str | Path, stage: str = "test", label: str | None = None) -> Run:
    """A run from a path (``RUN_DIR=label`` names its rows `label`); see `find_results` for the path."""
    spec = str(spec)
    if label is None and not Path(spec).exists() and "=" in spec:
        spec, label = spec.rsplit("=", 1)
    run_dir, csv_path = find_results(Path(spec), stage)
    rows = read_results_csv(csv_path)
    conventions = sorted({r["convention"] for r in rows})
    if len(conventions) > 1:
        raise ValueError(f"{csv_path} mixes metric conventions: {' | '.join(conventions)}")
    config = read_run_config(run_dir)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    first = [r["method"] for r in rows if r["scale"] == rows[0]["scale"]]
    wanted = {"DiffusionModule": "diffusion", "OperatorModule": "operator"}.get(config.get("class") or "")
    # The writer lists the module's own method last at every scale (bicubic, extra rows, own).
    own = wanted if wanted in methods else first[-1]
    wandb_project = next(
        (str(a.get("project") or "neurop-diff") for c, a in config.get("loggers", []) if "Wandb" in c), None
    )
    scale_max = (config.get("data") or {}).get("scale_max")
    return Run(
        path=run_dir,
        csv=csv_path,
        label="/".join(run_dir.resolve().parts[-2:]),
        method=label or describe_method(config, own),
        own=own,
        rows=rows,
        convention=conventions[0],
        dataset=(config.get("data") or {}).get("dataset"),
        scale_max=float(scale_max) if scale_max is not None else None,
        wandb_project=wandb_project,
    )


def load_runs(specs: list[str], stage: str = "test", labels: list[str] | None = None) -> list[Run]:
    """`load_run` of each spec (`labels`, when given, name their rows); runs with the same short label
    (the last two folders) are labelled by their full path instead."""
    if labels and len(labels) != len(specs):
        raise ValueError(f"--labels gives {len(labels)} labels for {len(specs)} runs: give one per run")
    runs = [load_run(s, stage, lab) for s, lab in zip(specs, labels or [None] * len(specs), strict=True)]
    short = [r.label for r in runs]
    for r in runs:
        if short.count(r.label) > 1:
            r.label = str(r.path)
    return runs
