"""Samplers of the SRDataModule: eval (image, scale) pairs, scale-pure eval batches, resumable train shuffle.

Split out of ``datamodule.py`` (one concern per file): these decide *which* indices a loader reads and in what
order (one scale per eval batch, equal DDP shares, mid-epoch resume); the datamodule turns them into pairs.
``neurop_diff.data.datamodule`` re-exports every name here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

from torch.utils.data import BatchSampler, Dataset, DistributedSampler, Sampler

from neurop_diff.compat import shard_of

__all__ = ["EvalPairs", "ScaleBatchSampler", "TrainSampler"]


class EvalPairs(Dataset):
    """Every image of ``base`` at every scale, scale-major: item ``k`` is image ``k % N`` at scale ``k // N``."""

    def __init__(self, base: Dataset, scales: Sequence[float]) -> None:
        self.base, self.scales = base, [float(s) for s in scales]

    def __len__(self) -> int:
        return len(self.base) * len(self.scales)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.base)  # type: ignore[arg-type]
        item = dict(self.base[index % n])
        item["nominal_scale"] = self.scales[index // n]
        return item


class ScaleBatchSampler(BatchSampler):
    """Batches of ``EvalPairs`` indices that never mix scales: scale-major, images in sampler order, in chunks.

    A ``BatchSampler`` over any index ``sampler`` (sequential by default). Under a ``DistributedSampler`` (as
    Lightning injects for val/test in DDP) it shards by itself: every scale's images are split into
    ``num_replicas`` equal contiguous shares, short shares padded by repeating images of that scale, so every
    rank gets the same number of batches and the same scale at every step (the metrics drop the repeats). Under
    an unrepeated sampler (Lightning's prediction sampler) it groups the rank's own indices, without repeats.
    """

    def __init__(
        self, sampler: Sampler[int], batch_size: int, drop_last: bool = False, num_images: int = 1
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.num_images = num_images

    def _shard(self) -> tuple[list[int], int, int]:
        """(indices in order, number of shares, this rank's share)."""
        return shard_of(self.sampler)  # what Lightning injected under DDP: see neurop_diff.compat

    def _batches(self) -> list[list[int]]:
        indices, shares, rank = self._shard()
        groups: dict[int, list[int]] = {}
        for index in indices:
            groups.setdefault(index // self.num_images, []).append(index)
        batches = []
        for scale_index in sorted(groups):
            members = groups[scale_index]
            if shares > 1:
                per = math.ceil(len(members) / shares)
                padded = [members[i % len(members)] for i in range(per * shares)]
                members = padded[rank * per : (rank + 1) * per]
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                if len(chunk) == self.batch_size or not self.drop_last:
                    batches.append(chunk)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches()

    def __len__(self) -> int:
        return len(self._batches())


class TrainSampler(DistributedSampler):
    """This rank's share of a shuffle drawn from ``seed + epoch`` (``DistributedSampler``), resumable mid-epoch.

    Being a ``DistributedSampler``, Lightning leaves it in place under DDP (and calls ``set_epoch``).
    ``start_at(epoch, position)`` makes the next pass over ``epoch`` begin at ``position`` (samples of this
    rank), the rest of an interrupted epoch in the same order.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self._start: tuple[int, int] | None = None

    def start_at(self, epoch: int, position: int) -> None:
        self.set_epoch(epoch)
        self._start = (epoch, position) if position > 0 else None

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        if self._start is not None and self._start[0] == self.epoch:
            indices = indices[self._start[1] :]
        self._start = None
        return iter(indices)
