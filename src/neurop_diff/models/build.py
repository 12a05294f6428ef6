"""NeurOp-Diff built from plain arguments, without Lightning (TorchGeo's ``configure_models`` shape): the UNet
sized for its condition, the noise schedule, the frozen operator. ``DiffusionModule`` calls it for training;
inference calls it with a checkpoint's recorded hyper-parameters (``weights.checkpoint.Checkpoint``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Literal

import torch

from neurop_diff.diffusion.parameterisation import Prediction
from neurop_diff.diffusion.schedule import make_schedule

from .neuropdiff import Condition, NeurOpDiff, Process, check_process, condition_channels
from .operator import Operator
from .unet import NoiseEmbedding, UNet

__all__ = ["MODEL_ARGS", "build_neuropdiff", "neuropdiff_from_hparams"]


def build_neuropdiff(
    operator: Operator | None = None,
    *,
    condition: Condition = "operator",
    prediction: Prediction = "eps",
    residual: bool = False,
    sigma_data: float | None = None,
    noise_embedding: NoiseEmbedding = "sr3",
    process: Process = "diffusion",
    flow_noise: float = 0.2,
    conditioned: bool = True,
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
    clip_denoised: bool = True,
    chunk_size: int | None = 65536,
) -> NeurOpDiff:
    """A NeurOp-Diff model (untrained UNet) guided by ``operator`` (frozen; None for the bicubic condition).

    The arguments are ``DiffusionModule``'s of the same names (its docstring says what each means; defaults:
    the authors' ~47.5M-parameter UNet, linear schedule 1e-6..1e-2 over T = 2000). With ``residual`` or a
    flow the UNet's last conv starts at zero, so the untrained model returns its prior (a flow: its source).
    """
    check_process(process, condition, noise_embedding, conditioned, flow_noise)
    unet = UNet(
        in_channels=3 + (condition_channels(condition, operator) if conditioned else 0),
        out_channels=3,
        base_channels=base_channels,
        channel_mults=tuple(channel_mults),
        res_blocks=res_blocks,
        attn_resolutions=tuple(attn_resolutions),
        image_size=image_size,
        norm_groups=norm_groups,
        dropout=dropout,
        channels_last=channels_last,
        noise_embedding=noise_embedding,
    )
    if residual or process == "flow":
        torch.nn.init.zeros_(unet.out_conv.weight)
        torch.nn.init.zeros_(unet.out_conv.bias)
    return NeurOpDiff(
        unet,
        make_schedule(schedule, timesteps, beta_start, beta_end),
        operator,
        condition=condition,
        prediction=prediction,
        residual=residual,
        sigma_data=sigma_data,
        clip_denoised=clip_denoised,
        chunk_size=chunk_size,
        process=process,
        flow_noise=flow_noise,
        conditioned=conditioned,
    )


#: The keyword arguments of :func:`build_neuropdiff`: the hyper-parameters that make the model.
MODEL_ARGS: tuple[str, ...] = tuple(inspect.signature(build_neuropdiff).parameters)[1:]


def neuropdiff_from_hparams(hparams: Mapping[str, Any], operator: Operator | None = None) -> NeurOpDiff:
    """:func:`build_neuropdiff` with the model's arguments picked from ``hparams`` (a DiffusionModule's recorded
    hyper-parameters: the others are left out; absent ones take the defaults)."""
    return build_neuropdiff(operator, **{k: hparams[k] for k in MODEL_ARGS if k in hparams})
