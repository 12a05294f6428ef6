"""The few places that rely on another library's private behaviour, gathered so an upgrade fails loudly.

Each function names what it relies on; ``tests/test_compat.py`` pins exactly that against the installed
versions (attribute names, the sampler Lightning injects under DDP), so a change there breaks a test
instead of silently changing a run.
"""

from __future__ import annotations

import argparse
import re
import traceback
from pathlib import Path
from typing import Any

from torch.utils.data import DistributedSampler, Sampler

__all__ = [
    "UNION_ERROR",
    "UNKNOWN_INIT_ARG",
    "UNKNOWN_OPTION",
    "attached_trainer",
    "class_error",
    "close_wandb_run",
    "parser_options",
    "set_init_arg",
    "shard_of",
    "skip_lightning_ckpt_merge",
    "started_wandb_run",
    "union_error_line",
]


def set_init_arg(logger: Any, key: str, value: Any) -> None:
    """Set one ``wandb.init`` argument of a Lightning ``WandbLogger`` whose run has not started yet.

    Relies on: ``WandbLogger._wandb_init``, the dict of keyword arguments Lightning passes to ``wandb.init``
    when ``experiment`` is first read. No public setter exists for name / group / tags before the run starts,
    and they are known only once the model and data are built (from their hyper-parameters)."""
    init = getattr(logger, "_wandb_init", None)
    if not isinstance(init, dict):
        raise RuntimeError(
            "lightning's WandbLogger no longer keeps its wandb.init arguments in `_wandb_init`; "
            "update neurop_diff.compat.set_init_arg"
        )
    if getattr(logger, "_experiment", None) is not None:
        raise RuntimeError(f"W&B run already started: cannot set {key!r} any more")
    init[key] = value


def shard_of(sampler: Sampler) -> tuple[list[int], int, int]:
    """(indices in order, number of shares, this rank's share) of a batch sampler's index ``sampler``.

    Under DDP, Lightning replaces the eval loaders' sampler by a ``DistributedSampler`` (over the dataset, or a
    ``DistributedSamplerWrapper`` around the original sampler); the batch sampler then shards the *whole*
    index list itself (so every rank gets whole scales in the same order). Relies on: the public attributes
    ``num_replicas``, ``rank``, ``dataset`` of ``DistributedSampler``; for Lightning's wrapper, its ``dataset``
    being an indexable list of the wrapped sampler's indices (``_DatasetSamplerWrapper``); Lightning's
    prediction sampler (``UnrepeatedDistributedSampler``) being left to shard by itself (no repeats). Any
    other sampler is one share: its own indices."""
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    if isinstance(sampler, DistributedSampler) and not isinstance(sampler, UnrepeatedDistributedSampler):
        if isinstance(sampler, DistributedSamplerWrapper):
            indices = [int(sampler.dataset[i]) for i in range(len(sampler.dataset))]
        else:
            indices = list(range(len(sampler.dataset)))
        return indices, sampler.num_replicas, sampler.rank
    return [int(i) for i in sampler], 1, 0


# --- LightningCLI / jsonargparse / argparse (neurop_diff.cli; pinned by tests/test_cli_overrides.py) ---------

#: jsonargparse's wording of an init argument a class does not take: (class_path, key).
UNKNOWN_INIT_ARG = re.compile(
    r"given class_path '([\w.]+)':\s+(?:Key|Option) '([\w.]+)' is not (?:accepted|expected)"
)
#: argparse's / jsonargparse's wording of a top-level or trainer key that does not exist (one group matches).
UNKNOWN_OPTION = re.compile(
    r"unrecognized arguments: --([\w.]+)|(?:Key|option) '([\w.]+)' is not expected|does not accept option '([\w.]+)'"
)


def parser_options(parser: argparse.ArgumentParser) -> list[str]:
    """Every ``--key`` of ``parser`` and its subcommands, without the dashes. Relies on: argparse's
    ``_actions`` list and ``_SubParsersAction.choices`` (no public listing of a parser's options exists)."""
    found, parsers = [], [parser]
    while parsers:
        current = parsers.pop()
        for action in current._actions:
            found += [o[2:] for o in action.option_strings if o.startswith("--")]
            if isinstance(action, argparse._SubParsersAction):
                parsers += list(action.choices.values())
    return found


def skip_lightning_ckpt_merge(cli_class: type) -> type:
    """Class decorator: turns off LightningCLI's own use of ``--ckpt_path`` at start-up.

    Relies on: ``LightningCLI.__init__`` calling ``self._parse_ckpt_path()`` between ``parse_arguments`` and
    ``before_instantiate_classes``; that method reads the file with its own ``torch.load`` and merges the
    checkpoint's hyper-parameters *over* the parsed config (what the user typed loses). neurop_diff.cli
    does that step in the public ``before_instantiate_classes`` hook instead (the user's values win, the one
    safe reader)."""
    from lightning.pytorch.cli import LightningCLI

    if not callable(getattr(LightningCLI, "_parse_ckpt_path", None)):
        raise RuntimeError(
            "lightning's LightningCLI no longer has `_parse_ckpt_path`; update neurop_diff.compat."
            "skip_lightning_ckpt_merge (and check that it no longer merges checkpoint hyper-parameters)"
        )
    cli_class._parse_ckpt_path = lambda self: None  # type: ignore[attr-defined]
    return cli_class


# --- jsonargparse's error for a value no type of a Union accepts (neurop_diff.cli; pinned by tests/test_compat.py)

#: First line of that error. Every subclass_mode key (model, data, trainer.logger, trainer.callbacks, ...) is such
#: a Union (its class or None); the error goes on with each type's error and a dump of the whole value.
UNION_ERROR = "Does not validate against any of the Union subtypes"
_PARSER_KEY = re.compile(r'Parser key "([^"]+)"')
_CLASS_PATH = re.compile(r"Problem with given class_path '([\w.]+)':")


def _raised_by_jsonargparse(err: BaseException) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    return not frames or "jsonargparse" in Path(frames[-1].filename).parts


def _causes(err: BaseException | None) -> list[BaseException]:
    """`err` and the errors it was raised from (``raise ... from``), outermost first, down to the first one not
    raised by jsonargparse (a class's own error: its message is the one to show, whatever it was raised from)."""
    chain: list[BaseException] = []
    while err is not None and all(err is not e for e in chain):
        chain.append(err)
        if not _raised_by_jsonargparse(err):
            break
        err = err.__cause__
    return chain


def _is_union_error(chain: list[BaseException]) -> bool:
    return any(str(e).startswith(UNION_ERROR) for e in chain)


def class_error(err: BaseException) -> BaseException | None:
    """The error a class's constructor raised (a bad init argument of the model, data, ...) when jsonargparse's
    ``instantiate_classes`` reports it as a Union error; None for any other error.

    Relies on: jsonargparse raising the Union error ``from`` the error of the Union's first type (the class;
    NoneType comes last), which is the constructor's own error: the first one raised outside jsonargparse."""
    chain = _causes(err)
    inner = chain[-1]
    return None if not _is_union_error(chain) or _raised_by_jsonargparse(inner) else inner


def union_error_line(err: BaseException | None) -> str | None:
    """One line for jsonargparse's parse error about an init argument of a class_path (or any value a Union
    type refused): the full key and the innermost error, e.g. ``Parser key "model.init_args.sampler": Expected
    a typing.Literal['ddim', ...]. Got value: bogus``, or ``Parser key "model": Problem with given class_path
    'neurop_diff.lit.DiffusionModule': Option 'widht' is not accepted``; None when ``err`` is not such an error.

    Relies on: every layer of that error (``Parser key "<key>":``, the Union error, ``Problem with given
    class_path '<class>':``) being raised ``from`` the error it wraps, the Union error from its first type's
    (the class; NoneType comes last)."""
    chain = _causes(err)
    if not chain or not _is_union_error(chain):
        return None
    keys: list[str] = []
    class_path = ""
    for e in chain[:-1]:
        text = str(e)
        if found := _CLASS_PATH.match(text):
            class_path = found.group(1)
        elif (found := _PARSER_KEY.match(text)) and (not keys or class_path):
            keys.append(found.group(1))
            class_path = ""
    parts = [f'Parser key "{".init_args.".join(keys)}"'] if keys else []
    if (
        class_path
    ):  # an error of the class itself (an unknown key): jsonargparse's words, which the hints read
        parts.append(f"Problem with given class_path '{class_path}'")
    return ": ".join([*parts, re.sub(r"\s*\n\s*", " ", str(chain[-1]).strip())])


def attached_trainer(module: Any) -> Any | None:
    """The Trainer a LightningModule is attached to, or None (a module used on its own: tests, inference).

    Relies on: ``LightningModule._trainer``; the public ``trainer`` property raises when none is attached, and
    there is no public way to ask."""
    return getattr(module, "_trainer", None)


def started_wandb_run(logger: Any) -> Any | None:
    """The W&B run of a Lightning ``WandbLogger`` if it has started, else None (reading ``experiment`` would
    start it). Relies on: ``WandbLogger._experiment``, the run once ``experiment`` was first read."""
    return getattr(logger, "_experiment", None)


def close_wandb_run(logger: Any, exit_code: int) -> None:
    """Finish the logger's started run now (its summary is written) and forget it, so a later ``experiment``
    in this process starts a new one. Relies on: ``WandbLogger._experiment`` (as :func:`started_wandb_run`)."""
    run = started_wandb_run(logger)
    if run is not None and hasattr(run, "finish"):
        run.finish(exit_code=exit_code)
        logger._experiment = None
