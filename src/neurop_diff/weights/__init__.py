"""Import of the authors' published weights (plain tensors only; files are read with ``weights_only=True``)."""

from .io import load_checkpoint_file
from .srno import (
    convert_srno_state_dict,
    extract_srno_state_dict,
    load_srno_weights,
    srno_args_from_checkpoint,
    srno_args_from_state_dict,
)

__all__ = [
    "convert_srno_state_dict",
    "extract_srno_state_dict",
    "load_checkpoint_file",
    "load_srno_weights",
    "srno_args_from_checkpoint",
    "srno_args_from_state_dict",
]
