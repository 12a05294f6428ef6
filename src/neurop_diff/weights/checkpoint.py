"""What a checkpoint or weights file holds: its stage, the operator in it (read by ``weights/reader.py``).

* :func:`read_checkpoint` (re-exported from ``weights/reader.py``) is the only ``torch.load`` of the package.
* :func:`checkpoint_kind` tells what a loaded file is: an ``OperatorModule`` or ``DiffusionModule`` training
  checkpoint, the authors' SRNO or LIIF weights (``"srno"``, ``"liif"``) or a NeurOp-Diff training checkpoint
  (``"neuropdiff"``).
* :class:`Checkpoint`: one file read once, its kind, recorded hyper-parameters and the plain models in it
  (the operator, NeurOp-Diff, the sampling options, the authors' weights converted), built without Lightning:
  what inference loads. The one place that acts on the kind: callers ask it for a ``stage()`` or check with
  ``require(expected)``, which words the one message for a file given where another is expected.
* :func:`load_operator` gives the frozen operator (SRNO or LIIF) of an OperatorModule checkpoint or of the
  authors' weights (what ``operator_ckpt`` takes); the operator of recorded ``operator_args`` (``arch`` and
  sizes) is built by ``models.build.build_operator`` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from typing import Any

from torch import Tensor

from neurop_diff.diffusion.options import SamplingOptions
from neurop_diff.models.build import ARCHS, build_operator, full_operator_args, neuropdiff_from_hparams
from neurop_diff.models.neuropdiff import NeurOpDiff
from neurop_diff.models.operator import Operator
from neurop_diff.weights.liif import (
    convert_liif_state_dict,
    extract_liif_state_dict,
    is_liif_checkpoint,
    liif_args_from_state_dict,
    load_liif_weights,
)
from neurop_diff.weights.neuropdiff import split_neuropdiff_checkpoint
from neurop_diff.weights.reader import (
    CheckpointError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    read_checkpoint,
)
from neurop_diff.weights.srno import (
    convert_srno_state_dict,
    extract_srno_state_dict,
    load_srno_weights,
    srno_args_from_state_dict,
)

__all__ = [
    "ARCHS",
    "KINDS",
    "STAGES",
    "AuthorsWeights",
    "Checkpoint",
    "CheckpointError",
    "CorruptCheckpointError",
    "UnsafeCheckpointError",
    "build_operator",
    "checkpoint_kind",
    "full_operator_args",
    "load_operator",
    "read_authors_weights",
    "read_checkpoint",
]

#: Every kind of file neurop-diff reads (:func:`checkpoint_kind`): what it is, for messages, and the stage it
#: gives when loaded (None: the authors' NeurOp-Diff list, converted first with `neurop-diff import-weights`).
KINDS: dict[str, tuple[str, str | None]] = {
    "OperatorModule": ("stage 1, the neural operator: configs/operator.yaml + configs/model/", "operator"),
    "DiffusionModule": ("stage 2, the generative model: configs/diffusion*.yaml, flow*.yaml", "diffusion"),
    "srno": ("the SRNO authors' weights", "operator"),
    "liif": ("the LIIF authors' weights", "operator"),
    "neuropdiff": ("the NeurOp-Diff authors' training checkpoint", None),
}

#: The two training checkpoints (LightningModule class names), described.
STAGES = {k: v[0] for k, v in KINDS.items() if k.endswith("Module")}

_CONVERT = "convert the authors' files with `neurop-diff import-weights <file> --out <ckpt>`"


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


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def load_operator(path: str | PathLike[str] | Mapping[str, Any]) -> tuple[Operator, dict[str, Any]]:
    """The trained operator of an OperatorModule checkpoint (SRNO or LIIF) or of the authors' SRNO or LIIF
    weights (a file or a loaded dict): the operator (eval mode, frozen, on the CPU) and its ``operator_args``
    (``arch`` and sizes: :func:`build_operator` rebuilds it). What ``operator_ckpt`` reads.

    Raises:
        CheckpointError: the file cannot be read (see :func:`read_checkpoint`).
        ValueError: it holds something else (e.g. a DiffusionModule checkpoint), or weights that do not fit
            the architecture it records (torch's strict-loading report).
    """
    ckpt = Checkpoint.of(path) if isinstance(path, Mapping) else Checkpoint.read(path)
    ckpt.require("operator")
    return ckpt.operator(), ckpt.operator_args()


@dataclass(frozen=True)
class AuthorsWeights:
    """``kind``: ``"srno"``, ``"liif"`` or ``"neuropdiff"``. ``operator_args``: the operator's ``arch`` and size
    (:func:`build_operator`). ``operator``: its state dict in our names. ``unet``: the UNet state dict in our
    names (NeurOp-Diff only; the authors' UNet = ours by default)."""

    kind: str
    operator_args: dict[str, Any]
    operator: dict[str, Tensor]
    unet: dict[str, Tensor] | None = None


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """One checkpoint or weights file, read once (weights only, memory-mapped): ``kind`` (see
    :func:`checkpoint_kind`), the recorded hyper-parameters and the plain models in it, on the CPU in eval mode.
    The one place that knows the kinds of file (:data:`KINDS`): every other module asks it for a stage, a
    model or a check (:meth:`require`), so inference needs no LightningModule and no caller compares kinds."""

    source: str
    content: Any  # what torch.load gave: a dict, or the authors' NeurOp-Diff list
    kind: str | None

    @classmethod
    def read(cls, path: str | PathLike[str]) -> Checkpoint:
        return cls.of(read_checkpoint(path, mmap=True), str(path))

    @classmethod
    def of(cls, obj: Any, source: str = "this checkpoint") -> Checkpoint:
        """The view of an object already read (``read_checkpoint``); ``source`` names it in messages."""
        return cls(source, obj, checkpoint_kind(obj))

    @property
    def hparams(self) -> dict[str, Any]:
        """The training module's hyper-parameters ({} for the authors' weights)."""
        return dict(self._mapping.get("hyper_parameters") or {})

    @property
    def data_hparams(self) -> dict[str, Any]:
        """The datamodule's hyper-parameters ({} when not recorded)."""
        return dict(self._mapping.get("datamodule_hyper_parameters") or {})

    @property
    def _mapping(self) -> Mapping[str, Any]:
        return self.content if isinstance(self.content, Mapping) else {}

    @property
    def _stage(self) -> str | None:
        """The stage of the kind (:data:`KINDS`); None for the authors' NeurOp-Diff list or an unknown file."""
        return KINDS.get(self.kind or "", ("", None))[1]

    def stage(self) -> str:
        """``"operator"`` or ``"diffusion"``: what loading this file for inference gives."""
        stage = self._stage
        if stage is None:
            what = KINDS[self.kind][0] if self.kind in KINDS else "not a checkpoint neurop-diff knows"
            raise ValueError(f"{self.source} is {what}: {_CONVERT}")
        return stage

    def require(self, expected: str) -> Checkpoint:
        """Checks that the file is what ``expected`` needs: ``"operator"`` (an operator from any source, as
        ``operator_ckpt`` takes) or a LightningModule class name (its training checkpoint, as ``--ckpt_path``
        and ``load_from_checkpoint`` take; a class the package does not know passes). Returns ``self``.

        Raises:
            ValueError: one sentence naming the file, what it is, what is expected and what to do instead.
        """
        if expected == "operator":
            if self._stage == "operator":
                return self
            needed = "an operator checkpoint (OperatorModule, or the authors' SRNO / LIIF weights)"
        elif self.kind not in STAGES and not isinstance(self._mapping.get("state_dict"), Mapping):
            raise ValueError(
                f"{self.source} is not a neurop-diff training checkpoint (no 'state_dict'): {_CONVERT}"
            )
        elif self.kind not in STAGES or expected not in STAGES or self.kind == expected:
            return self
        else:
            needed = f"{_article(expected)} {expected} checkpoint ({STAGES[expected]})"
        hint = ""
        if self.kind == "neuropdiff":
            hint = f"; {_CONVERT}"
        elif (self.kind, expected) == ("OperatorModule", "DiffusionModule"):
            hint = (
                "; to guide a diffusion model with this operator give it as --model.init_args.operator_ckpt"
            )
        what = KINDS[self.kind][0] if self.kind in KINDS else ""
        kind = (
            f"{_article(self.kind)} {self.kind} checkpoint ({what})"
            if what
            else "not a file neurop-diff knows"
        )
        raise ValueError(f"{self.source} is {kind}; {needed} is expected here{hint}")

    def operator_args(self) -> dict[str, Any]:
        """The operator's ``arch`` and sizes (:func:`build_operator` rebuilds it)."""
        if self.kind == "DiffusionModule":
            args = self.hparams.get("operator_args")
            if not args:
                raise ValueError(
                    f"{self.source} has no operator (a diffusion model with the bicubic condition)"
                )
            return full_operator_args(str(args.get("arch", "srno")), args)
        if self.kind == "OperatorModule":
            hp = self.hparams  # no arch: made before LIIF was added, an SRNO
            return full_operator_args(hp.get("arch", "srno"), hp)
        if self.kind == "liif":
            try:
                return full_operator_args(
                    "liif", liif_args_from_state_dict(extract_liif_state_dict(self.content))
                )
            except ValueError as err:
                raise ValueError(f"{self.source}: {err}") from err
        self.require("operator")
        return full_operator_args("srno", srno_args_from_state_dict(extract_srno_state_dict(self.content)))

    def operator(self) -> Operator:
        """The trained operator (eval mode, frozen): of an OperatorModule checkpoint, the authors' SRNO / LIIF
        weights, or the one stored inside a DiffusionModule checkpoint (only it is built and loaded)."""
        try:
            args = self.operator_args()
            model = build_operator(args)
            # "srno" is also any dict neurop-diff does not know: checked, with what was expected
            if self.kind == "srno":
                model = load_srno_weights(model, self.content)
            elif self.kind == "liif":
                model = load_liif_weights(model, self.content)
        except (KeyError, TypeError, ValueError) as err:
            text = str(err).strip("'")
            raise ValueError(text if self.source in text else f"{self.source}: {text}") from err
        if self.kind in STAGES:
            prefix = "model.operator." if self.kind == "DiffusionModule" else "model."
            try:
                model.load_state_dict(_sub_state(self.content["state_dict"], prefix))  # strict
            except RuntimeError as err:
                raise ValueError(
                    f"{self.source} does not fit the operator architecture it records (arch "
                    f"{args['arch']!r}): {err}"
                ) from err
        return model.eval().requires_grad_(False)

    def neuropdiff(self) -> NeurOpDiff:
        """NeurOp-Diff of a DiffusionModule checkpoint (its stored weights: EMA weights when trained with EMA)."""
        if self.kind != "DiffusionModule":
            self.require("DiffusionModule")  # the one message for a known other kind
            raise ValueError(f"{self.source} is not a DiffusionModule checkpoint")
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

    def authors_weights(self, use_ema: bool = True) -> AuthorsWeights:
        """The authors' SRNO / LIIF / NeurOp-Diff weights in our names, strictly checked (``neurop-diff
        import-weights``); ``use_ema``: the NeurOp-Diff EMA weights. Errors name the file."""
        if self.kind in STAGES:
            raise ValueError(f"{self.source} is already a neurop-diff checkpoint ({STAGES[self.kind]})")
        unet = None
        try:
            if self.kind == "liif":
                liif_sd = extract_liif_state_dict(self.content)  # refuses the unsupported LIIF variants
                args = full_operator_args("liif", liif_args_from_state_dict(liif_sd))
                return AuthorsWeights("liif", args, convert_liif_state_dict(liif_sd))
            if self.kind == "neuropdiff":
                unet, srno_sd = split_neuropdiff_checkpoint(self.content, use_ema, source=self.source)
            else:
                srno_sd = extract_srno_state_dict(self.content)
            args = full_operator_args("srno", srno_args_from_state_dict(srno_sd))
            state = convert_srno_state_dict(srno_sd)  # checked against SRNO(**args) (on the meta device)
        except ValueError as err:
            raise ValueError(f"{self.source}: {err}" if self.source not in str(err) else str(err)) from err
        return AuthorsWeights("neuropdiff" if unet is not None else "srno", args, state, unet)


def read_authors_weights(source: str | PathLike[str], use_ema: bool = True) -> AuthorsWeights:
    """:meth:`Checkpoint.authors_weights` of the file ``source``."""
    return Checkpoint.read(source).authors_weights(use_ema)


def _sub_state(state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The entries of ``state_dict`` under ``prefix``, the prefix removed (a sub-module's state dict)."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
