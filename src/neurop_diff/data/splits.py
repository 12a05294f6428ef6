"""Train / val / test splits of an indexed dataset: per-class fractions or split files, capped round-robin.

Split out of ``datasets.py`` (one concern per file): which files of a dataset form a split is pure bookkeeping
over file records, independent of decoding them; the rules are documented in ``neurop_diff.data.datasets``.
``neurop_diff.data.datasets`` re-exports the public names (``SPLITS``, ``split_counts``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .images import IMAGE_EXTENSIONS

__all__ = [
    "SPLITS",
    "Record",
    "read_split_file",
    "round_robin",
    "select_by_fraction",
    "select_from_file",
    "split_counts",
    "validate_fractions",
]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Record:
    path: Path
    name: str  # "<class>/<stem>" (ImageFolder: relative path without suffix)
    group: str  # the class folder the split is made within


def split_counts(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """Sizes of (train, val, test) for a class of ``n`` images: cumulative boundaries rounded half up."""
    f_train, f_val = float(fractions[0]), float(fractions[1])
    # the 1e-9 keeps 0.6 * 5 = 2.9999999999999996 from rounding down
    b1 = min(n, math.floor(n * f_train + 0.5 + 1e-9))
    b2 = min(n, max(b1, math.floor(n * (f_train + f_val) + 0.5 + 1e-9)))
    return b1, b2 - b1, n - b2


def validate_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    if len(fractions) != 3:
        raise ValueError(f"split fractions must be (train, val, test), got {tuple(fractions)!r}")
    values = tuple(float(f) for f in fractions)
    if any(not math.isfinite(f) or f < 0 for f in values) or abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be finite, >= 0 and sum to 1, got {tuple(fractions)!r}")
    return values  # type: ignore[return-value]


def read_split_file(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} not found (expected train.txt, val.txt, test.txt there)")
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line.replace("\\", "/") for line in lines if line]


def select_by_fraction(records: list[Record], split: str, fractions: Sequence[float]) -> list[Record]:
    """The ``split`` part of every group (class), files sorted by name, sized by ``split_counts``."""
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(r.group, []).append(r)
    index = SPLITS.index(split)
    chosen: list[Record] = []
    for members in groups.values():
        members = sorted(members, key=lambda r: r.path.name)
        counts = split_counts(len(members), fractions)
        start = sum(counts[:index])
        chosen.extend(members[start : start + counts[index]])
    return chosen


def select_from_file(records: list[Record], split_file: Path, image_root: Path) -> list[Record]:
    """The records ``split_file`` lists (``image_root`` only names the folder in errors), in index order."""
    by_name = {r.name: r for r in records}
    by_stem: dict[str, list[Record]] = {}
    for r in records:
        by_stem.setdefault(r.path.stem, []).append(r)
    chosen: dict[str, Record] = {}
    for entry in read_split_file(split_file):
        key = entry.rsplit(".", 1)[0] if Path(entry).suffix.lower() in IMAGE_EXTENSIONS else entry
        if "/" in key:
            match = by_name.get(key)
        else:
            candidates = by_stem.get(key, [])
            if len(candidates) > 1:
                raise ValueError(
                    f"{split_file}: entry {entry!r} matches several images; write <class>/<file>"
                )
            match = candidates[0] if candidates else None
        if match is None:
            raise ValueError(f"{split_file}: entry {entry!r} matches no image under {image_root}")
        chosen[match.name] = match
    order = {r.name: i for i, r in enumerate(records)}
    return sorted(chosen.values(), key=lambda r: order[r.name])


def round_robin(records: list[Record], limit: int) -> list[Record]:
    """At most ``limit`` records, taken round-robin over groups, kept in their original order."""
    rank: dict[str, int] = {}
    keyed = []
    for i, r in enumerate(records):
        rank[r.group] = rank.get(r.group, -1) + 1
        keyed.append((rank[r.group], i))
    keep = sorted(i for _, i in sorted(keyed)[:limit])
    return [records[i] for i in keep]
