"""NeurOp-Diff as a plain model: the frozen neural-operator prior, the conditional UNet and the noise schedule.

Training (``lit.DiffusionModule``), evaluation and ``neurop_diff.upscale`` all call this one model: the same
``condition``, the same ``denoised`` and the same ``sample`` (tiling is only a way of evaluating the denoiser on
large canvases, see ``diffusion.tiling``), so one image, scale and seed give one result on every path.

Images are float (B, C, H, W) in [-1, 1]; ``size`` is the HR (H, W). Two names for one noise level: SR3's
``gamma = sqrt(abar)`` (the schedule, training draws, the UNet's input) and the VE ``sigma = sqrt(1 - gamma^2) /
gamma`` (the samplers and ``denoised``, Karras et al. 2022): ``x = x_t / gamma = x0 + sigma eps``.

``residual=True`` makes the UNet's clean target the residual ``HR - base``, where the base is the condition image
itself (the operator's RGB prior, or the bicubic upsampling; SRDiff, Li et al. 2022): the diffusion still runs on
HR (the UNet sees ``x_t`` of HR, as without it), and its output is read in the shifted variable
``x_t - gamma base``, so the clean estimate is ``base + residual`` (``edm`` feeds the scaled residual state itself,
Karras et al.'s preconditioning). With
``prediction='x0'`` and the UNet's last conv zeroed, an untrained model returns its prior exactly; with ``eps`` the
shift cancels (residual changes nothing). Diffusing the residual itself (the UNet seeing the shifted variable)
learnt more slowly here: see docs/diffusion_learning.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neurop_diff.diffusion.consistency import LRConsistency, consistent_denoiser
from neurop_diff.diffusion.flow import FLOW_SAMPLERS, flow_sigmas, flow_source, flow_target
from neurop_diff.diffusion.ksamplers import Sampler, run_sampler
from neurop_diff.diffusion.parameterisation import (
    LossWeighting,
    Prediction,
    check_sigma_data,
    loss_weight,
    to_x0,
    training_target,
)
from neurop_diff.diffusion.sampling import Spacing, default_noise_sampler, get_sigmas, truncate_sigmas
from neurop_diff.diffusion.schedule import NoiseSchedule, gamma_to_sigma, level_dtype, sigma_to_gamma
from neurop_diff.diffusion.tiling import check_tile_size, pad_for_tiles, tiled_denoiser

from .operator import Operator
from .srno import SRNO
from .unet import UNet

__all__ = [
    "RESIDUAL_CONDITIONS",
    "Condition",
    "NeurOpDiff",
    "Process",
    "Sampler",
    "check_process",
    "condition_channels",
    "starting_noise",
]

Condition = Literal["operator", "bicubic", "encoder", "operator_features"]
#: The generative process: SR3-style ``diffusion`` from noise, or the posterior-mean rectified ``flow`` from the
#: prior (``diffusion.flow``).
Process = Literal["diffusion", "flow"]
#: Conditions that are an HR image, so the model can diffuse the residual HR - condition.
RESIDUAL_CONDITIONS = ("operator", "bicubic")


def condition_channels(condition: str, operator: Operator | None) -> int:
    """Channels the condition adds to the UNet input (x_t has 3)."""
    if condition in ("operator", "bicubic"):
        return 3
    if operator is None:
        raise ValueError(f"the {condition!r} condition needs the operator")
    if condition == "encoder":
        return operator.encoder.n_feats
    if condition == "operator_features":
        if not isinstance(operator, SRNO):
            arch = getattr(operator, "arch", type(operator).__name__)
            raise ValueError(
                f"the 'operator_features' condition needs SRNO's width-channel features before its head; the "
                f"operator is {type(operator).__name__} (arch {arch!r}), which has none: use the condition "
                "'operator', 'encoder' or 'bicubic' with it, or an SRNO operator"
            )
        return operator.width
    raise ValueError(f"unknown condition {condition!r}; expected one of {Condition.__args__}")


def starting_noise(seed: int, shape: tuple[int, ...]) -> tuple[Tensor, torch.Generator]:
    """x_T ~ N(0, I) of ``shape`` (float32, CPU) from ``torch.Generator().manual_seed(seed)``, and that
    generator (for the sampler's further draws). The one seeding rule of test, predict and upscale."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(shape, generator=generator), generator


class NeurOpDiff(nn.Module):
    """The NeurOp-Diff method (paper sec. 3): a UNet denoiser conditioned on a frozen operator's prior
    (SRNO, the paper's; or LIIF).

    Args:
        unet: the denoiser; input channels ``3 + condition_channels(condition, operator)``.
        schedule: the discrete noise schedule (``diffusion.schedule.make_schedule``).
        operator: the frozen operator, SRNO or LIIF (None only for ``condition='bicubic'``); kept in eval mode
            without gradients. ``operator_features`` needs an SRNO.
        condition: ``operator`` (its HR RGB output, the authors'), ``bicubic`` (SR3), ``encoder`` (EDSR features
            bilinearly upsampled), ``operator_features`` (the operator's features before its head).
        prediction: what the UNet predicts: ``eps`` (paper), ``x0``, ``v`` or ``edm`` (Karras et al. 2022's
            preconditioned output, ``diffusion.parameterisation``).
        sigma_data: the ``edm`` target's data std; None: 0.5 for HR images in [-1, 1], 0.1 for the residual (an
            operator's x2..x8 residual on RSSCN7 has std 0.06-0.13 in [-1, 1] units).
        residual: the clean target is ``HR - condition`` (operator / bicubic conditions only; module doc).
        clip_denoised: clamp the predicted clean image to [-1, 1] at every sampling step (SR3 does; the
            authors' sampler does not).
        chunk_size: operator query points evaluated at once (exact; bounds memory).
        process: ``diffusion`` (the paper's) or ``flow`` (PMRF: from ``prior + flow_noise * eps`` to HR along a
            straight path, the UNet predicting the velocity; image conditions, the UNet's ``time`` embedding;
            ``prediction``, ``residual`` and ``schedule`` do not apply).
        flow_noise: the flow source's noise std in [-1, 1] units (PMRF's 0.1 on [0, 1] images).
        conditioned: the UNet also sees the condition (``cat[x, condition]``); ``False`` (flow only): x alone,
            as PMRF.
    """

    def __init__(
        self,
        unet: UNet,
        schedule: NoiseSchedule,
        operator: Operator | None = None,
        *,
        condition: Condition = "operator",
        prediction: Prediction = "eps",
        residual: bool = False,
        sigma_data: float | None = None,
        clip_denoised: bool = True,
        chunk_size: int | None = 65536,
        process: Process = "diffusion",
        flow_noise: float = 0.2,
        conditioned: bool = True,
    ) -> None:
        super().__init__()
        check_process(process, condition, unet.noise_embedding, conditioned, flow_noise)
        if condition != "bicubic" and operator is None:
            raise ValueError(f"the {condition!r} condition needs the operator")
        if residual and condition not in RESIDUAL_CONDITIONS:
            raise ValueError(
                f"residual=True needs an image condition {RESIDUAL_CONDITIONS}, got condition={condition!r}"
            )
        if prediction not in Prediction.__args__:
            raise ValueError(f"prediction must be one of {Prediction.__args__}, got {prediction!r}")
        sigma_data = check_sigma_data((0.1 if residual else 0.5) if sigma_data is None else sigma_data)
        if prediction == "edm" and unet.noise_embedding != "log_sigma":
            raise ValueError(
                "prediction 'edm' needs the UNet's noise_embedding 'log_sigma' (EDM's c_noise = ln(sigma) / 4), "
                f"got {unet.noise_embedding!r}"
            )
        expected = 3 + (condition_channels(condition, operator) if conditioned else 0)
        if unet.in_channels != expected:
            raise ValueError(
                f"the UNet takes {unet.in_channels} channels, the {condition!r} condition {expected}"
            )
        self.unet = unet
        self.operator = operator.eval().requires_grad_(False) if operator is not None else None
        self.schedule = schedule
        self.condition_kind, self.prediction, self.residual = condition, prediction, residual
        self.sigma_data = sigma_data
        self.clip_denoised, self.chunk_size = clip_denoised, chunk_size
        self.process, self.flow_noise, self.conditioned = process, float(flow_noise), conditioned

    def train(self, mode: bool = True) -> NeurOpDiff:
        super().train(mode)
        if self.operator is not None:
            self.operator.eval()  # frozen: no dropout/batch statistics even while the UNet trains
        return self

    @torch.no_grad()
    def condition(
        self, lr: Tensor, size: tuple[int, int], with_prior: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """(condition (B, C, H, W), operator RGB prior (B, 3, H, W) or None) for ``lr`` at HR ``size``.

        Computed once per image (not per step), in float32 even under autocast. ``with_prior``: also compute
        the operator's prior for the other conditions (the result row of evaluation).
        """
        size = (int(size[0]), int(size[1]))
        with torch.autocast(lr.device.type, enabled=False):
            lr = lr.float()
            kind, op = self.condition_kind, self.operator
            prior = op(lr, size, chunk_size=self.chunk_size) if op is not None and (
                kind == "operator" or with_prior) else None  # fmt: skip
            if kind == "operator":
                return prior, prior
            if kind == "operator_features":
                cond = op.features(lr, size, chunk_size=self.chunk_size)
            elif kind == "encoder":
                cond = F.interpolate(op.encode(lr), size=size, mode="bilinear", align_corners=False)
            else:
                cond = F.interpolate(lr, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)
            return cond, prior

    def forward(self, x_t: Tensor, gamma: Tensor, condition: Tensor) -> Tensor:
        """The UNet's raw output for its input ``x_t`` (B, 3, H, W) at SR3 levels gamma (B,): ``cat[x_t,
        condition]`` (the authors'); ``x_t`` is the VP state, or EDM's ``c_in``-scaled state for ``edm``."""
        return self.unet(torch.cat([x_t, condition], dim=1) if self.conditioned else x_t, gamma)

    def _predict(self, x: Tensor, sigma: Tensor, condition: Tensor) -> tuple[Tensor, Tensor]:
        """(UNet output, unclamped clean estimate) for the VE state ``x = HR + sigma eps`` at VE levels (B,).

        ``edm`` (Karras et al. 2022, Table 1): ``D = base + c_skip y + c_out F(c_in y; c_noise)`` on ``y = x -
        base`` (base: the condition with ``residual``, else 0), ``c_noise`` being the UNet's ``log_sigma``
        embedding. The others see SR3's VP state ``gamma x`` and their output is converted by ``to_x0``.
        """
        s = sigma.to(level_dtype(x.device))
        if self.process == "flow":  # sigma = 1 - t (diffusion.flow): D = x + sigma v
            out = self(x, 1 - s, condition)
            return out, x + s.view(-1, 1, 1, 1).to(x.dtype) * out
        g = sigma_to_gamma(s)
        base = condition if self.residual else None
        if self.prediction == "edm":
            d = self.sigma_data
            y = x if base is None else x - base
            sv = s.view(-1, 1, 1, 1)
            norm = sv * sv + d * d
            out = self(y * norm.rsqrt().to(x.dtype), g, condition)
            x0 = (d * d / norm).to(x.dtype) * y + (sv * d * norm.rsqrt()).to(x.dtype) * out
        else:
            x_t = g.view(-1, 1, 1, 1).to(x.dtype) * x
            out = self(x_t, g, condition)
            shifted = x_t if base is None else x_t - g.view(-1, 1, 1, 1).to(x.dtype) * base
            x0 = to_x0(self.prediction, out, shifted, g, self.sigma_data)
        return out, x0 if base is None else base + x0

    def denoised(self, x: Tensor, sigma: Tensor, condition: Tensor) -> Tensor:
        """The clean HR estimate (B, 3, H, W) for the VE state ``x = HR + sigma eps`` at VE levels ``sigma`` (B,)
        (k-diffusion's Denoiser; ``diffusion.sampling.Denoiser``), clamped to [-1, 1] when ``clip_denoised``:
        the one place any sampler's estimate is clamped."""
        x0 = self._predict(x, sigma, condition)[1]
        return x0.clamp(-1.0, 1.0) if self.clip_denoised else x0

    def training_loss(
        self,
        hr: Tensor,
        condition: Tensor,
        gamma: Tensor,
        noise: Tensor,
        loss: Literal["l1", "l2"] = "l1",
        weighting: LossWeighting = "none",
        input_noise: Tensor | None = None,
    ) -> Tensor:
        """Loss of one training batch: HR (B,3,H,W) noised to SR3 levels ``gamma`` (B,) with ``noise``; the UNet
        output is compared with its target (``diffusion.parameterisation.training_target``), L1 (paper) or L2,
        weighted per item (``loss_weight``). A flow: ``gamma`` is its time t, the path runs from ``condition +
        flow_noise * noise`` to HR, the loss is on the velocity (unweighted). ``input_noise``: the noise in the
        UNet's input instead of ``noise`` (input perturbation, Ning et al. 2023): an eps model keeps ``noise`` as
        its target (DDPM-IP's definition); the other targets are those of the input actually seen, so that they
        still imply HR."""
        if self.process == "flow":  # gamma is the flow's t: x_t = t HR + (1 - t) x_src, target HR - x_src
            source = flow_source(condition, noise, self.flow_noise)
            t = gamma.view(-1, 1, 1, 1).to(hr.dtype)
            out = self(t * hr + (1 - t) * source, gamma, condition)
            err = out - flow_target(hr, source)
            per_item = (err.abs() if loss == "l1" else err.square()).flatten(1).mean(1)
            return per_item.mean()
        seen = noise if input_noise is None else input_noise
        sigma = gamma_to_sigma(gamma.to(level_dtype(hr.device)))
        x = hr + sigma.view(-1, 1, 1, 1).to(hr.dtype) * seen
        out, _ = self._predict(x, sigma, condition)
        clean = hr - condition if self.residual else hr
        eps = noise if self.prediction == "eps" else seen
        target = training_target(self.prediction, clean, eps, gamma, self.sigma_data)
        err = (out - target).abs() if loss == "l1" else (out - target).square()
        per_item = err.flatten(1).mean(1)
        weight = loss_weight(self.prediction, gamma, weighting, sigma_data=self.sigma_data, loss=loss)
        return (per_item * weight.to(per_item)).mean()

    @torch.inference_mode()
    def sample(
        self,
        lr: Tensor,
        size: tuple[int, int],
        *,
        steps: int = 50,
        eta: float = 0.0,
        sampler: Sampler = "ddim",
        spacing: Spacing = "leading",
        seed: int = 0,
        x_T: Tensor | None = None,
        generator: torch.Generator | None = None,
        condition: tuple[Tensor, Tensor | None] | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        tile_batch: int = 4,
        callback: Callable[[dict[str, Any]], None] | None = None,
        on_tiles: Callable[[int], None] | None = None,
        strength: float = 1.0,
        lr_consistency: LRConsistency = "none",
    ) -> Tensor:
        """An HR sample (B, 3, H, W) in [-1, 1] for ``lr`` (B, 3, h, w) at ``size`` = (H, W).

        Starting noise: ``x_T`` (the VP N(0, I) state, (1 or B, 3, Hp, Wp) over the padded canvas) if given, with
        ``generator`` for further draws; else :func:`starting_noise` of ``seed`` for one image, shared by every
        image of the batch, and so is each step's noise (eta > 0, ddpm): an image's sample does not depend on
        the batch it is in. ``sampler`` (``diffusion.ksamplers.SAMPLERS``) runs over ``steps`` levels spaced by
        ``spacing`` (``diffusion.sampling.get_sigmas``; ``ddpm``: all T levels, eta 1); ``eta`` is DDIM's.
        ``strength < 1`` (image conditions): start from the condition noised to the level of step
        ``round(strength * steps)`` from the end and run only those steps (Chung et al. 2022). ``condition``: a
        precomputed ``self.condition(lr, size)``. ``tile``: evaluate the UNet on overlapping tiles of ``tile`` HR
        pixels (overlap default ``tile // 4``) blended at every step; None samples the whole canvas at once.
        ``callback`` gets the sampler's per-step info, ``on_tiles(n)`` the number of tiles evaluated.
        ``lr_consistency='project'``: every step's clean estimate is projected onto the LR
        (``diffusion.consistency``; DDNM, Wang et al. 2023). A flow (``process``) starts from ``cond + flow_noise
        x_T`` and runs ``steps`` uniform time steps with ``euler``/``heun`` (``ddim`` = Euler).
        """
        h, w = int(size[0]), int(size[1])
        cond, _ = condition if condition is not None else self.condition(lr, (h, w), with_prior=False)
        factor = self.unet.factor
        tile_px = int(tile) if tile is not None else max(h, w)
        overlap = tile_px // 4 if overlap is None else int(overlap)
        if tile is not None:
            check_tile_size(tile_px, factor)
        cond, (hp, wp), grid = pad_for_tiles(cond, (h, w), -(-tile_px // factor) * factor, overlap, factor)
        if x_T is None:
            x_T, own = starting_noise(seed, (1, 3, hp, wp))
            generator = generator or own
        if x_T.shape[0] not in (1, lr.shape[0]) or tuple(x_T.shape[1:]) != (3, hp, wp):
            raise ValueError(
                f"x_T has shape {tuple(x_T.shape)}, expected (1 or {lr.shape[0]}, 3, {hp}, {wp}): the padded canvas"
            )
        sigmas = self.sigmas(sampler, steps, spacing, eta)
        x, sigmas = self._start(x_T.to(cond), cond, sigmas, strength, lr.shape[0])
        denoiser = tiled_denoiser(self.denoised, grid, tile_batch=tile_batch, on_tiles=on_tiles)
        if lr_consistency == "project":
            denoiser = consistent_denoiser(denoiser, lr.to(cond), (h, w))
        elif lr_consistency != "none":
            raise ValueError(f"lr_consistency must be 'none' or 'project', got {lr_consistency!r}")
        x = run_sampler(
            sampler, denoiser, x, sigmas, condition=cond, eta=eta, callback=callback,
            noise_sampler=default_noise_sampler(generator, per_image=x_T.shape[0] == 1),
        )  # fmt: skip
        return x[..., :h, :w].clamp(-1.0, 1.0)

    def _start(
        self, x_T: Tensor, cond: Tensor, sigmas: Tensor, strength: float, batch: int
    ) -> tuple[Tensor, Tensor]:
        """The sampler's first state and grid: a flow's source ``cond + flow_noise x_T``; diffusion's VE state
        ``x_T / gamma_0``, or with ``strength < 1`` the condition noised to the truncated grid's first level."""
        if self.process == "flow":
            if strength < 1.0:
                raise ValueError(
                    "strength < 1 is for process 'diffusion'; a flow starts from its prior already"
                )
            return flow_source(cond, x_T, self.flow_noise).expand(batch, -1, -1, -1), sigmas
        if strength < 1.0:
            if self.condition_kind not in RESIDUAL_CONDITIONS:
                raise ValueError("strength < 1 needs an image condition (operator, bicubic)")
            sigmas = truncate_sigmas(sigmas, strength)
            return cond + float(sigmas[0]) * x_T, sigmas  # the VP cond noised to gamma, in VE units
        return x_T.expand(batch, -1, -1, -1) * (1 + sigmas[0] ** 2).sqrt().item(), sigmas

    def sigmas(self, sampler: Sampler, steps: int, spacing: Spacing = "leading", eta: float = 0.0) -> Tensor:
        """The level grid a run of ``sampler`` visits: ``steps`` VE levels (``ddpm``: all T), then 0; a flow's
        ``1 - t`` over ``steps`` uniform time steps (``spacing`` does not apply)."""
        if self.process == "flow":
            if sampler not in FLOW_SAMPLERS or eta:
                raise ValueError(
                    f"a flow samples with {FLOW_SAMPLERS} (deterministic, eta 0), got {sampler!r} with eta {eta}"
                )
            return flow_sigmas(steps)
        if sampler == "ddpm":
            return get_sigmas(self.schedule, self.schedule.T, "leading")
        return get_sigmas(self.schedule, steps, spacing)


def check_process(process: str, condition: str, embedding: str, conditioned: bool, flow_noise: float) -> None:
    """A ValueError naming the option when a process cannot run with the others."""
    if process not in Process.__args__:
        raise ValueError(f"process must be one of {Process.__args__}, got {process!r}")
    if process == "diffusion":
        if not conditioned:
            raise ValueError("conditioned: false is for process 'flow' (diffusion needs its condition)")
        if embedding == "time":
            raise ValueError("noise_embedding 'time' is the flow's; diffusion uses 'sr3' or 'log_sigma'")
        return
    if condition not in RESIDUAL_CONDITIONS:
        raise ValueError(
            f"process 'flow' starts from an image condition {RESIDUAL_CONDITIONS}, got {condition!r}"
        )
    if embedding != "time":
        raise ValueError(f"process 'flow' needs the UNet's noise_embedding 'time' (its t), got {embedding!r}")
    if not flow_noise >= 0:
        raise ValueError(
            f"flow_noise must be >= 0 (the source's noise std in [-1, 1] units), got {flow_noise!r}"
        )
