"""Safe reading of checkpoint files: plain tensors and containers only, never code."""

from __future__ import annotations

import pickle
import re
from os import PathLike
from pathlib import Path

import torch

_UNSAFE_MARK = "Weights only load failed"


def load_checkpoint_file(path: str | PathLike[str]) -> object:
    """Read a ``torch.save`` file on the CPU with ``weights_only=True`` (unpickles no code).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: the file is truncated or not a PyTorch checkpoint, or it holds pickled objects other than
            tensors and plain containers (only plain weights are accepted); the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if _UNSAFE_MARK not in str(err):
            raise ValueError(
                f"{path}: cannot read the checkpoint (truncated or corrupt file?): {err}"
            ) from err
        found = re.search(r"Unsupported (?:global|operand)[^\n]*", str(err))
        detail = f" ({found.group(0).strip()})" if found else ""
        raise ValueError(
            f"{path}: the file contains pickled Python objects other than tensors and plain containers{detail}; "
            "only plain weights are accepted (loading it would execute code from the file). Re-save the "
            "state dict alone, e.g. torch.save(model.state_dict(), path), in an environment you trust."
        ) from err
    except (RuntimeError, EOFError, KeyError, OSError, ValueError) as err:
        raise ValueError(
            f"{path}: cannot read the checkpoint (truncated or corrupt file, or not a torch.save file): "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'no details'}"
        ) from err
