"""Checkpoint files and the authors' published weights (plain tensors only: read with ``weights_only=True``).

Floors, each importing only those below it: ``reader`` (the one ``torch.load``, its errors) -> ``rename`` (the
authors' names to ours, the strict check) -> the formats ``srno``, ``liif``, ``unet`` and ``neuropdiff`` (the authors' NeurOp-Diff list) ->
``checkpoint`` (the one module that knows the kinds of file: :class:`Checkpoint`, the models in a file, the
authors' weights converted).
"""

from ..models.build import LIIF_ARGS, LIIF_DEFAULTS, SRNO_ARGS, SRNO_DEFAULTS
from .checkpoint import (
    ARCHS,
    KINDS,
    STAGES,
    AuthorsWeights,
    Checkpoint,
    CheckpointError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    build_operator,
    checkpoint_kind,
    full_operator_args,
    load_operator,
    read_authors_weights,
    read_checkpoint,
)
from .liif import (
    convert_liif_state_dict,
    extract_liif_state_dict,
    liif_args_from_state_dict,
    load_liif_weights,
)
from .srno import (
    convert_srno_state_dict,
    extract_srno_state_dict,
    load_srno_weights,
    srno_args_from_state_dict,
)

__all__ = [
    "ARCHS",
    "KINDS",
    "LIIF_ARGS",
    "LIIF_DEFAULTS",
    "SRNO_ARGS",
    "SRNO_DEFAULTS",
    "STAGES",
    "AuthorsWeights",
    "Checkpoint",
    "CheckpointError",
    "CorruptCheckpointError",
    "UnsafeCheckpointError",
    "build_operator",
    "checkpoint_kind",
    "convert_liif_state_dict",
    "convert_srno_state_dict",
    "extract_liif_state_dict",
    "extract_srno_state_dict",
    "full_operator_args",
    "liif_args_from_state_dict",
    "load_liif_weights",
    "load_operator",
    "load_srno_weights",
    "read_authors_weights",
    "read_checkpoint",
    "srno_args_from_state_dict",
]
