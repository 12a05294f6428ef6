"""Atomic file writes: a temporary file beside the target, renamed over it only once it is complete.

`atomic_write(path)` yields the path of a new, empty temporary file in `path`'s folder; the block writes it (by
path, or by opening it). When the block ends normally the file is renamed over `path` (`os.replace`, atomic on
POSIX): a reader, or a process killed while writing, sees the old file or the new one, never half of one. When
the block raises (KeyboardInterrupt included) the temporary file is removed and `path` is left as it was.

Temporary names are `.<name>.tmp-<pid>-<random><suffix>`: hidden, beside the target, and marked with
`TMP_MARK`, so that folder scans can skip them and `remove_leftovers` can find those of a killed process.

This module imports nothing from neurop_diff: every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["TMP_MARK", "atomic_write", "fsync_dir", "remove_leftovers"]

TMP_MARK = ".tmp-"


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str], *, suffix: str = "", fsync: bool = False, mode: int = 0o666
) -> Iterator[Path]:
    """Yields a temporary path to write; on success renames it over `path`, on any exception removes it.

    Args:
        path: the file to (re)place; its folder is created if missing.
        suffix: ending of the temporary name (e.g. ``".npy"`` for writers that want one).
        fsync: flush the written file to disk before the rename, and the folder after it, so that the new
            file survives a power loss (slower; for files that must never be lost, such as checkpoints).
        mode: permission bits of the new file before the umask (0o666: as `open()` creates files; 0o600:
            the owner only, as `tempfile.mkstemp`).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(target, suffix, mode)
    try:
        yield tmp
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if fsync:
        fsync_dir(target.parent)


def remove_leftovers(path: str | os.PathLike[str]) -> None:
    """Deletes the temporary files of `atomic_write(path)` calls that never finished (a killed process).

    Only for targets that a single process writes at a time: it also removes another writer's unfinished file.
    """
    target = Path(path)
    for stale in target.parent.glob(f".{target.name}{TMP_MARK}*"):
        with contextlib.suppress(OSError):
            stale.unlink()


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flushes a folder's entries (a rename into it) to disk; a no-op where the OS cannot open folders."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _create_temporary(target: Path, suffix: str, mode: int) -> Path:
    for _ in range(100):
        tmp = target.with_name(f".{target.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {target}")


def _fsync_file(path: Path) -> None:
    # fsync flushes the file's data whichever descriptor it is given; the writer may have closed its own.
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
