"""Checkpoint files and the authors' published weights (plain tensors only: read with ``weights_only=True``)."""

from .checkpoint import (
    STAGES,
    CheckpointError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    checkpoint_kind,
    load_operator,
    read_checkpoint,
)
from .srno import (
    SRNO_ARGS,
    SRNO_DEFAULTS,
    convert_srno_state_dict,
    extract_srno_state_dict,
    load_srno_weights,
    srno_args_from_state_dict,
)

#: The former name of :func:`read_checkpoint`.
load_checkpoint_file = read_checkpoint

__all__ = [
    "SRNO_ARGS",
    "SRNO_DEFAULTS",
    "STAGES",
    "CheckpointError",
    "CorruptCheckpointError",
    "UnsafeCheckpointError",
    "checkpoint_kind",
    "convert_srno_state_dict",
    "extract_srno_state_dict",
    "load_checkpoint_file",
    "load_operator",
    "load_srno_weights",
    "read_checkpoint",
    "srno_args_from_state_dict",
]
