"""DiffusionModule: the SR3-style conditional UNet guided by the frozen neural operator (NeurOp-Diff)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from tqdm.auto import tqdm

from neurop_diff.compat import attached_trainer
from neurop_diff.diffusion.consistency import LRConsistency
from neurop_diff.diffusion.flow import TimeSampling, sample_flow_times
from neurop_diff.diffusion.ksamplers import Sampler
from neurop_diff.diffusion.options import SamplingOptions
from neurop_diff.diffusion.parameterisation import LossWeighting, Prediction
from neurop_diff.diffusion.sampling import Spacing
from neurop_diff.diffusion.schedule import (
    EDM_P_MEAN,
    EDM_P_STD,
    EDM_SIGMA_DATA,
    LevelSampling,
    NoiseSchedule,
    sample_levels,
)
from neurop_diff.evaluation.spread import seed_std
from neurop_diff.lit.base import SRTask, adam, stepwise
from neurop_diff.models.build import build_operator, full_operator_args, neuropdiff_from_hparams
from neurop_diff.models.neuropdiff import Condition, Process, check_process
from neurop_diff.models.operator import Operator
from neurop_diff.models.unet import NoiseEmbedding, UNet
from neurop_diff.weights.checkpoint import load_operator

#: The authors' step decay (paper 4.1): constant 1e-4 for 100k iterations, then one value per 100k.
AUTHORS_LR_SCHEDULE = [1e-4, 8e-5, 6e-5, 4e-5, 2e-5, 1e-5, 8e-6, 6e-6, 4e-6, 2e-6]


class DiffusionModule(SRTask):
    """Trains NeurOp-Diff (:class:`~neurop_diff.models.neuropdiff.NeurOpDiff`: a conditional UNet guided by a
    frozen operator prior, SRNO or LIIF) on `full`-mode batches; validation/test/predict sample with the model's
    own `sample`.

    Args:
        operator_ckpt: OperatorModule checkpoint (SRNO or LIIF) or the authors' SRNO / LIIF weights; needed to
            train with an operator condition. The operator's weights are stored in this module's checkpoint, so
            test/predict need only it.
        operator_args: the operator's `arch` (`srno`, `liif`; absent: srno) and size; filled in from
            `operator_ckpt` (leave it unset).
        condition: what guides the UNet: `operator` (the operator's HR RGB output: the authors'), `bicubic`
            (bicubic-upsampled LR: SR3), `encoder` (EDSR features of the LR, bilinearly upsampled to HR),
            `operator_features` (SRNO's width-channel features before its head; not with a LIIF operator).
        prediction: what the UNet predicts: `eps` (the paper's), `x0`, `v` (Salimans & Ho 2022) or `edm`
            (Karras et al. 2022's preconditioned output: the estimate is x_t at low noise, the UNet a correction).
        residual: the UNet's clean target is HR - condition (the `operator` / `bicubic` conditions): the clean
            estimate is the prior plus a learnt residual; the UNet's last conv starts at zero, so an untrained x0
            model returns the prior (v, edm: the prior plus the noise they have yet to learn to remove). No effect
            with `eps` (see `models.neuropdiff`).
        sigma_data: the `edm` target's std (None: 0.5, or 0.1 with `residual`).
        noise_embedding: how the UNet sees the noise level: `sr3` (a sinusoid of gamma: SR3's and the authors',
            needed for their weights; it barely tells the low-noise levels apart) or `log_sigma` (of EDM's
            c_noise = ln(sigma) / 4, Karras et al. 2022; required by `edm`).
        process, flow_noise, conditioned, time_sampling: `diffusion` (the paper's) or `flow`: posterior-mean
            rectified flow (PMRF, Ohayon et al. 2025) from `prior + flow_noise * eps` ([-1, 1] units; PMRF's 0.1 on
            [0, 1] images is 0.2) to HR, the UNet predicting the velocity (L2: `loss: l2`), its level embedded as
            `noise_embedding: time`; `conditioned: false` feeds the UNet the path alone (PMRF), true also the
            prior; training times `uniform` or `logit_normal`. Samplers `euler`, `heun` (`ddim` = Euler).
        base_channels ... dropout: the UNet (defaults: the authors', ~47.5M parameters).
        channels_last: run the UNet in channels_last memory format (faster convolutions on CPU and GPU; 1.15x
            per UNet step on the 2-core CPU with the tuned allocator, 1.5x without: docs/benchmarks.md).
        schedule, timesteps, beta_start, beta_end: the noise schedule (authors: linear 1e-6..1e-2, T=2000).
        loss: `l1` (paper) or `l2` on the prediction target; loss_weighting: `none`, `min_snr` (Hang et al.
            2023, weight min(SNR, 5) in x0 terms) or `edm` (Karras et al.'s lambda(sigma); 1 on the `edm` target);
            square-rooted for `l1` (`diffusion.parameterisation.loss_weight`).
        level_sampling, p_mean, p_std: training noise levels, one per image: `sr3` (a timestep uniform over the
            schedule, gamma uniform within it) or `lognormal` (ln VE sigma ~ N(p_mean, p_std^2), Karras et al.
            2022; p_mean None: EDM's -1.2 moved by ln(sigma_data / 0.5), i.e. centred on the residual's scale
            with `residual`).
        input_perturbation: the UNet's training input is noised with ``eps + input_perturbation * xi`` (xi a
            second Gaussian; Ning et al. 2023, DDPM-IP: 0.1); an `eps` model keeps the target ``eps`` (DDPM-IP's),
            the others the target of the input they see (it still implies HR); 0 = off.
        lr_schedule, lr_step_every: absolute Adam learning rates, one per `lr_step_every` optimizer steps.
        sampler, sampling_steps, eta, spacing: sampling at validation/test/predict: `ddim` (`sampling_steps`,
            `eta`), `ddpm` over all `timesteps`, or the ODE samplers `euler`, `heun`, `dpmpp_2m` (Lu et al. 2022);
            spacing of the levels `leading` (DDIM's; `uniform` is its old name), `trailing` (Lin et al. 2024:
            starts at the highest level), `linspace`, `quadratic` or `karras`.
        samples: samples drawn per image at validation/test/predict (seeds seed..seed+K-1): the first is the
            result, the mean per-pixel std over all K is reported as `seed_std` (SRMetrics; predict: the
            SRPredictionWriter's seed_std.csv).
        lr_consistency: `project`: every sampling step's clean estimate is projected onto the LR input
            (`diffusion.consistency`, DDNM-style back-projection), so samples downsample back to their LR.
        clip_denoised: clamp the predicted HR to [-1, 1] at every sampling step (SR3; the authors' code does not).
        seed: seeds the training noise (per rank and batch, see `SRTask`) and the sampling: every image starts
            from `starting_noise(seed)` (so `neurop-diff test`, `predict` and `upscale` give the same sample of an
            image, in any batch on any rank); with `eta > 0` the step noise comes from that generator too.
        chunk_size: operator query points evaluated at once when computing the prior.
    """

    #: Hyper-parameters that define the weights (parameter shapes, or what the UNet was trained to predict):
    #: `--ckpt_path` keeps the checkpoint's values and another value is an error (neurop_diff.cli).
    ARCH_HPARAMS: ClassVar[frozenset[str]] = frozenset(
        ("condition", "operator_args", "base_channels", "channel_mults", "res_blocks", "attn_resolutions",
         "image_size", "norm_groups", "prediction", "residual", "sigma_data", "noise_embedding", "process",
         "flow_noise", "conditioned")
    )  # fmt: skip

    def __init__(
        self,
        operator_ckpt: str | None = None,
        operator_args: dict[str, int | str] | None = None,
        condition: Condition = "operator",
        prediction: Prediction = "eps",
        residual: bool = False,
        sigma_data: float | None = None,
        noise_embedding: NoiseEmbedding = "sr3",
        process: Process = "diffusion",
        flow_noise: float = 0.2,
        conditioned: bool = True,
        time_sampling: TimeSampling = "uniform",
        base_channels: int = 64,
        channel_mults: tuple[int, ...] = (1, 2, 2, 4, 4, 8),
        res_blocks: int = 1,
        attn_resolutions: tuple[int, ...] = (16,),
        image_size: int = 256,
        norm_groups: int = 16,
        dropout: float = 0.2,
        channels_last: bool = True,
        schedule: Literal["linear", "cosine"] = "linear",
        timesteps: int = 2000,
        beta_start: float = 1e-6,
        beta_end: float = 1e-2,
        loss: Literal["l1", "l2"] = "l1",
        loss_weighting: LossWeighting = "none",
        input_perturbation: float = 0.0,
        level_sampling: LevelSampling = "sr3",
        p_mean: float | None = None,
        p_std: float = EDM_P_STD,
        lr_schedule: list[float] | None = None,
        lr_step_every: int = 100_000,
        sampler: Sampler = "ddim",
        sampling_steps: int = 50,
        eta: float = 0.0,
        spacing: Spacing = "leading",
        samples: int = 1,
        lr_consistency: LRConsistency = "none",
        clip_denoised: bool = True,
        seed: int = 0,
        chunk_size: int | None = 65536,
    ) -> None:
        super().__init__()
        _check_training_options(input_perturbation, level_sampling, p_std, time_sampling)
        check_process(process, condition, noise_embedding, conditioned, flow_noise)  # before any file is read
        if sampling_steps > timesteps:
            raise ValueError(f"sampling_steps must be in [1, timesteps={timesteps}], got {sampling_steps}")
        operator, operator_args, self._operator_loaded = _resolve_operator(
            operator_ckpt, operator_args, condition
        )
        self.save_hyperparameters()
        self.hparams["operator_args"] = operator_args
        SamplingOptions.from_hparams(self.hparams)  # bad sampling options fail now, not at validation
        self.model = neuropdiff_from_hparams(self.hparams, operator)
        # The training noise generator, reseeded for every batch (rank, batch count: see SRTask).
        self._generator = torch.Generator().manual_seed(seed)

    @property
    def sampling(self) -> SamplingOptions:
        """How validation, test and predict sample (the recorded `sampler`, `sampling_steps`, `eta`, `spacing`,
        `lr_consistency`, `seed`, `samples`)."""
        return SamplingOptions.from_hparams(self.hparams)

    # The model's parts, by their usual names.
    @property
    def unet(self) -> UNet:
        return self.model.unet

    @property
    def operator(self) -> Operator | None:
        return self.model.operator

    @property
    def schedule(self) -> NoiseSchedule:
        return self.model.schedule

    def condition(self, lr: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor | None]:
        """(condition, operator prior or None) of the model, with the prior outside training only."""
        return self.model.condition(lr, size, with_prior=not self.training)

    @property
    def p_mean(self) -> float:
        """The log-normal levels' mean of ln(VE sigma): `p_mean`, or EDM's -1.2 moved by ln(sigma_data / 0.5)."""
        if self.hparams.p_mean is not None:
            return float(self.hparams.p_mean)
        return EDM_P_MEAN + math.log(self.model.sigma_data / EDM_SIGMA_DATA)

    def on_fit_start(self) -> None:
        if self.operator is not None and not self._operator_loaded and self.trainer.ckpt_path is None:
            raise RuntimeError(
                "the operator has no trained weights: set model.init_args.operator_ckpt to an OperatorModule "
                "checkpoint (or resume a diffusion run with --ckpt_path)"
            )

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        hr, lr = batch["hr"], batch["lr"]
        cond, _ = self.condition(lr, tuple(hr.shape[-2:]))
        self._generator.manual_seed(self.training_seed("diffusion"))
        hp = self.hparams
        if hp.process == "flow":  # the flow's level is its time t
            gamma = sample_flow_times(
                hr.shape[0], hp.time_sampling, generator=self._generator, device=hr.device
            )
        else:
            gamma = sample_levels(
                self.schedule, hr.shape[0], hp.level_sampling, p_mean=self.p_mean, p_std=hp.p_std,
                generator=self._generator, device=hr.device,
            )  # fmt: skip
        noise = torch.randn(hr.shape, generator=self._generator).to(hr)
        extra = hp.input_perturbation
        input_noise = (
            noise + extra * torch.randn(hr.shape, generator=self._generator).to(hr) if extra else None
        )
        loss = self.model.training_loss(
            hr, cond.to(hr.dtype), gamma, noise, hp.loss, hp.loss_weighting, input_noise
        )
        self._check_finite(loss, batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=hr.shape[0])
        self.log("train/scale", batch["scale"][0], batch_size=hr.shape[0])
        return loss

    def super_resolve(self, batch: dict, batch_idx: int) -> dict[str, Tensor]:
        return self._sample_batch(batch, 1)[0]

    def _eval_step(self, batch: dict, batch_idx: int) -> dict[str, dict[str, Tensor]]:
        sr, spread = self._sample_batch(batch, self.sampling.samples)
        return {"sr": sr, **({"seed_std": {"diffusion": spread}} if spread is not None else {})}

    def _sample_batch(self, batch: dict, k: int) -> tuple[dict[str, Tensor], Tensor | None]:
        """({"diffusion": the sample of seed `seed`, "operator": the prior}, the (B,) seed spread of k samples
        with seeds seed..seed+k-1, or None for k = 1)."""
        lr, opts = batch["lr"], self.sampling
        size = tuple(batch["hr"].shape[-2:])
        cond, prior = self.condition(lr, size)
        steps = self.schedule.T if opts.sampler == "ddpm" else opts.steps
        bar = self._step_bar(f"{opts.sampler.upper()} x{float(batch['scale'][0]):.2f}", steps * k)
        # Every image starts from the same seeded noise, whatever batch or rank it is in (see `seed`).
        draws = [
            self.model.sample(
                lr, size, **opts.sample_kwargs(), seed=opts.seed + j, condition=(cond, prior),
                callback=(lambda _: bar.update(1)) if bar is not None else None,
            )
            for j in range(k)
        ]  # fmt: skip
        if bar is not None:
            bar.close()
        out = {"diffusion": draws[0]}
        if prior is not None:
            out["operator"] = prior
        return out, seed_std(torch.stack(draws)) if k > 1 else None

    def _step_bar(self, desc: str, total: int) -> tqdm | None:
        """A transient bar over the sampling steps of one batch, under Lightning's own bars (rank 0 only)."""
        if (
            attached_trainer(self) is None
            or not self.trainer.is_global_zero
            or self.trainer.progress_bar_callback is None
        ):
            return None
        if self.trainer.sanity_checking:
            return None
        return tqdm(total=total, desc=desc, leave=False, position=2, dynamic_ncols=True)

    def configure_optimizers(self) -> dict[str, Any]:
        values = self.hparams.lr_schedule or AUTHORS_LR_SCHEDULE
        opt = adam(self.unet.parameters(), lr=values[0], betas=(0.9, 0.999), eps=1e-8)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, stepwise(list(values), self.hparams.lr_step_every))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.operator is not None:
            rank_zero_info("DiffusionModule: operator weights restored from the diffusion checkpoint")


def _check_training_options(
    input_perturbation: float, level_sampling: str, p_std: float, time_sampling: str
) -> None:
    if not 0 <= input_perturbation < 1:
        raise ValueError(f"input_perturbation must be in [0, 1), got {input_perturbation}")
    if level_sampling not in LevelSampling.__args__:
        raise ValueError(f"level_sampling must be one of {LevelSampling.__args__}, got {level_sampling!r}")
    if not p_std > 0:
        raise ValueError(f"p_std must be > 0 (the std of ln sigma of the training levels), got {p_std!r}")
    if time_sampling not in TimeSampling.__args__:
        raise ValueError(f"time_sampling must be one of {TimeSampling.__args__}, got {time_sampling!r}")


def _resolve_operator(
    operator_ckpt: str | None, operator_args: dict[str, Any] | None, condition: str
) -> tuple[Operator | None, dict[str, Any] | None, bool]:
    """(operator, its full `operator_args`, whether its trained weights were loaded): from `operator_ckpt`, or
    rebuilt from the recorded `operator_args` (the weights then come with the module's state dict)."""
    if operator_ckpt is not None and Path(operator_ckpt).is_file():
        operator, args = load_operator(operator_ckpt)
        return operator, args, True
    if operator_args is not None:
        arch = str(operator_args.get("arch", "srno"))
        return build_operator(operator_args), full_operator_args(arch, operator_args), False
    if condition != "bicubic" or operator_ckpt is not None:
        raise FileNotFoundError(
            f"operator checkpoint not found: {operator_ckpt!r} (model.init_args.operator_ckpt). The "
            f"'{condition}' condition needs the trained operator: train it first with "
            "`neurop-diff fit --config configs/operator.yaml` or import the authors' weights with "
            "`neurop-diff import-weights`"
        )
    return None, None, False
