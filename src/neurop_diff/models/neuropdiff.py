"""NeurOp-Diff as a plain model: the frozen neural-operator prior, the conditional UNet and the noise schedule.

Training (``lit.DiffusionModule``), evaluation and ``neurop_diff.upscale`` all call this one model: the same
``condition``, the same ``denoise`` and the same ``sample`` (tiling is only a way of evaluating the denoiser on
large canvases, see ``diffusion.tiling``), so one image, scale and seed give one result on every path.

Images are float (B, C, H, W) in [-1, 1]; ``size`` is the HR (H, W); noise levels are SR3's ``gamma``.

``residual=True`` makes the UNet's clean target the residual ``HR - base``, where the base is the condition image
itself (the operator's RGB prior, or the bicubic upsampling; SRDiff, Li et al. 2022): the diffusion still runs on
HR (the UNet sees ``x_t`` of HR, as without it), and its output is read in the shifted variable
``x_t - gamma base = gamma (HR - base) + sigma eps``, so the clean estimate is ``base + residual``. With
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

from neurop_diff.diffusion.ksamplers import k_sample
from neurop_diff.diffusion.parameterisation import (
    LossWeighting,
    Prediction,
    check_sigma_data,
    eps_from_x0,
    loss_weight,
    to_x0,
    training_target,
)
from neurop_diff.diffusion.sampling import ddim_sample, ddpm_sample, start_level
from neurop_diff.diffusion.schedule import NoiseSchedule, q_sample
from neurop_diff.diffusion.tiling import pad_for_tiles, tiled_denoiser

from .liif import Operator
from .operator import SRNO
from .unet import UNet

__all__ = [
    "RESIDUAL_CONDITIONS",
    "Condition",
    "NeurOpDiff",
    "Sampler",
    "condition_channels",
    "starting_noise",
]

Condition = Literal["operator", "bicubic", "encoder", "operator_features"]
Sampler = Literal["ddim", "ddpm", "euler", "heun", "dpmpp_2m"]
#: Level spacing: ``uniform`` (DDIM's timesteps, every sampler), ``quadratic`` (DDIM), ``karras`` (euler, heun,
#: dpmpp_2m).
Spacing = Literal["uniform", "quadratic", "karras"]
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
    """The NeurOp-Diff method (paper sec. 3): a UNet denoiser conditioned on a frozen SRNO prior.

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
    ) -> None:
        super().__init__()
        if condition != "bicubic" and operator is None:
            raise ValueError(f"the {condition!r} condition needs the operator")
        if residual and condition not in RESIDUAL_CONDITIONS:
            raise ValueError(
                f"residual=True needs an image condition {RESIDUAL_CONDITIONS}, got condition={condition!r}"
            )
        if prediction not in Prediction.__args__:
            raise ValueError(f"prediction must be one of {Prediction.__args__}, got {prediction!r}")
        sigma_data = check_sigma_data((0.1 if residual else 0.5) if sigma_data is None else sigma_data)
        expected = 3 + condition_channels(condition, operator)
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
        """The UNet's raw output (the chosen ``prediction``) for x_t (B,3,H,W) at levels gamma (B,)."""
        return self.unet(torch.cat([x_t, condition], dim=1), gamma)

    def denoised(self, x_t: Tensor, gamma: Tensor, condition: Tensor) -> Tensor:
        """The clean HR estimate (B, 3, H, W) for x_t at levels gamma (B,), clamped to [-1, 1] when
        ``clip_denoised``."""
        out = self(x_t, gamma, condition)
        if self.residual:
            g = gamma.view(-1, 1, 1, 1).to(x_t.dtype)
            x0 = condition + to_x0(self.prediction, out, x_t - g * condition, gamma, self.sigma_data)
        else:
            x0 = to_x0(self.prediction, out, x_t, gamma, self.sigma_data)
        return x0.clamp(-1.0, 1.0) if self.clip_denoised else x0

    def denoise(self, x_t: Tensor, gamma: Tensor, condition: Tensor) -> Tensor:
        """The noise estimate that samplers consume, from any ``prediction`` (``diffusion.sampling.Denoiser``)."""
        if self.prediction == "eps" and not self.clip_denoised:
            return self(x_t, gamma, condition)
        return eps_from_x0(self.denoised(x_t, gamma, condition), x_t, gamma)

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
        """Loss of one training batch: HR (B,3,H,W) noised to ``gamma`` (B,) with ``noise``; the UNet output is
        compared with its target (``diffusion.parameterisation.training_target``), L1 (paper) or L2.
        ``input_noise``: the noise that forms the UNet's input instead of ``noise`` (the target keeps ``noise``):
        input perturbation, Ning et al. 2023, against the sampler's exposure bias."""
        x_t = q_sample(hr, gamma, noise if input_noise is None else input_noise)
        out = self(x_t, gamma, condition)
        clean = hr - condition if self.residual else hr
        target = training_target(self.prediction, clean, noise, gamma, self.sigma_data)
        err = (out - target).abs() if loss == "l1" else (out - target).square()
        per_item = err.flatten(1).mean(1)
        weight = loss_weight(self.prediction, gamma, weighting, sigma_data=self.sigma_data)
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
        spacing: Spacing = "uniform",
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
    ) -> Tensor:
        """An HR sample (B, 3, H, W) in [-1, 1] for ``lr`` (B, 3, h, w) at ``size`` = (H, W).

        Starting noise: ``x_T`` if given (with ``generator`` for further draws), else :func:`starting_noise`
        of ``seed`` over the (padded) canvas. ``sampler``: DDIM with ``steps`` and ``eta``, DDPM over all T
        steps, or the deterministic ODE samplers ``euler`` / ``heun`` / ``dpmpp_2m`` (``diffusion.ksamplers``)
        with ``steps`` levels. ``strength < 1`` (DDIM, image conditions): start from the condition image
        noised to the level of step ``round(strength * steps)`` from the end and run only those steps (Chung et
        al. 2022, "Come-closer-diffuse-faster": a good initial estimate needs less of the reverse process). ``condition``: a precomputed ``self.condition(lr, size)``. ``tile``: evaluate the UNet on
        overlapping tiles of ``tile`` HR pixels (overlap default ``tile // 4``) blended at every step; None
        samples the whole canvas at once. ``callback`` gets the sampler's per-step info, ``on_tiles(n)`` the
        number of tiles evaluated.
        """
        h, w = int(size[0]), int(size[1])
        cond, _ = condition if condition is not None else self.condition(lr, (h, w), with_prior=False)
        factor = self.unet.factor
        tile_px = int(tile) if tile is not None else max(h, w)
        overlap = tile_px // 4 if overlap is None else int(overlap)
        if tile is not None and (tile_px < factor or tile_px % factor):
            raise ValueError(
                f"tile must be a positive multiple of {factor} (the UNet's downsampling), got {tile}"
            )
        cond, (hp, wp), grid = pad_for_tiles(cond, (h, w), -(-tile_px // factor) * factor, overlap, factor)
        shape = (lr.shape[0], 3, hp, wp)
        if x_T is None:
            x_T, own = starting_noise(seed, shape)
            generator = generator or own
        if strength < 1.0:
            if sampler != "ddim" or self.condition_kind not in RESIDUAL_CONDITIONS:
                raise ValueError(
                    "strength < 1 needs the ddim sampler and an image condition (operator, bicubic)"
                )
            g = start_level(self.schedule, steps, strength, spacing)
            x_T = g * cond + (1 - g * g) ** 0.5 * x_T.to(cond)
        denoise = tiled_denoiser(self.denoise, grid, tile_batch=tile_batch, on_tiles=on_tiles)
        common = dict(generator=generator, x_T=x_T.to(cond), callback=callback, device=cond.device,
                      dtype=cond.dtype, clip_denoised=False)  # fmt: skip
        if sampler == "ddim":
            x = ddim_sample(
                denoise, cond, shape, self.schedule, steps=steps, eta=eta, spacing=spacing, strength=strength,
                **common,
            )  # fmt: skip
        elif sampler == "ddpm":
            x = ddpm_sample(denoise, cond, shape, self.schedule, **common)
        elif sampler in ("euler", "heun", "dpmpp_2m"):
            common.pop("clip_denoised")
            x = k_sample(sampler, denoise, cond, shape, self.schedule, steps=steps, spacing=spacing, **common)
        else:
            raise ValueError(f"sampler must be one of {Sampler.__args__}, got {sampler!r}")
        return x[..., :h, :w].clamp(-1.0, 1.0)
