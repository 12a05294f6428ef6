"""The one reader of checkpoint and weights files: weights only, the stage a file holds, the operator in it.

* :func:`read_checkpoint` is the only ``torch.load`` of the package: ``weights_only=True`` always (tensors and
  plain containers; no pickled object is ever built, whatever a caller asks), memory-mapped when the caller
  only peeks (``mmap=True``, zip-format files). Errors name the file and say which of two things is wrong:
  "not a checkpoint: truncated or corrupt" or "holds Python objects, refused: would execute code".
* :func:`checkpoint_kind` tells what a loaded file is: an ``OperatorModule`` or ``DiffusionModule`` training
  checkpoint, the authors' SRNO or LIIF weights (``"srno"``, ``"liif"``) or a NeurOp-Diff training checkpoint
  (``"neuropdiff"``).
* :func:`load_operator` builds the frozen operator (SRNO or LIIF) of an OperatorModule checkpoint or of the
  authors' weights; :func:`build_operator` the operator of recorded ``operator_args`` (``arch`` and sizes).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import torch

from neurop_diff.models.liif import LIIF, Operator
from neurop_diff.models.operator import SRNO
from neurop_diff.weights.liif import (
    LIIF_ARGS,
    LIIF_DEFAULTS,
    extract_liif_state_dict,
    is_liif_checkpoint,
    liif_args_from_state_dict,
    load_liif_weights,
)
from neurop_diff.weights.srno import (
    SRNO_ARGS,
    SRNO_DEFAULTS,
    extract_srno_state_dict,
    load_srno_weights,
    srno_args_from_state_dict,
)

__all__ = [
    "ARCHS",
    "STAGES",
    "CheckpointError",
    "CorruptCheckpointError",
    "UnsafeCheckpointError",
    "build_operator",
    "checkpoint_kind",
    "load_operator",
    "operator_args",
    "read_checkpoint",
]

#: The operator architectures (``arch``): class, size arguments, their defaults.
ARCHS: dict[str, tuple[type[Operator], tuple[str, ...], dict[str, int]]] = {
    "srno": (SRNO, SRNO_ARGS, SRNO_DEFAULTS),
    "liif": (LIIF, LIIF_ARGS, LIIF_DEFAULTS),
}

#: What each training checkpoint is, for error messages.
STAGES = {
    "OperatorModule": "stage 1, the neural operator: configs/operator*.yaml",
    "DiffusionModule": "stage 2, the diffusion model: configs/diffusion*.yaml",
}

# torch's weights-only unpickler names a refused class or function as "GLOBAL module.name" (pinned by
# tests/test_security.py): anything else it raises is a file that is not a pickle stream at all.
_OBJECT_MARK = re.compile(r"GLOBAL [\w.]+|Unsupported global")


class CheckpointError(ValueError):
    """A checkpoint or weights file that cannot be used; the message names the file."""


class CorruptCheckpointError(CheckpointError):
    """Truncated, corrupt, or not a ``torch.save`` file."""


class UnsafeCheckpointError(CheckpointError):
    """The file holds pickled Python objects (classes, functions): loading them would run code."""


def read_checkpoint(path: str | PathLike[str], *, mmap: bool = False) -> Any:
    """The content of a ``torch.save`` file on the CPU, weights only.

    Args:
        path: the file.
        mmap: memory-map the tensors instead of reading them (zip-format files; others are read), for callers
            that only look at a part (the hyper-parameters, one sub-model).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        CorruptCheckpointError: truncated, corrupt or not a checkpoint.
        UnsafeCheckpointError: it holds pickled objects other than tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        found = _OBJECT_MARK.search(str(err))
        if found is None:
            raise _corrupt(path, err) from err
        raise UnsafeCheckpointError(
            f"{path}: holds Python objects, refused: would execute code ({found.group(0)}); only plain weights "
            "are accepted (tensors and plain containers): re-save the weights alone, e.g. "
            "torch.save(model.state_dict(), path), in an environment you trust"
        ) from None
    except (RuntimeError, EOFError, KeyError, OSError, ValueError, IndexError) as err:
        raise _corrupt(path, err) from err


def _corrupt(path: Path, err: BaseException) -> CorruptCheckpointError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else "no details"
    return CorruptCheckpointError(
        f"{path}: not a checkpoint: truncated or corrupt (a copy or save cut short, or not a torch.save file; "
        f"{type(err).__name__}: {first})"
    )


def checkpoint_kind(obj: Any) -> str | None:
    """What a loaded checkpoint holds: ``"OperatorModule"`` / ``"DiffusionModule"`` (a neurop-diff training
    checkpoint: from the recorded class, else the parameter names), ``"neuropdiff"`` (the authors' NeurOp-Diff
    list ``[model_state, optimizer_state, epoch, step, ema_shadow]``), ``"liif"`` (the LIIF authors' weights),
    ``"srno"`` (any other dict: the authors' SRNO weights, checked when loaded), or None."""
    if isinstance(obj, (list, tuple)):
        return "neuropdiff" if obj and isinstance(obj[0], Mapping) else None
    if not isinstance(obj, Mapping):
        return None
    sd = obj.get("state_dict")
    if not isinstance(sd, Mapping):
        return "liif" if is_liif_checkpoint(obj) else "srno"
    hp = obj.get("hyper_parameters")
    class_path = hp.get("_class_path") if isinstance(hp, Mapping) else None
    if isinstance(class_path, str):
        return class_path.rsplit(".", 1)[-1]
    if any(k.startswith(("unet.", "model.unet.")) for k in sd):  # DiffusionModule.model is NeurOpDiff
        return "DiffusionModule"
    if any(k.startswith("model.") for k in sd):
        return "OperatorModule"
    return None


def stage_hint(kind: str | None, expected: str) -> str:
    """One sentence for a checkpoint of ``kind`` given where an ``expected`` one is needed ("" when they agree)."""
    if kind is None or kind == expected or kind not in STAGES:
        return ""
    return (
        f"this is a {kind} checkpoint ({STAGES[kind]}); a {expected} checkpoint "
        f"({STAGES.get(expected, 'another model')}) is expected here"
    )


def operator_args(arch: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"arch": arch, <its size arguments>}``: ``values``' entries for ``arch``, its defaults for the rest."""
    if arch not in ARCHS:
        raise ValueError(f"unknown operator arch {arch!r}; expected one of {sorted(ARCHS)}")
    _, names, defaults = ARCHS[arch]
    return {"arch": arch, **defaults, **{k: int(values[k]) for k in names if k in values}}


def build_operator(args: Mapping[str, Any]) -> Operator:
    """The operator of ``args`` (``{"arch": "srno" | "liif", sizes...}``; without ``arch``: SRNO, as recorded
    before LIIF was added), freshly initialised.

    Raises:
        ValueError: an unknown ``arch``, or a size argument that the arch does not take.
    """
    arch = args.get("arch", "srno")
    full = operator_args(arch, args)
    unknown = sorted(set(args) - set(full))
    if unknown:
        raise ValueError(
            f"operator_args {unknown} are not sizes of the {arch} operator (arch {arch!r} takes "
            f"{list(ARCHS[arch][1])})"
        )
    cls = ARCHS[arch][0]
    return cls(**{k: v for k, v in full.items() if k != "arch"})


def load_operator(path: str | PathLike[str] | Mapping[str, Any]) -> tuple[Operator, dict[str, Any]]:
    """The trained operator of an OperatorModule checkpoint (SRNO or LIIF) or of the authors' SRNO or LIIF
    weights (a file or a loaded dict): the operator (eval mode, frozen, on the CPU) and its ``operator_args``
    (``arch`` and sizes: :func:`build_operator` rebuilds it).

    Raises:
        CheckpointError: the file cannot be read (see :func:`read_checkpoint`).
        ValueError: it holds something else (e.g. a DiffusionModule checkpoint), or weights that do not fit
            the architecture it records (torch's strict-loading report).
    """
    where = "checkpoint" if isinstance(path, Mapping) else str(path)
    obj = path if isinstance(path, Mapping) else read_checkpoint(path, mmap=True)
    kind = checkpoint_kind(obj)
    if kind == "OperatorModule":
        hp = obj.get("hyper_parameters") or {}
        args = operator_args(hp.get("arch", "srno"), hp)  # no arch: made before LIIF was added, an SRNO
        model = build_operator(args)
        sd = {k[len("model.") :]: v for k, v in obj["state_dict"].items() if k.startswith("model.")}
        try:
            model.load_state_dict(sd)  # strict: torch names missing, unexpected and mis-shaped parameters
        except RuntimeError as err:
            raise ValueError(
                f"{where} does not fit the operator architecture it records (arch {args['arch']!r}): {err}"
            ) from err
    elif kind == "srno":
        args = operator_args("srno", srno_args_from_state_dict(extract_srno_state_dict(obj)))
        model = load_srno_weights(build_operator(args), obj)
    elif kind == "liif":
        try:
            args = operator_args("liif", liif_args_from_state_dict(extract_liif_state_dict(obj)))
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
        model = load_liif_weights(build_operator(args), obj)
    else:
        what = {"DiffusionModule": "diffusion (DiffusionModule)", "neuropdiff": "NeurOp-Diff (authors')"}
        raise ValueError(
            f"{where} is a {what.get(kind, 'unknown')} checkpoint; an operator checkpoint (OperatorModule, "
            "from `neurop-diff fit --config configs/operator.yaml`, or the authors' SRNO / LIIF weights) is "
            "expected here"
            + (
                "; convert the authors' file with `neurop-diff import-weights`"
                if kind == "neuropdiff"
                else ""
            )
        )
    model.eval().requires_grad_(False)
    return model, args
