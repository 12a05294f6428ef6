"""The `neurop-diff` command: LightningCLI (fit/validate/test/predict) plus `import-weights`."""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from neurop_diff.checkpointing import ensure_safe_checkpointing, find_resume_version
from neurop_diff.data.datamodule import SRDataModule
from neurop_diff.lit.base import STAGES, SRTask, checkpoint_kind
from neurop_diff.loggers import WandbLogger
from neurop_diff.weights.io import load_checkpoint_file

EXTRA_COMMANDS = {
    "import-weights": "convert the authors' SRNO / NeurOp-Diff weights into a neurop-diff checkpoint",
    "upscale": "upscale images or GeoTIFF scenes at any scale with a checkpoint of either stage",
}


def _accepted_keys(class_path: str) -> list[str]:
    """The constructor arguments of `class_path` (for "did you mean" hints); [] when it cannot be imported."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    except (ImportError, AttributeError, ValueError, TypeError):
        return []


class NeuropDiffParser(LightningArgumentParser):
    """Adds "did you mean" to jsonargparse's errors about keys that do not exist."""

    def error(self, message: str, ex: Exception | None = None) -> Any:
        return super().error(self._with_hints(message), ex)

    def _with_hints(self, message: str) -> str:
        hints = []
        # A wrong init_args key of a class_path (model, data, callbacks, ...).
        for class_path, key in re.findall(
            r"given class_path '([\w.]+)':\s+(?:Key|Option) '([\w.]+)' is not (?:accepted|expected)", message
        ):
            close = difflib.get_close_matches(key.rsplit(".", 1)[-1], _accepted_keys(class_path), n=1)
            if close:
                hints.append(f"'{key}' is not an argument of {class_path}: did you mean '{close[0]}'?")
        # A wrong top-level or trainer key (on the command line or in a config file).
        options = self._all_options()
        keys = re.findall(r"unrecognized arguments: --([\w.]+)", message)
        keys += re.findall(
            r"(?:Key|option) '([\w.]+)' is not expected|does not accept option '([\w.]+)'", message
        )
        for key in (k if isinstance(k, str) else next(filter(None, k), "") for k in keys):
            close = difflib.get_close_matches(key, options, n=1, cutoff=0.75)
            if key and close:
                hints.append(f"'{key}' does not exist: did you mean '{close[0]}'?")
        return message + "".join(f"\n  hint: {h}" for h in hints)

    def _all_options(self) -> list[str]:
        """Every `--key` of this parser and its subcommands, without the dashes."""
        found, parsers = [], [self]
        while parsers:
            parser = parsers.pop()
            for action in parser._actions:
                found += [o[2:] for o in action.option_strings if o.startswith("--")]
                if isinstance(action, argparse._SubParsersAction):
                    parsers += list(action.choices.values())
        return found


class NeuropDiffCLI(LightningCLI):
    """LightningCLI with `class_path` configs for the model (OperatorModule / DiffusionModule) and data.

    On top of LightningCLI: `--ckpt_path` files are read safely (weights only) with clear errors (truncated
    file, the checkpoint of the other stage); `fit --ckpt_path last` continues in the run folder holding the
    newest last.ckpt; every trainer writes checkpoints atomically and saves last.ckpt on SIGTERM
    (`neurop_diff.checkpointing`); unknown config keys get a "did you mean" hint.
    """

    def _parse_ckpt_path(self) -> None:
        # Replaces LightningCLI's: the same hyper-parameter merge, after checks with messages a person can act on.
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        ckpt = load_checkpoint_file(ckpt_path)
        if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
            raise ValueError(
                f"{ckpt_path} is not a neurop-diff training checkpoint (no 'state_dict'); convert the authors' "
                "weights first with `neurop-diff import-weights <file> --out <ckpt>`"
            )
        expected = str(self.config[subcommand].get("model", {}).get("class_path", "")).rsplit(".", 1)[-1]
        kind = checkpoint_kind(ckpt)
        if kind and expected and kind != expected:
            hint = (
                "; to train a diffusion model guided by this operator, pass it as "
                "--model.init_args.operator_ckpt instead"
                if kind == "OperatorModule"
                else ""
            )
            raise ValueError(
                f"{ckpt_path} is a {kind} checkpoint ({STAGES.get(kind, 'another model')}), but the config "
                f"builds a {expected} ({STAGES.get(expected, 'another model')}): use the config of the "
                f"checkpoint's stage{hint}"
            )
        hparams = dict(ckpt.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        try:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except SystemExit:
            sys.stderr.write(f"Parsing the hyper-parameters stored in {ckpt_path} failed\n")
            raise

    def before_instantiate_classes(self) -> None:
        if self.subcommand == "fit" and self.config.fit.get("ckpt_path") == "last":
            self._continue_last_run(self.config.fit)

    @staticmethod
    def _continue_last_run(config: Any) -> None:
        """`fit --ckpt_path last` with an unversioned CSV/TensorBoard logger: Lightning would look for last.ckpt
        in the new run's (empty) version folder and start from scratch; take the newest one of this run name
        instead. The resumed run logs into a new version folder (a CSV logger replaces the metrics.csv of a
        reused one) and the next `--ckpt_path last` finds its checkpoints, the newest."""
        logger = config.trainer.get("logger")
        args = logger.get("init_args") if hasattr(logger, "get") else None
        if args is None or args.get("version") is not None or args.get("save_dir") is None:
            return
        found = find_resume_version(args.get("save_dir"), args.get("name"))
        if found is not None:
            config.ckpt_path = str(found[1])
            rank_zero_info(f"--ckpt_path last: resuming from {found[1]}")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        ensure_safe_checkpointing(trainer)
        return trainer

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        # W&B runs are named from the experiment (stage, dataset, condition, scales) before they start.
        hparams = {**dict(getattr(self.datamodule, "hparams", {})), **dict(self.model.hparams)}
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.set_run_names(hparams)


def _cli(args: list[str] | None) -> NeuropDiffCLI:
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


def _import_weights(argv: list[str]) -> None:
    from neurop_diff.weights.export import import_weights

    parser = argparse.ArgumentParser(
        prog="neurop-diff import-weights",
        description=(
            "Convert the authors' published weights into a neurop-diff checkpoint that `--ckpt_path` and "
            "`model.init_args.operator_ckpt` accept. SRNO files (srno_weight.pth, SRNO epoch-*.pth) become an "
            "OperatorModule checkpoint; NeurOp-Diff training checkpoints (step_*.pth) a DiffusionModule one."
        ),
    )
    parser.add_argument("source", type=Path, help="the authors' .pth file")
    parser.add_argument("--out", type=Path, required=True, help="the .ckpt file to write")
    parser.add_argument(
        "--raw", action="store_true", help="NeurOp-Diff: take the raw weights instead of the EMA"
    )
    ns = parser.parse_args(argv)
    try:
        written = import_weights(ns.source, ns.out, use_ema=not ns.raw)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"neurop-diff import-weights: error: {err}\n")
    print(f"wrote {written}")


def _upscale(argv: list[str]) -> None:
    from neurop_diff.inference.cli import upscale_main

    upscale_main(argv)


def main(args: list[str] | None = None) -> None:
    """Entry point of `neurop-diff`; `args` defaults to sys.argv[1:] (tests pass a list)."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in EXTRA_COMMANDS:
        {"import-weights": _import_weights, "upscale": _upscale}[argv[0]](argv[1:])
        return
    if argv and argv[0] in ("-h", "--help"):
        extra = "\n".join(f"  {name:<16}{text}" for name, text in EXTRA_COMMANDS.items())
        print(f"Further commands (outside LightningCLI):\n{extra}\n")
    _cli(argv)


if __name__ == "__main__":
    main()
