"""The authors' files as plain weights in our names, for `neurop-diff import-weights` (`neurop_diff.lit.export`).

An SRNO file (`srno_weight.pth`, SRNO `epoch-*.pth`) gives the operator's weights and size; a NeurOp-Diff
training checkpoint (`step_*.pth`: `[model_state, optimizer_state, epoch, step, ema_shadow]`) gives the UNet
(the authors' configuration, condition `operator`) and the operator. Nothing here builds a LightningModule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from neurop_diff.weights.checkpoint import checkpoint_kind, read_checkpoint
from neurop_diff.weights.neuropdiff import split_neuropdiff_checkpoint
from neurop_diff.weights.srno import (
    convert_srno_state_dict,
    extract_srno_state_dict,
    srno_args_from_state_dict,
)

__all__ = ["AuthorsWeights", "read_authors_weights"]


@dataclass(frozen=True)
class AuthorsWeights:
    """``kind``: ``"srno"`` or ``"neuropdiff"``. ``srno_args``: the SRNO size. ``srno``: the SRNO state dict in
    our names. ``unet``: the UNet state dict in our names (NeurOp-Diff only; the authors' UNet = ours by
    default)."""

    kind: str
    srno_args: dict[str, int]
    srno: dict[str, Tensor]
    unet: dict[str, Tensor] | None = None


def read_authors_weights(source: str | Path, use_ema: bool = True) -> AuthorsWeights:
    """Reads and converts (strictly checked) the authors' weights in ``source``; errors name the file."""
    obj = read_checkpoint(source)
    try:
        if checkpoint_kind(obj) == "neuropdiff":
            unet_sd, srno_sd = split_neuropdiff_checkpoint(obj, use_ema=use_ema, source=str(source))
            kind = "neuropdiff"
        else:
            srno_sd, unet_sd, kind = extract_srno_state_dict(obj), None, "srno"
        args = srno_args_from_state_dict(srno_sd)
        srno = convert_srno_state_dict(srno_sd)  # checked against SRNO(**args) (on the meta device)
    except ValueError as err:
        raise ValueError(f"{source}: {err}" if str(source) not in str(err) else str(err)) from err
    return AuthorsWeights(kind, args, srno, unet_sd)
