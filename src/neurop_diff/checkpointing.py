"""Never lose work: atomic checkpoint files, a checkpoint on SIGTERM, and `--ckpt_path last` that finds the run.

* `AtomicCheckpointIO` writes a checkpoint to a temporary file in the target's folder, flushes it to disk, then
  renames it over the target (`os.replace`, atomic on POSIX): a process killed while saving leaves the previous
  `last.ckpt` intact. Lightning's default writes through a temporary file in the system temp folder, which is a
  copy (not a rename) when that folder is on another file system, and keeps a second copy of the checkpoint in
  memory. A full disk leaves the previous file and says "no space left on device". Reading goes through
  `neurop_diff.weights.read_checkpoint` (weights only; errors name the file).
* `SaveOnSigterm` saves `last.ckpt` when the run receives SIGTERM (preemption, `scancel`, a SLURM time limit);
  Lightning then stops at the end of the current batch and the process exits with status 0.
* `find_resume_version` lets `fit --ckpt_path last` continue in the run folder that holds the newest `last.ckpt`
  (loggers otherwise open a new `version_N` folder, where "last" finds nothing); `last_checkpoint` finds the
  file `fit --ckpt_path last` resumes from the parsed config.

`neurop_diff.cli.lightning` installs the first two on every trainer it builds (unless a custom CheckpointIO is
set).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint, WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from neurop_diff.files import TMP_MARK, atomic_write, remove_leftovers
from neurop_diff.weights.reader import read_checkpoint

__all__ = [
    "AtomicCheckpointIO",
    "SaveOnSigterm",
    "ensure_safe_checkpointing",
    "find_resume_version",
    "last_checkpoint",
    "newest_last_checkpoint",
]


def _is_local(path: str | os.PathLike[str]) -> bool:
    text = str(path)
    return "://" not in text or text.startswith("file://")


def _local_path(path: str | os.PathLike[str]) -> Path:
    text = str(path)
    return Path(text[len("file://") :] if text.startswith("file://") else text)


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local saves are atomic: temporary file in the same folder, fsync, `os.replace`.

    Remote paths (`s3://...`) use Lightning's own saving. Loading reads weights only and raises
    `CheckpointError` (a `ValueError`) naming the file when it is truncated, not a checkpoint, or holds code.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = _local_path(path)
        remove_leftovers(target)  # of a process killed while saving this file: never valid checkpoints
        try:
            with atomic_write(target, fsync=True) as tmp, open(tmp, "wb") as f:
                self._dump(checkpoint, f)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                kept = f"the previous {target.name} is kept" if target.exists() else "nothing was written"
                raise OSError(
                    errno.ENOSPC, f"{target}: checkpoint not saved ({kept}): no space left on device"
                ) from err
            raise

    def _dump(self, checkpoint: dict[str, Any], f: IO[bytes]) -> None:
        """Serialises `checkpoint` into the open temporary file (a seam for tests)."""
        torch.save(checkpoint, f)

    def load_checkpoint(
        self,
        path: str | os.PathLike[str],
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Reads local files with `neurop_diff.weights.read_checkpoint`: on the CPU, weights only whatever
        `weights_only` says (Lightning moves the weights to the module's device when it loads them)."""
        if not _is_local(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        return read_checkpoint(_local_path(path))


def last_checkpoint_path(trainer: L.Trainer) -> Path:
    """Where `last.ckpt` goes: the first ModelCheckpoint's folder, else `<default_root_dir>/checkpoints`."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"


class SaveOnSigterm(L.Callback):
    """Saves `last.ckpt` when a fit receives SIGTERM, so the run resumes with `--ckpt_path last`.

    Lightning's signal handler marks the SIGTERM and raises `SIGTERMException` (a `SystemExit` with status 0)
    at the end of the current training batch, on every rank; this saves the state of that batch boundary
    before the process exits. Other exceptions (e.g. a non-finite loss) save nothing: the newest checkpoint
    stays the last good one.
    """

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        if trainer.validating:
            # Mid-validation the weight-averaging callbacks hold the raw weights and the module the average:
            # swap back (their own end-of-validation hook) so the checkpoint holds each in its place. The
            # interrupted validation round then reports only the batches run after the resume.
            for callback in trainer.callbacks:
                if isinstance(callback, WeightAveraging):
                    callback.on_validation_epoch_end(trainer, pl_module)
        path = last_checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        rank_zero_info(
            f"SIGTERM received: saved {path} at global step {trainer.global_step}; "
            "resume with the same command and `--ckpt_path last`"
        )


def ensure_safe_checkpointing(trainer: L.Trainer) -> None:
    """Gives `trainer` atomic checkpoint files (unless it has a custom CheckpointIO) and `SaveOnSigterm`."""
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
    if not any(isinstance(cb, SaveOnSigterm) for cb in trainer.callbacks):
        trainer.callbacks.append(SaveOnSigterm())


def find_resume_version(save_dir: str | os.PathLike[str], name: str | None) -> tuple[str, Path] | None:
    """(version folder name, newest last*.ckpt) under `save_dir/name/*/checkpoints`, or None when there is none."""
    root = Path(save_dir) / (name or "")
    if not root.is_dir():
        return None
    found = [p for p in root.glob("*/checkpoints/last*.ckpt") if p.is_file() and TMP_MARK not in p.name]
    if not found:
        return None
    newest = max(found, key=lambda p: p.stat().st_mtime)
    return newest.parent.parent.name, newest


def last_checkpoint(config: Any) -> Path | None:
    """The file `fit --ckpt_path last` resumes: the newest `last*.ckpt` of the run the config describes (an
    explicit ModelCheckpoint `dirpath`; the logger's `save_dir/name/version`, or the newest version when the
    logger is unversioned; without a logger `default_root_dir/checkpoints`). None when there is none (the fit
    starts from scratch, as Lightning does).

    With an unversioned CSV/TensorBoard logger Lightning would look in the new run's (empty) version folder;
    the resumed run logs into a new version folder and the next `--ckpt_path last` finds its checkpoints."""
    trainer = config.trainer
    folders: list[Path] = []
    for cb in trainer.get("callbacks") or []:
        args = cb.get("init_args") if hasattr(cb, "get") else None
        if str(cb.get("class_path", "")).endswith("ModelCheckpoint") and args and args.get("dirpath"):
            folders.append(Path(args.get("dirpath")))
    logger = trainer.get("logger")
    logger = logger[0] if isinstance(logger, list) and logger else logger
    root = Path(trainer.get("default_root_dir") or ".")
    args = logger.get("init_args") if hasattr(logger, "get") else None
    if logger in (None, True):  # Lightning's default logger: <default_root_dir>/lightning_logs/version_N
        found = find_resume_version(root, "lightning_logs")
        folders += [found[1].parent] if found else []
    elif args is not None and args.get("save_dir") is not None:
        if args.get("version") is None:
            found = find_resume_version(args.get("save_dir"), args.get("name"))
            folders += [found[1].parent] if found else []
        else:
            version = args.get("version")
            version = version if isinstance(version, str) else f"version_{version}"
            folders.append(Path(args.get("save_dir")) / (args.get("name") or "") / version / "checkpoints")
    elif logger is False:
        folders.append(root / "checkpoints")
    return newest_last_checkpoint(folders)


def newest_last_checkpoint(folders: Iterable[str | os.PathLike[str]]) -> Path | None:
    """The newest finished `last*.ckpt` in `folders` (Lightning names a second callback's `last-v1.ckpt`; a file
    still being written is skipped), as `--ckpt_path last` picks it; None when there is none."""
    files = [
        p
        for f in map(Path, folders)
        if f.is_dir()
        for p in f.glob("last*.ckpt")
        if p.is_file() and TMP_MARK not in p.name
    ]
    return max(files, key=lambda p: p.stat().st_mtime) if files else None
