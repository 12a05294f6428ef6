"""The plain models built from plain arguments, without Lightning (TorchGeo's ``configure_models`` shape): the
operator of an ``arch`` and its sizes (:func:`build_operator`), and NeurOp-Diff: the UNet sized for its
condition, the noise schedule, the frozen operator (:func:`build_neuropdiff`). The LightningModules call them for
training; inference calls them with a checkpoint's recorded hyper-parameters (``weights.checkpoint.Checkpoint``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Literal

import torch

from neurop_diff.diffusion.parameterisation import Prediction
from neurop_diff.diffusion.schedule import make_schedule

from .liif import LIIF
from .neuropdiff import Condition, NeurOpDiff, Process, check_process, condition_channels
from .operator import Operator
from .srno import SRNO
from .unet import NoiseEmbedding, UNet

__all__ = [
    "ARCHS",
    "LIIF_ARGS",
    "LIIF_DEFAULTS",
    "MODEL_ARGS",
    "SRNO_ARGS",
    "SRNO_DEFAULTS",
    "build_neuropdiff",
    "build_operator",
    "full_operator_args",
    "neuropdiff_from_hparams",
]

#: The constructor arguments that set an operator's size (an OperatorModule records them, so a checkpoint
#: rebuilds the operator), and their defaults (the authors' sizes), read off the signatures: defined once.
SRNO_ARGS = ("encoder_blocks", "encoder_width", "width", "blocks", "heads", "head_width")
SRNO_DEFAULTS: dict[str, int] = {k: inspect.signature(SRNO).parameters[k].default for k in SRNO_ARGS}
LIIF_ARGS = ("encoder_blocks", "encoder_width", "mlp_width", "mlp_depth")
LIIF_DEFAULTS: dict[str, int] = {k: inspect.signature(LIIF).parameters[k].default for k in LIIF_ARGS}

#: The operator architectures (``arch``): class, size arguments, their defaults.
ARCHS: dict[str, tuple[type[Operator], tuple[str, ...], dict[str, int]]] = {
    "srno": (SRNO, SRNO_ARGS, SRNO_DEFAULTS),
    "liif": (LIIF, LIIF_ARGS, LIIF_DEFAULTS),
}


def full_operator_args(arch: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"arch": arch, <its size arguments>}``: ``values``' entries for ``arch``, its defaults for the rest
    (the ``operator_args`` a DiffusionModule records)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown operator arch {arch!r}; expected one of {sorted(ARCHS)}")
    _, names, defaults = ARCHS[arch]
    return {"arch": arch, **defaults, **{k: int(values[k]) for k in names if k in values}}


def build_operator(args: Mapping[str, Any]) -> Operator:
    """The operator of ``args`` (``{"arch": "srno" | "liif", sizes...}``; without ``arch``: SRNO, as recorded
    before LIIF was added), freshly initialised.

    Raises:
        ValueError: an unknown ``arch``, or a size argument that the arch does not take.
    """
    arch = args.get("arch", "srno")
    full = full_operator_args(arch, args)
    unknown = sorted(set(args) - set(full))
    if unknown:
        raise ValueError(
            f"operator_args {unknown} are not sizes of the {arch} operator (arch {arch!r} takes "
            f"{list(ARCHS[arch][1])})"
        )
    cls = ARCHS[arch][0]
    return cls(**{k: v for k, v in full.items() if k != "arch"})


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
