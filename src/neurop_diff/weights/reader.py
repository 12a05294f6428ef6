"""The one reader of checkpoint and weights files: :func:`read_checkpoint` is the only ``torch.load`` of the
package, ``weights_only=True`` always (tensors and plain containers; no pickled object is ever built, whatever a
caller asks), memory-mapped when the caller only peeks (``mmap=True``, zip-format files). Errors name the file
and say which of two things is wrong: "not a checkpoint: truncated or corrupt" or "holds Python objects,
refused: would execute code". The bottom floor of ``weights/``: it imports nothing from the package.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from os import PathLike
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "CorruptCheckpointError", "UnsafeCheckpointError", "read_checkpoint"]

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
