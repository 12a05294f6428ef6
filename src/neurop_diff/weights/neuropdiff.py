"""Read NeurOp-Diff training checkpoints (``step_<k>.pth``, ``step_best.pth``, the released weights).

Layout (``/work/shared/reference/state-dicts.md``): a Python list
``[model_state, optimizer_state, epoch, step, ema_shadow]``; ``model_state`` holds ``Unet.<name>`` and
``srno.<name>``; ``ema_shadow`` holds the EMA copy of every parameter that required grad (no buffers), with
the same names. Inference uses the EMA weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from neurop_diff.models.unet import UNet
from neurop_diff.weights.reader import read_checkpoint
from neurop_diff.weights.unet import UNET_PREFIX, convert_unet_state_dict

__all__ = ["SRNO_PREFIX", "load_neuropdiff_checkpoint", "split_neuropdiff_checkpoint"]

SRNO_PREFIX = "srno."


def load_neuropdiff_checkpoint(
    path: str | Path, use_ema: bool = True, unet: UNet | None = None
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(unet_state_dict, srno_state_dict)`` from a NeurOp-Diff checkpoint file.

    The UNet dict is in our names (loads into ``unet``, default ``UNet()``); the SRNO dict is in the authors'
    names without the ``srno.`` prefix, ready for ``convert_srno_state_dict``. With ``use_ema`` the EMA
    weights replace the raw ones wherever the shadow has them (buffers come from the model state).
    """
    return split_neuropdiff_checkpoint(read_checkpoint(path, mmap=True), use_ema, unet, source=str(path))


def split_neuropdiff_checkpoint(
    obj: Any, use_ema: bool = True, unet: UNet | None = None, source: str = "checkpoint"
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """:func:`load_neuropdiff_checkpoint` on an already loaded object (the list described above)."""
    if not isinstance(obj, (list, tuple)) or not obj or not isinstance(obj[0], Mapping):
        raise ValueError(
            f"{source}: expected a NeurOp-Diff checkpoint, a list [model_state, optimizer_state, epoch, "
            f"step, ema_shadow], got {type(obj).__name__}"
        )
    state = dict(obj[0])
    if use_ema:
        shadow = obj[4] if len(obj) >= 5 else None
        if not isinstance(shadow, Mapping):
            raise ValueError(
                f"{source}: no EMA weights (5th list entry, a dict) in this checkpoint; "
                "load it with use_ema=False to use the raw weights"
            )
        state.update({k: v for k, v in shadow.items() if k in state})

    unet_sd, srno_sd, unknown = {}, {}, []
    for name, value in state.items():
        name = name.removeprefix("module.")  # saved from a DataParallel wrapper
        if name.startswith(UNET_PREFIX):
            unet_sd[name.removeprefix(UNET_PREFIX)] = value
        elif name.startswith(SRNO_PREFIX):
            srno_sd[name.removeprefix(SRNO_PREFIX)] = value
        else:
            unknown.append(name)
    if unknown or not unet_sd or not srno_sd:
        raise ValueError(
            f"{source}: model state must hold 'Unet.*' and 'srno.*' keys only; found {len(unet_sd)} Unet, "
            f"{len(srno_sd)} srno and {len(unknown)} other keys ({', '.join(unknown[:5])})"
        )
    try:
        return convert_unet_state_dict(unet_sd, unet), srno_sd
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err
