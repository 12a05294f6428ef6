"""Import of the LIIF authors' weights (Chen, Liu & Wang 2021: ``edsr-baseline-liif.pth``).

Their file is ``{'model': {'name': 'liif', 'args': {...}, 'sd': state_dict}, 'optimizer': ..., 'epoch': ...}``
(a bare state dict or ``{'model': state_dict}`` is accepted too). Their names map to ours as follows; the unused
mean-shift convs (``encoder.sub_mean``, ``encoder.add_mean``) are dropped:

    encoder.head.0.*            -> encoder.head.*
    encoder.body.{i}.body.0.*   -> encoder.blocks.{i}.conv1.*      (body.{i}.body.2 -> conv2)
    encoder.body.{n}.*          -> encoder.body_conv.*             (the conv after the n ResBlocks)
    imnet.layers.{j}.*          -> mlp.{j}.*                       (j = 0, 2, ..., 2 * depth: the Linear layers)

Only the LIIF of the paper's main results is supported: the EDSR-baseline encoder without upsampler, with
feature unfolding, local ensemble and cell decoding (the authors' defaults); their ablation variants (any of
those switched off) and other encoders (RDN) are refused with the key that says so. Their data range is
[-1, 1] on both sides (``data_norm``: sub 0.5, div 0.5), ours too: no conversion of values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from os import PathLike
from typing import Any

import torch
from torch import Tensor

from ..models.build import LIIF_DEFAULTS
from ..models.liif import LIIF
from .rename import (
    ENCODER_INVERSE,
    ENCODER_RULES,
    convert_state_dict,
    load_weights,
    strip_prefixes,
    unwrap_state_dict,
)

__all__ = [
    "convert_liif_state_dict",
    "extract_liif_state_dict",
    "is_liif_checkpoint",
    "liif_args_from_state_dict",
    "load_liif_weights",
]

_RULES = [*ENCODER_RULES, (r"imnet\.layers\.(\d+)\.(weight|bias)", r"mlp.\1.\2")]
_INVERSE = [*ENCODER_INVERSE, (r"mlp\.(\d+)\.(\w+)", r"imnet.layers.\1.\2")]
# The authors' switches (LIIF.__init__ keywords; "cell" as some configs spell cell_decode): all must be on.
_SWITCHES = {
    "feat_unfold": "feature unfolding",
    "local_ensemble": "local ensemble",
    "cell_decode": "cell decoding",
    "cell": "cell decoding",
}


def is_liif_checkpoint(obj: Any) -> bool:
    """Whether a loaded file is the LIIF authors' (``{'model': {'name': 'liif', ...}}``, or a state dict with
    their MLP's ``imnet.*`` names)."""
    if not isinstance(obj, Mapping):
        return False
    inner = obj.get("model")
    if isinstance(inner, Mapping) and inner.get("name") == "liif":
        return True
    sd = inner if isinstance(inner, Mapping) else obj
    return any(strip_prefixes(str(k)).startswith("imnet.") for k in sd)


def check_liif_args(args: Mapping[str, Any]) -> None:
    """Refuses the authors' model ``args`` of a variant other than the paper's LIIF, naming the key."""
    for key, what in _SWITCHES.items():
        if key in args and not args[key]:
            raise ValueError(
                f"LIIF checkpoint: args[{key!r}] is {args[key]!r}: the variant without {what} (an ablation of the "
                "paper) is not supported; only LIIF with feat_unfold, local_ensemble and cell_decode is"
            )
    enc = args.get("encoder_spec")
    if isinstance(enc, Mapping):
        name, enc_args = enc.get("name", "edsr-baseline"), enc.get("args") or {}
        if name != "edsr-baseline":
            raise ValueError(
                f"LIIF checkpoint: args['encoder_spec']['name'] is {name!r}: not supported (only the "
                "'edsr-baseline' encoder is)"
            )
        if not enc_args.get("no_upsampling", True) or enc_args.get("res_scale", 1) != 1:
            raise ValueError(
                f"LIIF checkpoint: args['encoder_spec']['args'] is {dict(enc_args)!r}: not supported (only "
                "EDSR-baseline features without upsampler, no_upsampling: true, and res_scale 1 are)"
            )
    imnet = args.get("imnet_spec")
    if isinstance(imnet, Mapping) and imnet.get("name", "mlp") != "mlp":
        raise ValueError(
            f"LIIF checkpoint: args['imnet_spec']['name'] is {imnet['name']!r}: not supported (only 'mlp' is)"
        )


def extract_liif_state_dict(obj: Any) -> dict[str, Tensor]:
    """The state dict of the LIIF authors' checkpoint (module docstring), its ``args`` checked."""
    return unwrap_state_dict(obj, "liif", "LIIF", check_args=check_liif_args)


def liif_args_from_state_dict(sd: Mapping[str, Tensor]) -> dict[str, int]:
    """Our ``LIIF`` constructor kwargs read off the authors' state dict (defaults where a key is absent).

    Raises:
        ValueError: the MLP's input is not 9 * channels + 4 (a variant without unfolding or cell decoding).
    """
    sd = {strip_prefixes(k): v for k, v in sd.items()}
    args = dict(LIIF_DEFAULTS)
    res = {int(m.group(1)) for k in sd if (m := re.fullmatch(r"encoder\.body\.(\d+)\.body\.0\.weight", k))}
    layers = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"imnet\.layers\.(\d+)\.weight", k)))
    if res:
        args["encoder_blocks"] = len(res)
    if "encoder.head.0.weight" in sd:
        args["encoder_width"] = int(sd["encoder.head.0.weight"].shape[0])
    if layers:
        args["mlp_depth"] = len(layers) - 1
        first = sd[f"imnet.layers.{layers[0]}.weight"]
        if len(layers) > 1:
            args["mlp_width"] = int(first.shape[0])
        want = 9 * args["encoder_width"] + 4
        if first.dim() == 2 and first.shape[1] != want:
            raise ValueError(
                f"LIIF state dict: imnet.layers.{layers[0]}.weight takes {first.shape[1]} inputs, the supported "
                f"LIIF {want} (9 x {args['encoder_width']} unfolded features + 2 coordinates + 2 cell): a variant "
                "without feature unfolding or cell decoding is not supported"
            )
    return args


def convert_liif_state_dict(sd: Mapping[str, Tensor], *, model: LIIF | None = None) -> dict[str, Tensor]:
    """The authors' LIIF names and shapes -> ours, checked strictly against ``model`` (default: a LIIF with the
    architecture read off ``sd``); drops the mean-shift convs.

    Raises:
        ValueError: listing every missing and unexpected key and every shape mismatch (both shapes).
    """
    if model is None:
        with torch.device("meta"):
            model = LIIF(**liif_args_from_state_dict(sd))
    return convert_state_dict(sd, model, _RULES, _INVERSE, "LIIF")


def load_liif_weights(model: LIIF, path_or_obj: str | PathLike[str] | Mapping[str, Any]) -> LIIF:
    """Loads the LIIF authors' weights (a file or a loaded container) into ``model`` (strict); returns it."""
    return load_weights(model, path_or_obj, extract_liif_state_dict, convert_liif_state_dict)
