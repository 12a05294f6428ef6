"""The authors' files as plain weights in our names, for `neurop-diff import-weights` (`neurop_diff.lit.export`).

An SRNO file (`srno_weight.pth`, SRNO `epoch-*.pth`) or a LIIF file (`edsr-baseline-liif.pth`) gives the
operator's weights and size; a NeurOp-Diff training checkpoint (`step_*.pth`: `[model_state, optimizer_state,
epoch, step, ema_shadow]`) gives the UNet (the authors' configuration, condition `operator`) and the operator.
Nothing here builds a LightningModule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from neurop_diff.weights.checkpoint import checkpoint_kind, operator_args, read_checkpoint
from neurop_diff.weights.liif import (
    convert_liif_state_dict,
    extract_liif_state_dict,
    liif_args_from_state_dict,
)
from neurop_diff.weights.neuropdiff import split_neuropdiff_checkpoint
from neurop_diff.weights.srno import (
    convert_srno_state_dict,
    extract_srno_state_dict,
    srno_args_from_state_dict,
)

__all__ = ["AuthorsWeights", "read_authors_weights"]


@dataclass(frozen=True)
class AuthorsWeights:
    """``kind``: ``"srno"``, ``"liif"`` or ``"neuropdiff"``. ``operator_args``: the operator's ``arch`` and size
    (``weights.checkpoint.build_operator``). ``operator``: its state dict in our names. ``unet``: the UNet state
    dict in our names (NeurOp-Diff only; the authors' UNet = ours by default)."""

    kind: str
    operator_args: dict[str, Any]
    operator: dict[str, Tensor]
    unet: dict[str, Tensor] | None = None


def read_authors_weights(source: str | Path, use_ema: bool = True) -> AuthorsWeights:
    """Reads and converts (strictly checked) the authors' weights in ``source``; errors name the file."""
    obj = read_checkpoint(source)
    kind = checkpoint_kind(obj)
    unet_sd = None
    try:
        if kind == "liif":
            liif_sd = extract_liif_state_dict(obj)  # refuses the unsupported LIIF variants by their args
            args = operator_args("liif", liif_args_from_state_dict(liif_sd))
            state = convert_liif_state_dict(liif_sd)  # checked against LIIF(**args) (on the meta device)
        else:
            if kind == "neuropdiff":
                unet_sd, srno_sd = split_neuropdiff_checkpoint(obj, use_ema=use_ema, source=str(source))
            else:
                srno_sd, kind = extract_srno_state_dict(obj), "srno"
            args = operator_args("srno", srno_args_from_state_dict(srno_sd))
            state = convert_srno_state_dict(srno_sd)  # checked against SRNO(**args) (on the meta device)
    except ValueError as err:
        raise ValueError(f"{source}: {err}" if str(source) not in str(err) else str(err)) from err
    return AuthorsWeights(kind, args, state, unet_sd)
