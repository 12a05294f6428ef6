"""`neurop-diff import-weights`: the authors' files as neurop-diff (Lightning) checkpoints.

An SRNO file (`srno_weight.pth`, SRNO `epoch-*.pth`) becomes an OperatorModule checkpoint; a NeurOp-Diff
training checkpoint (`step_*.pth`: `[model_state, optimizer_state, epoch, step, ema_shadow]`) a DiffusionModule
checkpoint with the authors' UNet configuration (condition `operator`). Both load with `--ckpt_path`, with
`*.load_from_checkpoint`, and (the operator) as `model.init_args.operator_ckpt`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import torch

from neurop_diff.weights.io import load_checkpoint_file
from neurop_diff.weights.neuropdiff import split_neuropdiff_checkpoint
from neurop_diff.weights.srno import extract_srno_state_dict, load_srno_weights, srno_args_from_state_dict


def lightning_checkpoint(module: L.LightningModule) -> dict[str, Any]:
    """The minimal Lightning checkpoint of a module: weights, hyper-parameters (with the class path that
    LightningCLI's `--ckpt_path` reads) and the version marker Lightning's loader expects."""
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
    source, out = Path(source), Path(out)
    obj = load_checkpoint_file(source)
    try:
        module = _module_from_authors(obj, use_ema, str(source))
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save(lightning_checkpoint(module), tmp)
    os.replace(tmp, out)  # never a half-written checkpoint under the final name
    return out


def _module_from_authors(obj: Any, use_ema: bool, source: str) -> L.LightningModule:
    from neurop_diff.lit.diffusion import DiffusionModule
    from neurop_diff.lit.operator import OperatorModule

    if isinstance(obj, (list, tuple)):
        # The authors' UNet configuration is UNet's (and DiffusionModule's) default, which split_ checks against.
        unet_sd, srno_sd = split_neuropdiff_checkpoint(obj, use_ema=use_ema, source=source)
        module = DiffusionModule(operator_args=srno_args_from_state_dict(srno_sd), condition="operator")
        module.unet.load_state_dict(unet_sd)
        load_srno_weights(module.operator, srno_sd)
    else:
        module = OperatorModule(**srno_args_from_state_dict(extract_srno_state_dict(obj)))
        load_srno_weights(module.model, obj)
    return module
