"""SRDataModule: loaders of uint8 HR images; LR/HR pairs made per batch on the device.

Loaders yield uint8 HR images (decoded once by the datasets); ``on_after_batch_transfer`` turns them into
float pairs in [-1, 1] on the batch's device (the GPU in GPU training), so the CPU only copies bytes.

* **Train** (items ``{"hr", "name"}``): ONE scale per batch, ``s ~ U(scale_min, scale_max)``, drawn with the
  datamodule's own CPU ``torch.Generator`` (seeded by ``seed``; its state is in ``state_dict()`` so a resumed
  run draws the same scales, crops and flips). Mode ``patch``: an HR crop of ``round(lr_patch * s)`` pixels at
  a random position per item, random hflip / vflip / transpose per item (applied to the HR crop before
  degradation, so LR and HR agree), LR = ``degrade(crop, s)`` of ``lr_patch`` pixels. Policy when the crop
  would exceed the image (``round(lr_patch * s) > H``): that batch uses ``lr_patch = floor(H / s)`` instead
  (so the crop fits, ``round(floor(H / s) * s) <= H``); the LR patch shrinks, the scale is kept. Mode ``full``:
  the whole (augmented) HR image, LR of ``round(H / s)``.
* **Val / test / predict** (items add ``nominal_scale``): every image at every listed scale, one scale per
  batch, scale-major order, LR of ``round(H / s)``, no augmentation: the same pairs every run.

**Several processes (DDP).** Training: each rank reads its own share of a per-epoch shuffle
(``TrainSampler``: seed + epoch, as ``DistributedSampler``); the pair generator is seeded alike on every rank,
so all ranks of a step use the same scale (and crop positions, on different images). Val / test: Lightning
injects a ``DistributedSampler``; ``ScaleBatchSampler`` then splits every scale's images into equal contiguous
shares (padding short shares by repeating images of that scale), so all ranks run the same number of batches
and step ``k`` has the same scale everywhere; ``SRMetrics`` gathers the results and drops the repeats.

**Exact resume.** ``state_dict()`` holds the pair generator and the position in the training epoch (batches
turned into pairs so far); a resumed fit rebuilds the same epoch order and skips the batches already trained on.

Batches after transfer (docs/architecture.md): ``hr`` (B,3,H,W) and ``lr`` (B,3,h,w) float in [-1, 1],
``scale`` (B,) float32 true scale ``H / h``, ``nominal_scale`` (B,) float32 (eval only), ``name`` list[str].
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities.warnings import PossibleUserWarning
from torch import Tensor
from torch.utils.data import DataLoader, SequentialSampler

from .datasets import AID, RSSCN7, SPLITS, ImageFolder, SRImageDataset, UCMerced
from .degradation import degrade, sample_scale, validate_scale_range
from .samplers import EvalPairs, ScaleBatchSampler, TrainSampler
from .validation import check_lr_sizes

__all__ = ["DATASETS", "EvalPairs", "SRDataModule", "ScaleBatchSampler", "TrainSampler"]

# Lightning warns (validate/test under DDP) that the DistributedSampler it injects repeats samples;
# ScaleBatchSampler shards the eval pairs itself and SRMetrics counts every (image, scale) once, so the warning
# does not apply to these loaders. It is silenced from setup() to teardown() of a run, not for the process.
_SAMPLER_WARNING = r"Using `DistributedSampler` with the dataloaders"

DATASETS: dict[str, type[SRImageDataset]] = {
    "ucmerced": UCMerced,
    "aid": AID,
    "rsscn7": RSSCN7,
    "folder": ImageFolder,
}


def _check_scales(name: str, scales: Sequence[float]) -> list[float]:
    values = list(scales)
    if not values:
        raise ValueError(f"{name} must list at least one scale")
    for s in values:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 1:
            raise ValueError(f"{name} must hold finite scales >= 1 (HR/LR), got {s!r} in {values}")
    return [float(s) for s in values]


def _check_positive(name: str, value: Any, allow_none: bool = False, minimum: int = 1) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"{name} must be an int >= {minimum}{' or None' if allow_none else ''}, got {value!r}"
        )


def to_signed(x: Tensor) -> Tensor:
    """uint8 (0..255) -> float32 in [-1, 1]."""
    return x.float().div_(127.5).sub_(1.0)


class SRDataModule(L.LightningDataModule):
    """LR/HR pairs at continuously sampled scales for UCMerced, AID, RSSCN7 or a folder (see module doc).

    Args:
        dataset: which dataset class reads ``root``.
        root: dataset folder (layouts: see the dataset classes).
        download: fetch the dataset in ``prepare_data`` when missing (UCMerced only).
        hr_size: HR side in pixels after center crop + bicubic resize.
        split: per-class (train, val, test) fractions, summing to 1.
        split_dir: folder with train.txt / val.txt / test.txt (overrides ``split``).
        mode: ``patch`` (operator training: LR patches of ``lr_patch``) or ``full`` (whole HR images).
        lr_patch: LR patch side in pixels (``patch`` mode).
        scale_min, scale_max: training scale range (HR/LR), ``1 <= scale_min <= scale_max``.
        val_scales, test_scales: evaluation scales (test/predict use ``test_scales``).
        batch_size: training batch size; eval_batch_size: val/test batch size (default ``batch_size``).
        num_workers: loader worker processes.
        augment: random flips / transpose in training.
        max_train_images, max_eval_images: cap the split sizes (round-robin over classes), for quick runs.
        cache_dir: folder for the decoded uint8 ``.npy`` caches (memory-mapped); None keeps them in RAM.
        seed: seeds the pair generator (scales, crops, flips) and the shuffling.
    """

    def __init__(
        self,
        dataset: Literal["ucmerced", "aid", "rsscn7", "folder"] = "ucmerced",
        root: str = "data",
        download: bool = False,
        hr_size: int = 256,
        split: tuple[float, float, float] = (0.6, 0.2, 0.2),
        split_dir: str | None = None,
        mode: Literal["patch", "full"] = "patch",
        lr_patch: int = 48,
        scale_min: float = 1.0,
        scale_max: float = 8.0,
        val_scales: Sequence[float] = (2.0, 3.0, 4.0, 6.0, 8.0),
        test_scales: Sequence[float] = (2.0, 2.5, 3.0, 3.1, 4.0, 6.0, 8.0, 9.0, 10.0),
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        augment: bool = True,
        max_train_images: int | None = None,
        max_eval_images: int | None = None,
        cache_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
        if mode not in ("patch", "full"):
            raise ValueError(f"mode must be 'patch' or 'full', got {mode!r}")
        if download and DATASETS[dataset].url is None:
            raise ValueError(
                f"download=True is only available for ucmerced, not {dataset!r}: "
                + DATASETS[dataset].how_to_get.format(root=root, url=None)
            )
        validate_scale_range(scale_min, scale_max)
        self.val_scales = _check_scales("val_scales", val_scales)
        self.test_scales = _check_scales("test_scales", test_scales)
        for name, value in (("hr_size", hr_size), ("lr_patch", lr_patch), ("batch_size", batch_size)):
            _check_positive(name, value)
        _check_positive("eval_batch_size", eval_batch_size, allow_none=True)
        _check_positive("num_workers", num_workers, minimum=0)
        _check_positive("max_train_images", max_train_images, allow_none=True)
        _check_positive("max_eval_images", max_eval_images, allow_none=True)
        if len(split) != 3 or any(not math.isfinite(f) or f < 0 for f in split) or abs(sum(split) - 1) > 1e-6:
            raise ValueError(
                f"split must be three fractions >= 0 summing to 1 (train, val, test), got {split!r}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        check_lr_sizes(hr_size, scale_max, {"val_scales": self.val_scales, "test_scales": self.test_scales})
        self.save_hyperparameters()
        self.dataset_cls = DATASETS[dataset]
        self.scale_min, self.scale_max = float(scale_min), float(scale_max)
        self.mode, self.lr_patch, self.augment = mode, lr_patch, augment
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.datasets: dict[str, SRImageDataset] = {}
        # Position in training: the epoch and the batches of it turned into pairs (what a resume skips).
        self._epoch, self._epoch_batches = 0, 0
        self._resume: tuple[int, int] | None = None

    # ----------------------------------------------------------------- data preparation
    def prepare_data(self) -> None:
        """Only downloads (UCMerced with ``download=True``); nothing is decoded here."""
        if self.hparams.download:
            self.dataset_cls.ensure_downloaded(self.hparams.root)

    def _dataset(self, split: str, verify_only: bool = False) -> SRImageDataset:
        if split not in self.datasets:
            hp = self.hparams
            data = self.dataset_cls(
                hp.root,
                split=split,
                hr_size=hp.hr_size,
                fractions=hp.split,
                split_dir=hp.split_dir,
                max_images=hp.max_train_images if split == "train" else hp.max_eval_images,
                cache_dir=hp.cache_dir,
                verify_only=verify_only,
            )
            if verify_only:
                return data
            self.datasets[split] = data
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        """Build (decode) the datasets a stage needs: fit -> train + val, validate -> val, test/predict -> test."""
        distributed = self.trainer is not None and self.trainer.world_size > 1
        if distributed and getattr(self, "_warning_scope", None) is None:  # until teardown (_SAMPLER_WARNING)
            self._warning_scope = warnings.catch_warnings()
            self._warning_scope.__enter__()
            warnings.filterwarnings("ignore", message=_SAMPLER_WARNING, category=PossibleUserWarning)
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in splits.get(stage, SPLITS) if stage else SPLITS:
            self._dataset(split)
        if stage == "fit" and "test" not in self.datasets:  # a truncated test image fails now, not after fit
            self._dataset("test", verify_only=True)

    def teardown(self, stage: str | None = None) -> None:
        """Ends the warning scope ``setup`` opened."""
        scope, self._warning_scope = getattr(self, "_warning_scope", None), None
        if scope is not None:
            scope.__exit__(None, None, None)

    # ----------------------------------------------------------------- loaders
    def _loader_kwargs(self) -> dict[str, Any]:
        workers = self.hparams.num_workers
        return {
            "num_workers": workers,
            "persistent_workers": workers > 0,
            "pin_memory": torch.cuda.is_available(),
        }

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        data = self._dataset("train")
        replicas, rank = self._world()
        sampler = TrainSampler(data, num_replicas=replicas, rank=rank, seed=self.hparams.seed)
        drop_last = len(sampler) > self.batch_size
        if self._resume is not None:
            epoch, done = self._resume
            self._resume = None
            per_epoch = (
                len(sampler) // self.batch_size if drop_last else math.ceil(len(sampler) / self.batch_size)
            )
            if done >= per_epoch:  # saved at the end of an epoch: the next one starts afresh
                epoch, done = epoch + 1, 0
            sampler.start_at(epoch, done * self.batch_size)
            self._epoch, self._epoch_batches = epoch, done
        return DataLoader(
            data,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=drop_last,
            **self._loader_kwargs(),
        )

    def _eval_loader(self, split: str, scales: list[float]) -> DataLoader:
        data = self._dataset(split)
        pairs = EvalPairs(data, scales)
        return DataLoader(
            pairs,
            batch_sampler=ScaleBatchSampler(
                SequentialSampler(pairs), self.eval_batch_size, num_images=len(data)
            ),
            **self._loader_kwargs(),
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val", self.val_scales)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test", self.test_scales)

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test", self.test_scales)

    # ----------------------------------------------------------------- pairs
    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """uint8 HR batch -> float pairs in [-1, 1] on the batch's device (eval if it has ``nominal_scale``)."""
        if "nominal_scale" in batch:
            return self.make_eval_pair(batch)
        trainer = self.trainer
        epoch = trainer.current_epoch if trainer is not None else self._epoch
        if epoch != self._epoch:
            self._epoch, self._epoch_batches = epoch, 0
        pair = self.make_train_pair(batch, self.generator)
        self._epoch_batches += 1
        return pair

    def make_eval_pair(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Deterministic pair at the batch's nominal scale: LR of ``round(H / s)`` from the whole HR."""
        nominal = torch.as_tensor(batch["nominal_scale"], dtype=torch.float32)
        if nominal.ndim == 0:
            nominal = nominal.expand(batch["hr"].shape[0])
        if not bool((nominal == nominal[0]).all()):
            raise ValueError(f"an eval batch must hold one scale, got {nominal.tolist()}")
        hr = to_signed(batch["hr"])
        lr, true_scale = degrade(hr, float(nominal[0]))
        b = hr.shape[0]
        return {
            "hr": hr,
            "lr": lr,
            "scale": torch.full((b,), true_scale, dtype=torch.float32, device=hr.device),
            "nominal_scale": nominal.to(hr.device),
            "name": list(batch["name"]),
        }

    def make_train_pair(self, batch: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        """Training pair at one scale drawn from ``generator`` (CPU): crop / augment / degrade (module doc)."""
        hr_u8: Tensor = batch["hr"]
        b, _, h, w = hr_u8.shape
        s = sample_scale(self.scale_min, self.scale_max, generator)
        if self.mode == "patch":
            lr_patch = self.lr_patch
            if round(lr_patch * s) > min(h, w):
                lr_patch = max(1, math.floor(min(h, w) / s))  # documented shrink policy
            side = min(round(lr_patch * s), h, w)
            tops = torch.randint(0, h - side + 1, (b,), generator=generator).tolist()
            lefts = torch.randint(0, w - side + 1, (b,), generator=generator).tolist()
            windows = zip(tops, lefts, strict=True)
            hr = torch.stack([hr_u8[i, :, t : t + side, x : x + side] for i, (t, x) in enumerate(windows)])
        else:
            hr = hr_u8
        if self.augment:
            flips = torch.rand((b, 3), generator=generator) < 0.5
            hr = self.augment_batch(hr, flips.to(hr.device))
        hr = to_signed(hr)
        lr, true_scale = degrade(hr, s)
        return {
            "hr": hr,
            "lr": lr,
            "scale": torch.full((b,), true_scale, dtype=torch.float32, device=hr.device),
            "name": list(batch["name"]),
        }

    @staticmethod
    def augment_batch(x: Tensor, flips: Tensor) -> Tensor:
        """Per item ``i`` of ``(B, C, H, W)``: hflip if ``flips[i, 0]``, then vflip if ``flips[i, 1]``, then
        transpose if ``flips[i, 2]`` (squares only). Masked whole-batch ops: stacking per-item views is slow."""
        hflip, vflip, transpose = (m[:, None, None, None] for m in flips.unbind(1))
        x = torch.where(hflip, x.flip(-1), x)
        x = torch.where(vflip, x.flip(-2), x)
        if x.shape[-1] == x.shape[-2]:
            x = torch.where(transpose, x.transpose(-1, -2), x)
        return x

    # ----------------------------------------------------------------- checkpointed state
    def state_dict(self) -> dict[str, Any]:
        """The pair generator's state and the position in the training epoch, saved in checkpoints so a
        resumed run continues the same draws on the same remaining batches."""
        return {
            "generator_state": self.generator.get_state(),
            "epoch": self._epoch,
            "epoch_batches": self._epoch_batches,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "generator_state" in state_dict:
            self.generator.set_state(state_dict["generator_state"])
        if "epoch" in state_dict:
            self._resume = (int(state_dict["epoch"]), int(state_dict["epoch_batches"]))
