"""OperatorModule: trains a neural operator (SRNO, or LIIF for comparison) on LR patches at continuously
sampled scales."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from neurop_diff.compat import attached_trainer
from neurop_diff.data.degradation import make_cell, make_coord
from neurop_diff.lit.base import SRTask, adam, warmup_cosine
from neurop_diff.models.build import (
    ARCHS,
    LIIF_ARGS,
    LIIF_DEFAULTS,
    SRNO_ARGS,
    SRNO_DEFAULTS,
    build_operator,
    full_operator_args,
)
from neurop_diff.weights import load_liif_weights, load_srno_weights

__all__ = ["LIIF_ARGS", "SRNO_ARGS", "SRNO_DEFAULTS", "Arch", "OperatorModule"]

Arch = Literal["srno", "liif"]


class OperatorModule(SRTask):
    """A neural operator trained with L1 in [-1, 1] on `patch`-mode batches: SRNO (EDSR encoder + Galerkin
    attention, the paper's) or LIIF (EDSR encoder + local implicit MLP, the paper's Table 4 comparator).

    Args:
        arch: `srno` or `liif` (`models/srno.py`, `models/liif.py`); checkpoints without it are SRNO.
        encoder_blocks, encoder_width: the EDSR-baseline encoder of either arch (defaults: the authors').
        width, blocks, heads, head_width: SRNO's size (arch `srno` only).
        mlp_width, mlp_depth: LIIF's MLP hidden width and hidden layers (arch `liif` only; 256, 4).
        sample_q: HR pixels per item used as the training quadrature set and loss points (LIIF/SRNO); None or
            0 uses the whole HR crop.
        lr: peak learning rate (Adam); warm-up starts at lr / 10 (SRNO's x10 warm-up).
        warmup_fraction: fraction of the total optimizer steps spent warming up (SRNO: 50 of 1000 epochs).
        weight_decay: Adam weight decay.
        chunk_size: query points evaluated at once at validation/test/predict (exact; bounds memory).
        weights: optional path to the authors' weights of `arch` loaded at construction: SRNO
            (`srno_weight.pth` or an SRNO `epoch-*.pth`) or LIIF (`edsr-baseline-liif.pth`).
        seed: seeds the training random stream (the point subsets), per rank and batch (see `SRTask`).
    """

    #: Hyper-parameters that set parameter shapes (a checkpoint's value is kept; another one is an error).
    ARCH_HPARAMS: ClassVar[frozenset[str]] = frozenset(("arch", *SRNO_ARGS, *LIIF_ARGS))  # of either arch

    @classmethod
    def weight_hparams(cls, hparams: Mapping[str, Any]) -> frozenset[str]:
        """``arch`` and the sizes of that arch only (of ``ARCH_HPARAMS``): an SRNO checkpoint does not care
        about ``mlp_width`` (so a config that sizes both archs, like configs/model/small.yaml, loads either). No
        ``arch``: an SRNO."""
        return frozenset(("arch", *ARCHS[hparams.get("arch", "srno")][1]))

    def __init__(
        self,
        arch: Arch = "srno",
        encoder_blocks: int = SRNO_DEFAULTS["encoder_blocks"],
        encoder_width: int = SRNO_DEFAULTS["encoder_width"],
        width: int = SRNO_DEFAULTS["width"],
        blocks: int = SRNO_DEFAULTS["blocks"],
        heads: int = SRNO_DEFAULTS["heads"],
        head_width: int = SRNO_DEFAULTS["head_width"],
        mlp_width: int = LIIF_DEFAULTS["mlp_width"],
        mlp_depth: int = LIIF_DEFAULTS["mlp_depth"],
        sample_q: int | None = 2304,
        lr: float = 4e-4,
        warmup_fraction: float = 0.05,
        weight_decay: float = 0.0,
        chunk_size: int | None = 65536,
        weights: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if sample_q is not None and sample_q < 0:
            raise ValueError(f"sample_q must be >= 0 or None, got {sample_q}")
        if not 0 <= warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
        self.save_hyperparameters()
        self.model = build_operator(full_operator_args(arch, self.hparams))
        if weights is not None:
            (load_liif_weights if arch == "liif" else load_srno_weights)(self.model, weights)

    def forward(self, lr: Tensor, size: tuple[int, int]) -> Tensor:
        """SR image (B,3,H,W) float32 in about [-1,1] from an LR image (B,3,h,w) in [-1,1].

        Evaluated in float32 even under mixed precision: the exact chunked evaluation mixes dtypes that
        autocast does not reconcile (embedding_bag), and evaluation is where precision is reported."""
        with torch.autocast(lr.device.type, enabled=False):
            return self.model(lr.float(), size, chunk_size=self.hparams.chunk_size)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        hr, lr = batch["hr"], batch["lr"]
        b, _, h, w = hr.shape
        coord = make_coord((h, w), device=hr.device, dtype=hr.dtype).reshape(1, h * w, 2).expand(b, -1, -1)
        target = hr.flatten(2).transpose(1, 2)  # (B, N, 3)
        q = self.hparams.sample_q
        if q and q < h * w:
            # A different random subset per item: the attention's quadrature set and the loss points. The global
            # generator is seeded per batch (SRTask.on_train_batch_start), so a resumed run draws the same.
            idx = torch.rand(b, h * w, device=hr.device).argsort(dim=1)[:, :q]
            coord = coord.gather(1, idx[..., None].expand(-1, -1, 2))
            target = target.gather(1, idx[..., None].expand(-1, -1, 3))
        cell = make_cell((h, w), batch_size=b, device=hr.device, dtype=hr.dtype)
        feat = self.model.encode(lr)
        # Under mixed precision only the encoder runs in half precision: the query's neighbour gather
        # (embedding_bag) does not accept the mixed dtypes autocast produces.
        with torch.autocast(hr.device.type, enabled=False):
            pred = self.model.query(feat.float(), lr.float(), coord, cell)
        loss = F.l1_loss(pred, target)
        self._check_finite(loss, batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        self.log("train/scale", batch["scale"][0], batch_size=b)
        return loss

    def super_resolve(self, batch: dict, batch_idx: int) -> dict[str, Tensor]:
        return {"operator": self(batch["lr"], tuple(batch["hr"].shape[-2:]))}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        # Checkpoints made before LIIF was added record no arch: they are SRNO (named in a loading error).
        self._loading_hparams.setdefault("arch", "srno")

    def configure_optimizers(self) -> dict[str, Any]:
        opt = adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = self.trainer.estimated_stepping_batches if attached_trainer(self) else 1
        if not math.isfinite(total):
            raise ValueError(
                "OperatorModule's warm-up + cosine schedule needs a horizon: set trainer.max_steps or "
                "trainer.max_epochs (trainer.max_time may still stop the run earlier)"
            )
        total = int(total)
        factor = warmup_cosine(int(self.hparams.warmup_fraction * total), total)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
