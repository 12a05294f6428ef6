"""The few places that rely on another library's private behaviour, gathered so an upgrade fails loudly.

Each function names what it relies on; ``tests/test_compat.py`` pins exactly that against the installed
versions (attribute names, the sampler Lightning injects under DDP), so a change there breaks a test
instead of silently changing a run.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from torch.utils.data import DistributedSampler, Sampler

__all__ = [
    "UNKNOWN_INIT_ARG",
    "UNKNOWN_OPTION",
    "parser_options",
    "set_init_arg",
    "shard_of",
    "skip_lightning_ckpt_merge",
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
