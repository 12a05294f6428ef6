"""The `neurop-diff` command: LightningCLI (fit/validate/test/predict) plus `import-weights`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from neurop_diff.data.datamodule import SRDataModule
from neurop_diff.lit.base import SRTask
from neurop_diff.loggers import WandbLogger

EXTRA_COMMANDS = {
    "import-weights": "convert the authors' SRNO / NeurOp-Diff weights into a neurop-diff checkpoint",
}


class NeuropDiffCLI(LightningCLI):
    """LightningCLI with `class_path` configs for the model (OperatorModule / DiffusionModule) and data."""

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


def main(args: list[str] | None = None) -> None:
    """Entry point of `neurop-diff`; `args` defaults to sys.argv[1:] (tests pass a list)."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in EXTRA_COMMANDS:
        {"import-weights": _import_weights}[argv[0]](argv[1:])
        return
    if argv and argv[0] in ("-h", "--help"):
        extra = "\n".join(f"  {name:<16}{text}" for name, text in EXTRA_COMMANDS.items())
        print(f"Further commands (outside LightningCLI):\n{extra}\n")
    _cli(argv)


if __name__ == "__main__":
    main()
