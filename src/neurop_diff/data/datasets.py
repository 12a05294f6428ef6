"""Remote-sensing image datasets: index, split, decode once, HR protocol. Items are uint8 HR images.

Every dataset here follows the same protocol (paper 4.1):

* **HR protocol.** Each image is decoded to 8-bit RGB, center-cropped to a square (side ``min(H, W)``, offset
  ``(H - side) // 2``), then resized with PIL's antialiased bicubic to ``hr_size x hr_size`` when the side
  differs. Images smaller than ``hr_size`` are upsampled the same way (policy: allowed, they keep their
  content; with the default 256 this only touches the few odd-sized UCMerced images). ``hr_size=None``
  keeps the native crop; all crops must then share one size (else a ``ValueError`` names the file).
* **Splits.** Per class (folder), files sorted by file name (Python string order), the first
  ``round(n * f_train)`` go to train, up to ``round(n * (f_train + f_val))`` to val, the rest to test
  (round half up on cumulative boundaries, so the three parts always sum to ``n``). Or ``split_dir``: a
  folder holding ``train.txt`` / ``val.txt`` / ``test.txt``, one image per line (``<class>/<file>``, with or
  without extension, or a bare file name when unique; blank lines and ``#`` comments ignored).
* **Decode once.** At construction every indexed file's header is opened (a corrupt file raises
  ``CorruptImageError`` naming it), then the split's images are decoded into one uint8 array ``(N, H, W, 3)``.
  With ``cache_dir`` that array is a ``.npy`` file keyed by file list, sizes, mtimes and ``hr_size``,
  memory-mapped read-only so that loader workers share its pages.
* **Modes.** Grayscale, palette, RGBA (alpha dropped), CMYK become RGB; 16-bit images are scaled
  0..65535 -> 0..255 (``I;16``: ``round(v / 257)``; 16-bit RGB TIFF as Pillow reads it, the high byte).

Items: ``{"hr": uint8 tensor (3, H, W), "name": "<class>/<stem>"}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from neurop_diff.files import atomic_write

from .download import download_and_extract
from .images import (
    IMAGE_EXTENSIONS,
    CorruptImageError,
    check_header,
    hr_protocol,
    load_rgb_uint8,
)
from .splits import (
    SPLITS,
    Record,
    round_robin,
    select_by_fraction,
    select_from_file,
    split_counts,
    validate_fractions,
)

__all__ = [
    "AID",
    "IMAGE_EXTENSIONS",
    "RSSCN7",
    "CorruptImageError",
    "ImageFolder",
    "SRImageDataset",
    "UCMerced",
    "load_rgb_uint8",
    "split_counts",
]

_CACHE_VERSION = 1


class SRImageDataset(Dataset):
    """Base class: a folder of images grouped by class, one split, decoded once to uint8 HR images.

    Args:
        root: dataset folder (see each subclass for the accepted layouts).
        split: ``"train"``, ``"val"`` or ``"test"``.
        hr_size: HR side in pixels (int), or None to keep the center-cropped native size.
        fractions: per-class (train, val, test) fractions, used when ``split_dir`` is None.
        split_dir: folder with ``train.txt`` / ``val.txt`` / ``test.txt`` (overrides ``fractions``).
        max_images: keep at most this many images of the split, taken round-robin over classes.
        cache_dir: folder for the decoded ``.npy`` cache (memory-mapped); None keeps the array in RAM.
        download: fetch the dataset into ``root`` when missing (UCMerced only).
        progress: show tqdm bars while downloading / decoding many images.
        verify_only: only check that every image of the split decodes (nothing kept, ``images`` is None;
            with ``cache_dir`` the cache is built); an empty split is then allowed.
    """

    layouts: ClassVar[tuple[str, ...]] = (".",)  # sub-folders of root that may hold the class folders
    recursive: ClassVar[bool] = False  # ImageFolder: any nesting instead of <class>/<image>
    how_to_get: ClassVar[str] = "put the images under {root}/<class>/<image>"
    url: ClassVar[str | None] = None
    md5: ClassVar[str | None] = None

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        hr_size: int | None = 256,
        fractions: Sequence[float] = (0.6, 0.2, 0.2),
        split_dir: str | Path | None = None,
        max_images: int | None = None,
        cache_dir: str | Path | None = None,
        download: bool = False,
        progress: bool = True,
        verify_only: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if hr_size is not None and (not isinstance(hr_size, int) or hr_size < 1):
            raise ValueError(f"hr_size must be a positive int or None, got {hr_size!r}")
        if max_images is not None and max_images < 1:
            raise ValueError(f"max_images must be >= 1 or None, got {max_images!r}")
        self.root = Path(root).expanduser()
        self.split, self.hr_size, self.progress = split, hr_size, progress
        self.fractions = validate_fractions(fractions)
        if download:
            self.ensure_downloaded(self.root, progress=progress)
        self.image_root = self.find_image_root(self.root)
        records = self._index(self.image_root)
        for record in records:
            check_header(record.path)
        if split_dir is not None:
            records = select_from_file(records, Path(split_dir) / f"{split}.txt", self.image_root)
        else:
            records = select_by_fraction(records, split, self.fractions)
        if not records and verify_only:
            self.records, self.names, self.images = [], [], None
            return
        if not records:
            raise ValueError(
                f"{type(self).__name__} split {split!r} under {self.image_root} is empty "
                f"(fractions {self.fractions}, split_dir {split_dir}); use more images or other fractions"
            )
        if max_images is not None:
            records = round_robin(records, max_images)
        self.records = records
        self.names = [r.name for r in records]
        if verify_only and cache_dir is None:
            self._verify_all()  # decode every image, keep none (SRDataModule.setup checks unused splits)
            self.images = None
        else:
            self.images = self._decode_all(Path(cache_dir) if cache_dir is not None else None)

    # ----------------------------------------------------------------- locating and indexing the files
    @classmethod
    def missing_message(cls, root: Path) -> str:
        return f"{cls.__name__} not found at {root}: " + cls.how_to_get.format(root=root, url=cls.url)

    @classmethod
    def _has_images(cls, folder: Path) -> bool:
        if not folder.is_dir():
            return False
        if cls.recursive:
            return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.rglob("*") if p.is_file())
        return any(
            p.suffix.lower() in IMAGE_EXTENSIONS
            for d in folder.iterdir()
            if d.is_dir() and not d.name.startswith(".")
            for p in d.iterdir()
        )

    @classmethod
    def find_image_root(cls, root: str | Path) -> Path:
        """The folder holding the class folders: the first of ``layouts`` (relative to root) with images."""
        root = Path(root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(cls.missing_message(root))
        for layout in cls.layouts:
            if cls._has_images(root / layout):
                return (root / layout).resolve()
        raise FileNotFoundError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root} "
            f"(looked in {[str(root / layout) for layout in cls.layouts]}). " + cls.missing_message(root)
        )

    @classmethod
    def ensure_downloaded(cls, root: str | Path, progress: bool = True) -> None:
        """Download and extract the dataset into ``root`` unless its images are already there."""
        root = Path(root).expanduser()
        if any(cls._has_images(root / layout) for layout in cls.layouts):
            return
        if cls.url is None:
            raise FileNotFoundError(
                f"{cls.__name__} cannot be downloaded automatically. " + cls.missing_message(root)
            )
        download_and_extract(cls.url, root, cls.md5, progress=progress)

    def _index(self, image_root: Path) -> list[Record]:
        records: list[Record] = []
        if self.recursive:
            files = sorted(
                p for p in image_root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            for p in files:
                rel = p.relative_to(image_root)
                if any(part.startswith(".") for part in rel.parts):
                    continue
                records.append(Record(p, rel.with_suffix("").as_posix(), rel.parent.as_posix()))
        else:
            for d in sorted(d for d in image_root.iterdir() if d.is_dir() and not d.name.startswith(".")):
                files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
                if not files:
                    raise ValueError(
                        f"class folder {d} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
                        "remove it or add its images"
                    )
                records.extend(Record(p, f"{d.name}/{p.stem}", d.name) for p in files)
        seen: dict[str, Path] = {}
        for r in records:
            if r.name in seen:
                raise ValueError(f"two images share the name {r.name!r}: {seen[r.name]} and {r.path}")
            seen[r.name] = r.path
        return records

    # ----------------------------------------------------------------- decoding
    def _decode_one(self, record: Record) -> np.ndarray:
        return hr_protocol(load_rgb_uint8(record.path), self.hr_size)

    def _shape(self) -> tuple[int, int, int]:
        if self.hr_size is not None:
            return (self.hr_size, self.hr_size, 3)
        w, h = check_header(self.records[0].path)
        return (min(w, h), min(w, h), 3)

    def _cache_path(self, cache_dir: Path) -> Path:
        manifest = [
            [r.name, str(r.path), st.st_size, st.st_mtime_ns] for r in self.records for st in [r.path.stat()]
        ]
        key = json.dumps([_CACHE_VERSION, type(self).__name__, self.hr_size, manifest]).encode()
        digest = hashlib.sha256(key).hexdigest()[:20]
        return cache_dir / f"{type(self).__name__.lower()}-{self.split}-{self.hr_size}-{digest}.npy"

    def _decode_all(self, cache_dir: Path | None) -> np.ndarray:
        shape = (len(self.records), *self._shape())
        if cache_dir is None:
            out = np.empty(shape, dtype=np.uint8)
            self._fill(out)
            return out
        cache = self._cache_path(cache_dir)
        if cache.is_file():
            try:
                cached = np.load(cache, mmap_mode="r")
            except (
                ValueError,
                OSError,
                EOFError,
            ) as err:  # e.g. cut short: "mmap length is greater than ..."
                warnings.warn(
                    f"decoded-image cache {cache} is corrupt ({err}); rebuilding it",
                    UserWarning,
                    stacklevel=2,
                )
                cache.unlink(missing_ok=True)
            else:
                if cached.shape == shape and cached.dtype == np.uint8:
                    return cached
        with atomic_write(cache, suffix=".npy", mode=0o600) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            self._fill(out)
            out.flush()
            del out
        return np.load(cache, mmap_mode="r")

    def _verify_all(self) -> None:
        """Decodes every image of the split (errors name the file) without keeping them."""
        with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
            for _ in pool.map(self._decode_one, self.records):  # re-raises the first failure
                pass

    def _fill(self, out: np.ndarray) -> None:
        expected = out.shape[1:]

        def work(i: int) -> None:
            img = self._decode_one(self.records[i])
            if img.shape != expected:
                raise ValueError(
                    f"{self.records[i].path} gives a {img.shape[1]}x{img.shape[0]} HR crop, expected "
                    f"{expected[1]}x{expected[0]}: with hr_size=None all images must share one size"
                )
            out[i] = img

        n = len(self.records)
        workers = max(1, min(4, os.cpu_count() or 1))
        with (
            ThreadPoolExecutor(workers) as pool,
            tqdm(
                total=n,
                desc=f"decode {type(self).__name__} {self.split}",
                disable=not self.progress or n < 64,
            ) as bar,
        ):
            for _ in pool.map(work, range(n)):  # PIL releases the GIL while decoding
                bar.update()

    # ----------------------------------------------------------------- Dataset protocol
    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        hr = torch.from_numpy(np.ascontiguousarray(self.images[index].transpose(2, 0, 1)))
        return {"hr": hr, "name": self.names[index]}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={self.image_root}, split={self.split!r}, n={len(self)}, hr_size={self.hr_size})"


class UCMerced(SRImageDataset):
    """UC Merced Land Use: 21 classes x 100 RGB TIFF, 256x256 (44 images are a few pixels smaller).

    Layouts: ``root/UCMerced_LandUse/Images/<class>/*.tif`` (the distributed zip), ``root/Images/<class>``,
    ``root/ucmerced/<class>`` or ``root/<class>/<image>``. ``download=True`` fetches the zip (md5-checked) from
    ``url`` (a class attribute: override it to use a mirror). Default 60/20/20 split: 60/20/20 per class,
    1260/420/420 in all. The shared test subset (9 images, 7 classes, 1-3 per class) splits 8/0/1.
    """

    layouts = ("UCMerced_LandUse/Images", "Images", "ucmerced", ".")
    url = "https://hf.co/datasets/torchgeo/ucmerced/resolve/7c5ef3454d9b1cccfa7ccde0c01fc8f00a45909a/UCMerced_LandUse.zip"
    md5 = "5b7ec56793786b6dc8a908e8854ac0e4"
    how_to_get = (
        "pass download=True (SRDataModule(dataset='ucmerced', download=True)) to fetch it from {url} "
        "(about 317 MB), or extract UCMerced_LandUse.zip into {root} so that {root}/UCMerced_LandUse/Images/"
        "<class>/*.tif exists (a plain {root}/<class>/<image> layout works too)"
    )


class AID(SRImageDataset):
    """AID (Xia et al. 2017): 30 classes, 10,000 RGB JPEG at 600x600, 220..420 images per class.

    Layouts: ``root/AID/<Class>/*.jpg``, ``root/aid/<Class>`` or ``root/<Class>/<image>``. No automatic download.
    Default 60/20/20 split: every class size is a multiple of 10, so each splits exactly (e.g. BaseballField
    220 -> 132/44/44, Pond 420 -> 252/84/84): 6000/2000/2000 in all. The shared test subset ``aid`` (3 classes
    x 1 image) splits 3/0/0; ``aid_150px`` (30 x 5, 150x150) splits 90/30/30.
    """

    layouts = ("AID", "aid", ".")
    how_to_get = (
        "AID has no stable direct download. Get AID.zip from the authors' page https://captain-whu.github.io/AID/ "
        "(or a mirror listed there) and extract it so that {root}/AID/<Class>/*.jpg (or {root}/<Class>/*.jpg) exists"
    )


class RSSCN7(SRImageDataset):
    """RSSCN7 (Zou et al. 2015): 7 classes x 400 RGB JPEG at 400x400.

    Layouts: ``root/RSSCN7/<class>/*.jpg``, ``root/rsscn7/<class>`` or ``root/<class>/<image>``. No automatic
    download. Default 60/20/20 split: 240/80/80 per class, 1680/560/560 in all. The shared test subset
    (7 classes x 80) splits 48/16/16 per class, 336/112/112 in all.
    """

    layouts = ("RSSCN7", "rsscn7", "RSSCN7-master", ".")
    how_to_get = (
        "RSSCN7 has no stable direct download. Get it from the authors' page "
        "https://sites.google.com/site/qinzoucn/documents (or a mirror such as the RSSCN7 GitHub/figshare copies) "
        "and extract it so that {root}/RSSCN7/<class>/*.jpg (or {root}/<class>/*.jpg) exists"
    )


class ImageFolder(SRImageDataset):
    """A user's own folder of images, any nesting (png/jpg/jpeg/tif/tiff/bmp, hidden folders skipped).

    Names are relative paths without suffix (``a/b/img``); splits are made within each folder that holds
    images (files directly in ``root`` form one group).
    """

    recursive = True
    how_to_get = "point root at a folder holding images (any nesting)"
