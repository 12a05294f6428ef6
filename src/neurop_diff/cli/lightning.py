"""`neurop-diff fit|validate|test|predict`: the one LightningCLI, its parser with "did you mean" hints, and
checkpoint-aware config (`--ckpt_path`'s hyper-parameters fill in what the user did not type)."""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import itertools
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from neurop_diff import compat
from neurop_diff.checkpointing import ensure_safe_checkpointing, last_checkpoint
from neurop_diff.data.datamodule import SRDataModule
from neurop_diff.lit.base import SRTask, plain_value
from neurop_diff.loggers import WandbLogger
from neurop_diff.weights.checkpoint import Checkpoint


def _accepted_keys(class_path: str) -> list[str]:
    """The constructor arguments of `class_path` (for "did you mean" hints); [] when it cannot be imported."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    except (ImportError, AttributeError, ValueError, TypeError):
        return []


class NeuropDiffParser(LightningArgumentParser):
    """Adds "did you mean" to jsonargparse's errors about keys that do not exist, and names the config file
    of a YAML syntax error. A bad init argument of a class_path (model, data, logger, ...) is one line naming
    the whole key, what was expected and the value given, instead of jsonargparse's Union error (each type's
    error, then a dump of the whole value)."""

    def error(self, message: str, ex: Exception | None = None) -> Any:
        shown = compat.union_error_line(ex) if self.exit_on_error else None
        return super().error(self._with_hints(message, shown), ex)

    def _with_hints(self, message: str, shown: str | None = None) -> str:
        """`shown` (default `message`) and the hints found in `message`."""
        hints = []
        # A wrong init_args key of a class_path (model, data, callbacks, ...).
        for class_path, key in compat.UNKNOWN_INIT_ARG.findall(message):
            close = difflib.get_close_matches(key.rsplit(".", 1)[-1], _accepted_keys(class_path), n=1)
            if close:
                hints.append(f"'{key}' is not an argument of {class_path}: did you mean '{close[0]}'?")
        # A wrong top-level or trainer key (on the command line or in a config file).
        options = compat.parser_options(self)
        for groups in compat.UNKNOWN_OPTION.findall(message):
            key = next(filter(None, groups), "")
            close = difflib.get_close_matches(key, options, n=1, cutoff=0.75)
            if key and close:
                hints.append(f"'{key}' does not exist: did you mean '{close[0]}'?")
        return (shown or message) + "".join(f"\n  hint: {h}" for h in hints)


@compat.skip_lightning_ckpt_merge
class NeuropDiffCLI(LightningCLI):
    """LightningCLI with `class_path` configs for the model (OperatorModule / DiffusionModule) and data.

    On top of LightningCLI: `--ckpt_path` (an explicit file, or `fit --ckpt_path last`: the newest last.ckpt of
    the run) is read safely (weights only) with clear errors (truncated file, pickled code, the checkpoint of
    the other stage); its hyper-parameters fill in what the user did not type (command line or config file),
    and an architecture setting typed differently from the checkpoint is an error naming both values; every
    trainer writes checkpoints atomically and saves last.ckpt on SIGTERM (`neurop_diff.checkpointing`);
    unknown config keys get a "did you mean" hint.
    """

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # Kept to tell what the user typed (parsed again without defaults when a checkpoint is given).
        self._typed_args = (
            list(sys.argv[1:] if args is None else args) if not isinstance(args, dict) else args
        )
        if isinstance(self._typed_args, list):
            _check_config_files(parser, self._typed_args)
        super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand) if self.subcommand else None
        if config is None:
            return
        if self.subcommand == "fit" and config.get("ckpt_path") == "last":
            found = last_checkpoint(config)
            if found is not None:
                config.ckpt_path = str(found)
                rank_zero_info(f"--ckpt_path last: resuming from {found}")
        ckpt_path = config.get("ckpt_path")
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry") and "://" not in str(ckpt_path):
            self._apply_checkpoint(Path(ckpt_path))

    def _apply_checkpoint(self, path: Path) -> None:
        """Checks the checkpoint at `path` and fills the model's config from its hyper-parameters where the
        user typed nothing (rule in the class docstring)."""
        sub = self.subcommand
        model_cfg = self.config[sub].get("model")
        class_path = str(model_cfg.get("class_path", "")) if model_cfg is not None else ""
        # The config's model class (the stage it builds) must be the checkpoint's.
        ckpt = Checkpoint.read(path).require(class_path.rsplit(".", 1)[-1])
        hparams = {k: v for k, v in ckpt.hparams.items() if k != "_instantiator"}
        class_path = str(hparams.pop("_class_path", "") or class_path)
        if not hparams or not class_path:
            return
        cls = _import(class_path)
        accepted = set(_accepted_keys(class_path))
        current = dict(vars(model_cfg.get("init_args") or {})) if model_cfg is not None else {}
        typed = _typed_init_args(self.parser, self._typed_args, sub)
        # The settings that define the checkpoint's weights (an SRTask's; another class: none).
        weight_keys = getattr(cls, "weight_hparams", lambda _: frozenset())(hparams)
        conflicts = [
            f"{k}: checkpoint {hparams[k]!r}, given {current[k]!r}"
            for k in sorted(typed & set(weight_keys) & set(hparams))
            if current.get(k) is not None and plain_value(current[k]) != plain_value(hparams[k])
        ]
        if conflicts:
            raise ValueError(
                f"{path} was trained with other architecture settings than the config / command line give "
                f"({'; '.join(conflicts)}): these set the weights' shapes, so they must match the checkpoint; "
                "drop them, set the checkpoint's values, or use the run's own config.yaml"
            )
        fill = {
            k: v
            for k, v in hparams.items()
            if k in accepted and (k not in typed or (k in weight_keys and current.get(k) is None))
        }
        try:
            self.config = self.parser.parse_object(
                {sub: {"model": {"class_path": class_path, "init_args": fill}}}, self.config
            )
        except SystemExit:
            sys.stderr.write(f"Parsing the hyper-parameters stored in {path} failed\n")
            raise

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:
            # A constructor's error (a bad init argument) comes wrapped in jsonargparse's Union error: its own.
            inner = compat.class_error(err)
            if inner is None:
                raise
            raise inner from None

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        ensure_safe_checkpointing(trainer)
        return trainer

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        data_hp = dict(getattr(self.datamodule, "hparams", {}) or {})
        clash = sorted(k for k in data_hp if k in self.model.hparams and data_hp[k] != self.model.hparams[k])
        if clash and self.datamodule is not None:
            # Lightning refuses to log model and data hyper-parameters that share a key with other values
            # (e.g. `--model.init_args.seed 1` with the data's seed 0): log the model's; config.yaml has all.
            self.datamodule.save_hyperparameters(data_hp, logger=False)
            rank_zero_info(
                f"data hyper-parameters {clash} differ from the model's: only the model's are logged"
            )
        # W&B runs are named from the experiment (stage, dataset, condition, scales) before they start.
        hparams = {**dict(getattr(self.datamodule, "hparams", {})), **dict(self.model.hparams)}
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.set_run_names(hparams)


def _check_config_files(parser: argparse.ArgumentParser, args: list[str]) -> None:
    """Exits with one line naming the file when a `--config` file is not valid YAML (jsonargparse's own
    message names neither the file nor the option, after the whole usage text)."""
    import yaml

    files = [b for a, b in itertools.pairwise(args) if a == "--config"]
    files += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for name in files:
        path = Path(name)
        if not path.is_file():
            continue  # jsonargparse says it
        try:
            yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            parser.exit(2, f"neurop-diff: error: --config {path}: YAML syntax error{where}: {problem}\n")


def _import(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _typed_init_args(parser: LightningArgumentParser, args: Any, subcommand: str) -> set[str]:
    """The model init arguments the user gave (command line or config files), not those left at defaults."""
    typed = (
        parser.parse_object(args, defaults=False)
        if isinstance(args, dict)
        else parser.parse_args(args, defaults=False)
    )
    model = typed.get(subcommand, {}).get("model") if typed.get(subcommand) else None
    init_args = model.get("init_args") if model is not None and hasattr(model, "get") else None
    return set(vars(init_args)) if init_args is not None else set()


def lightning_cli(args: list[str] | None) -> NeuropDiffCLI:
    """Runs LightningCLI (fit/validate/test/predict) on `args` (None: sys.argv, as from the console)."""
    return NeuropDiffCLI(
        SRTask,
        SRDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_class=NeuropDiffParser,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"description": "neurop-diff: continuous super-resolution of remote-sensing images."},
        args=args,
    )
