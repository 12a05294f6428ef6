"""What a checkpoint or weights file holds: its stage, the operator in it (read by ``weights/reader.py``).

* :func:`read_checkpoint` (re-exported from ``weights/reader.py``) is the only ``torch.load`` of the package.
* :func:`checkpoint_kind` tells what a loaded file is: an ``OperatorModule`` or ``DiffusionModule`` training
  checkpoint, the authors' SRNO or LIIF weights (``"srno"``, ``"liif"``) or a NeurOp-Diff training checkpoint
  (``"neuropdiff"``).
* :class:`Checkpoint`: one file read once, its kind, recorded hyper-parameters and the plain models in it
  (the operator, NeurOp-Diff, the sampling options), built without Lightning: what inference loads.
* :func:`load_operator` builds the frozen operator (SRNO or LIIF) of an OperatorModule checkpoint or of the
  authors' weights; :func:`build_operator` the operator of recorded ``operator_args`` (``arch`` and sizes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from typing import Any

from neurop_diff.diffusion.options import SamplingOptions
from neurop_diff.models.build import neuropdiff_from_hparams
from neurop_diff.models.liif import LIIF
from neurop_diff.models.neuropdiff import NeurOpDiff
from neurop_diff.models.operator import Operator
from neurop_diff.models.srno import SRNO
from neurop_diff.weights.liif import (
    LIIF_ARGS,
    LIIF_DEFAULTS,
    extract_liif_state_dict,
    is_liif_checkpoint,
    liif_args_from_state_dict,
    load_liif_weights,
)
from neurop_diff.weights.reader import (
    CheckpointError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    read_checkpoint,
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
    "Checkpoint",
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
        sd = _sub_state(obj["state_dict"], "model.")
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


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """One checkpoint or weights file, read once (weights only, memory-mapped): ``kind`` (see
    :func:`checkpoint_kind`), the recorded hyper-parameters and the plain models in it, on the CPU in eval mode.
    The one place that turns a file into models: inference needs no LightningModule."""

    source: str
    content: Mapping[str, Any]
    kind: str | None

    @classmethod
    def read(cls, path: str | PathLike[str]) -> Checkpoint:
        obj = read_checkpoint(path, mmap=True)
        return cls(str(path), obj if isinstance(obj, Mapping) else {}, checkpoint_kind(obj))

    @property
    def hparams(self) -> dict[str, Any]:
        """The training module's hyper-parameters ({} for the authors' weights)."""
        return dict(self.content.get("hyper_parameters") or {})

    @property
    def data_hparams(self) -> dict[str, Any]:
        """The datamodule's hyper-parameters ({} when not recorded)."""
        return dict(self.content.get("datamodule_hyper_parameters") or {})

    def operator(self) -> Operator:
        """The trained operator: of an OperatorModule checkpoint, the authors' SRNO / LIIF weights, or the one
        stored inside a DiffusionModule checkpoint."""
        if self.kind != "DiffusionModule":
            return load_operator(self.content)[0]
        args = self.hparams.get("operator_args")
        if not args:
            raise ValueError(f"{self.source} has no operator (a diffusion model with the bicubic condition)")
        operator = build_operator(args)  # only the operator: the UNet is neither built nor loaded
        operator.load_state_dict(_sub_state(self.content["state_dict"], "model.operator."))
        return operator.eval()

    def neuropdiff(self) -> NeurOpDiff:
        """NeurOp-Diff of a DiffusionModule checkpoint (its stored weights: EMA weights when trained with EMA)."""
        if self.kind != "DiffusionModule":
            hint = (
                stage_hint(self.kind, "DiffusionModule")
                or f"{self.source} is not a DiffusionModule checkpoint"
            )
            raise ValueError(hint)
        hp = self.hparams
        operator = build_operator(hp["operator_args"]) if hp.get("operator_args") else None
        model = neuropdiff_from_hparams(hp, operator)
        state = _sub_state(self.content["state_dict"], "model.")
        try:
            model.load_state_dict(state)  # strict
        except RuntimeError as err:
            raise ValueError(
                f"{self.source} does not fit the model its hyper-parameters describe: {err}"
            ) from err
        return model.eval()

    def sampling(self, **overrides: Any) -> SamplingOptions:
        """The sampling options the checkpoint records, with ``overrides`` (None values ignored) on top."""
        return SamplingOptions.from_hparams(self.hparams, **overrides)


def _sub_state(state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of ``state_dict`` under ``prefix``, the prefix removed (a sub-module's state dict)."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
