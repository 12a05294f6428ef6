"""`neurop-diff import-weights`: the authors' files as neurop-diff (Lightning) checkpoints.

An SRNO or LIIF file becomes an OperatorModule checkpoint (arch `srno` / `liif`); a NeurOp-Diff training
checkpoint a DiffusionModule checkpoint with the authors' UNet configuration (condition `operator`). Both load
with `--ckpt_path`, with `*.load_from_checkpoint`, and (the operator) as `model.init_args.operator_ckpt`. The
conversion itself is `neurop_diff.weights.checkpoint.Checkpoint.authors_weights` (no Lightning there); this
builds the modules and writes the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from neurop_diff.files import atomic_write
from neurop_diff.lit.diffusion import DiffusionModule
from neurop_diff.lit.operator import OperatorModule
from neurop_diff.weights.checkpoint import read_authors_weights

__all__ = ["import_weights", "lightning_checkpoint"]


def lightning_checkpoint(module: L.LightningModule) -> dict[str, Any]:
    """The minimal Lightning checkpoint of a module: weights, hyper-parameters (with the class path that
    `--ckpt_path` reads) and the version marker Lightning's loader expects."""
    cls = type(module)
    hparams = {**dict(module.hparams), "_class_path": f"{cls.__module__}.{cls.__qualname__}"}
    return {
        "state_dict": module.state_dict(),
        "hyper_parameters": hparams,
        "pytorch-lightning_version": L.__version__,
        "epoch": 0,
        "global_step": 0,
    }


def import_weights(source: str | Path, out: str | Path, use_ema: bool = True) -> Path:
    """Converts the authors' weights in `source` into a neurop-diff checkpoint at `out`; returns `out`."""
    out = Path(out)
    weights = read_authors_weights(source, use_ema=use_ema)
    if weights.unet is not None:  # NeurOp-Diff
        module: L.LightningModule = DiffusionModule(operator_args=weights.operator_args, condition="operator")
        module.unet.load_state_dict(weights.unet)
        module.operator.load_state_dict(weights.operator)
    else:  # SRNO or LIIF: an OperatorModule of that arch
        module = OperatorModule(**weights.operator_args)
        module.model.load_state_dict(weights.operator)
    with atomic_write(out) as tmp:  # never a half-written checkpoint under the final name
        torch.save(lightning_checkpoint(module), tmp)
    return out
