"""DiffusionModule: the SR3-style conditional UNet guided by the frozen neural operator (NeurOp-Diff)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from tqdm.auto import tqdm

from neurop_diff.diffusion.sampling import ddim_sample
from neurop_diff.diffusion.schedule import make_schedule, q_sample, sample_gamma
from neurop_diff.lit.base import SRTask, stepwise, stream_seed
from neurop_diff.lit.operator import SRNO_DEFAULTS, load_operator
from neurop_diff.models.operator import SRNO
from neurop_diff.models.unet import UNet

Condition = Literal["operator", "bicubic", "encoder", "operator_features"]

#: The authors' step decay (paper 4.1): constant 1e-4 for 100k iterations, then one value per 100k.
AUTHORS_LR_SCHEDULE = [1e-4, 8e-5, 6e-5, 4e-5, 2e-5, 1e-5, 8e-6, 6e-6, 4e-6, 2e-6]


def condition_channels(condition: str, operator_args: dict[str, int] | None) -> int:
    """Channels the condition adds to the UNet input (x_t has 3)."""
    args = {**SRNO_DEFAULTS, **(operator_args or {})}
    return {
        "operator": 3,
        "bicubic": 3,
        "encoder": args["encoder_width"],
        "operator_features": args["width"],
    }[condition]


class DiffusionModule(SRTask):
    """Conditional denoising diffusion guided by a frozen SRNO prior, trained on `full`-mode batches.

    Args:
        operator_ckpt: OperatorModule checkpoint or the authors' SRNO weights; needed to train with an operator
            condition. The operator's weights are stored in this module's checkpoint, so test/predict need only it.
        operator_args: SRNO size; filled in from `operator_ckpt` (leave it unset).
        condition: what guides the UNet: `operator` (the operator's HR RGB output: the authors'), `bicubic`
            (bicubic-upsampled LR: SR3), `encoder` (EDSR features of the LR, bilinearly upsampled to HR),
            `operator_features` (the operator's width-channel features before its head).
        base_channels ... dropout: the UNet (defaults: the authors', ~47.5M parameters).
        schedule, timesteps, beta_start, beta_end: the noise schedule (authors: linear 1e-6..1e-2, T=2000).
        loss: `l1` (paper) or `l2` on the predicted noise.
        lr_schedule, lr_step_every: absolute Adam learning rates, one per `lr_step_every` optimizer steps.
        sampling_steps, eta, spacing: DDIM sampling at validation/test/predict.
        seed: seeds the training noise (per rank and batch, see `SRTask`) and the sampling: with `eta = 0` the
            starting noise of every image comes from (seed, image name, scale), so an image's result does not
            depend on the batch or the number of processes; other draws are seeded per batch.
        chunk_size: operator query points evaluated at once when computing the prior.
    """

    def __init__(
        self,
        operator_ckpt: str | None = None,
        operator_args: dict[str, int] | None = None,
        condition: Condition = "operator",
        base_channels: int = 64,
        channel_mults: tuple[int, ...] = (1, 2, 2, 4, 4, 8),
        res_blocks: int = 1,
        attn_resolutions: tuple[int, ...] = (16,),
        image_size: int = 256,
        norm_groups: int = 16,
        dropout: float = 0.2,
        schedule: Literal["linear", "cosine"] = "linear",
        timesteps: int = 2000,
        beta_start: float = 1e-6,
        beta_end: float = 1e-2,
        loss: Literal["l1", "l2"] = "l1",
        lr_schedule: list[float] | None = None,
        lr_step_every: int = 100_000,
        sampling_steps: int = 50,
        eta: float = 0.0,
        spacing: Literal["uniform", "quadratic"] = "uniform",
        seed: int = 0,
        chunk_size: int | None = 65536,
    ) -> None:
        super().__init__()
        if sampling_steps < 1 or sampling_steps > timesteps:
            raise ValueError(f"sampling_steps must be in [1, timesteps={timesteps}], got {sampling_steps}")
        self.operator: SRNO | None = None
        self._operator_loaded = False
        if operator_ckpt is not None and Path(operator_ckpt).is_file():
            self.operator, operator_args = load_operator(operator_ckpt)
            self._operator_loaded = True
        elif operator_args is not None:
            # Rebuilt from this module's own checkpoint: the weights come with its state dict.
            self.operator = SRNO(**operator_args).eval().requires_grad_(False)
        elif condition != "bicubic" or operator_ckpt is not None:
            raise FileNotFoundError(
                f"operator checkpoint not found: {operator_ckpt!r} (model.init_args.operator_ckpt). The "
                f"'{condition}' condition needs the trained operator: train it first with "
                "`neurop-diff fit --config configs/operator.yaml` or import the authors' weights with "
                "`neurop-diff import-weights`"
            )
        self.save_hyperparameters()
        self.hparams["operator_args"] = operator_args
        self.unet = UNet(
            in_channels=3 + condition_channels(condition, operator_args),
            out_channels=3,
            base_channels=base_channels,
            channel_mults=tuple(channel_mults),
            res_blocks=res_blocks,
            attn_resolutions=tuple(attn_resolutions),
            image_size=image_size,
            norm_groups=norm_groups,
            dropout=dropout,
        )
        self.schedule = make_schedule(schedule, timesteps, beta_start, beta_end)
        # The training noise generator, reseeded for every batch (rank, batch count: see SRTask).
        self._generator = torch.Generator().manual_seed(seed)

    # --- the operator stays frozen and out of the optimizer ---------------------------------------------------
    def train(self, mode: bool = True) -> DiffusionModule:
        super().train(mode)
        if self.operator is not None:
            self.operator.eval()
        return self

    def on_fit_start(self) -> None:
        if self.operator is not None and not self._operator_loaded and self.trainer.ckpt_path is None:
            raise RuntimeError(
                "the operator has no trained weights: set model.init_args.operator_ckpt to an OperatorModule "
                "checkpoint (or resume a diffusion run with --ckpt_path)"
            )

    @torch.no_grad()
    def condition(self, lr: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor | None]:
        """(condition (B,C,H,W), operator RGB prior (B,3,H,W) in [-1,1] or None), computed once per image.

        The prior is also computed for the other conditions outside training, as the `operator` result row.
        The frozen operator runs in float32 under mixed precision too (see OperatorModule.forward).
        """
        with torch.autocast(lr.device.type, enabled=False):
            return self._condition(lr.float(), size)

    def _condition(self, lr: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor | None]:
        kind, chunk = self.hparams.condition, self.hparams.chunk_size
        prior = None
        if self.operator is not None and (kind == "operator" or not self.training):
            prior = self.operator(lr, size, chunk_size=chunk)
        if kind == "operator":
            return prior, prior
        if kind == "operator_features":
            cond = self.operator.features(lr, size, chunk_size=chunk)
        elif kind == "encoder":
            cond = F.interpolate(self.operator.encode(lr), size=size, mode="bilinear", align_corners=False)
        else:
            cond = F.interpolate(lr, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)
        return cond, prior

    def denoise(self, x_t: Tensor, gamma: Tensor, condition: Tensor) -> Tensor:
        """Predicted noise for x_t (B,3,H,W) at noise level gamma (B,) given the condition (x_t first, as the authors)."""
        return self.unet(torch.cat([x_t, condition], dim=1), gamma)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        hr, lr = batch["hr"], batch["lr"]
        cond, _ = self.condition(lr, tuple(hr.shape[-2:]))
        self._generator.manual_seed(self.training_seed("diffusion"))
        gamma = sample_gamma(self.schedule, hr.shape[0], generator=self._generator).to(hr)
        noise = torch.randn(hr.shape, generator=self._generator).to(hr)
        pred = self.denoise(q_sample(hr, gamma, noise), gamma, cond)
        loss = F.l1_loss(pred, noise) if self.hparams.loss == "l1" else F.mse_loss(pred, noise)
        self._check_finite(loss, batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=hr.shape[0])
        self.log("train/scale", batch["scale"][0], batch_size=hr.shape[0])
        return loss

    def super_resolve(self, batch: dict, batch_idx: int) -> dict[str, Tensor]:
        lr = batch["lr"]
        size = tuple(batch["hr"].shape[-2:])
        cond, prior = self.condition(lr, size)
        x_T, generator = self._sampling_noise(batch, batch_idx, (lr.shape[0], 3, *size))
        bar = self._step_bar(f"DDIM x{float(batch['scale'][0]):.2f}")
        sr = ddim_sample(
            self.denoise,
            cond,
            (lr.shape[0], 3, *size),
            self.schedule,
            steps=self.hparams.sampling_steps,
            eta=self.hparams.eta,
            spacing=self.hparams.spacing,
            generator=generator,
            x_T=x_T.to(lr) if x_T is not None else None,
            device=lr.device,
            dtype=lr.dtype,
            callback=(lambda _: bar.update(1)) if bar is not None else None,
        )
        if bar is not None:
            bar.close()
        out = {"diffusion": sr}
        if prior is not None:
            out["operator"] = prior
        return out

    def _sampling_noise(
        self, batch: dict, batch_idx: int, shape: tuple[int, ...]
    ) -> tuple[Tensor | None, torch.Generator]:
        """(starting noise x_T (B,3,H,W) float32 on the CPU, or None; generator for the further draws).

        With image names, x_T comes image by image from (seed, name, nominal scale): the same for an image in any
        batch on any rank, so multi-process results equal single-process ones. The generator (used with eta > 0,
        or for x_T without names) is seeded by (seed, the batch's first name and scale), or without names by
        seed + 1_000_003 * rank + batch_idx.
        """
        seed, names = self.hparams.seed, batch.get("name")
        scale = float(torch.as_tensor(batch.get("nominal_scale", batch["scale"])).reshape(-1)[0])
        if names and len(names) == shape[0]:
            x_T = torch.stack(
                [
                    torch.randn(
                        shape[1:], generator=torch.Generator().manual_seed(stream_seed(seed, n, scale))
                    )
                    for n in names
                ]
            )
            return x_T, torch.Generator().manual_seed(stream_seed("steps", seed, names[0], scale))
        rank = self.global_rank if self._trainer else 0
        # Without names: as before (neurop_diff.inference reproduces this draw for a single batch).
        return None, torch.Generator().manual_seed(seed + 1_000_003 * rank + batch_idx)

    def _step_bar(self, desc: str) -> tqdm | None:
        """A transient bar over the sampling steps of one batch, under Lightning's own bars (rank 0 only)."""
        if (
            self._trainer is None
            or not self.trainer.is_global_zero
            or self.trainer.progress_bar_callback is None
        ):
            return None
        if self.trainer.sanity_checking:
            return None
        return tqdm(total=self.hparams.sampling_steps, desc=desc, leave=False, position=2, dynamic_ncols=True)

    def configure_optimizers(self) -> dict[str, Any]:
        values = self.hparams.lr_schedule or AUTHORS_LR_SCHEDULE
        opt = torch.optim.Adam(self.unet.parameters(), lr=values[0], betas=(0.9, 0.999), eps=1e-8)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, stepwise(list(values), self.hparams.lr_step_every))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.operator is not None:
            rank_zero_info("DiffusionModule: operator weights restored from the diffusion checkpoint")
