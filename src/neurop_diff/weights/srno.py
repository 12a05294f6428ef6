"""Import of the authors' SRNO weights (SRNO repository checkpoints and NeurOp-Diff's ``srno_weight.pth``).

The authors' names (``../shared/reference/state-dicts.md``) map to ours as follows; their 1x1 convs
``(out, in, 1, 1)`` become our ``Linear`` weights ``(out, in)``, and the unused mean-shift convs are dropped:

    encoder.head.0.*            -> encoder.head.*
    encoder.body.{i}.body.0.*   -> encoder.blocks.{i}.conv1.*      (body.{i}.body.2 -> conv2)
    encoder.body.{n}.*          -> encoder.body_conv.*             (the conv after the n ResBlocks)
    conv00.*                    -> lift.*
    conv{i}.qkv_proj/o_proj1/o_proj2/kln/vln.* -> blocks.{i}.qkv/proj1/proj2/k_norm/v_norm.*
    fc1.*, fc2.*                -> head.0.*, head.2.*
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from os import PathLike
from typing import Any

import torch
from torch import Tensor, nn

from ..models.build import SRNO_DEFAULTS
from ..models.srno import SRNO
from .rename import (
    ENCODER_INVERSE,
    ENCODER_RULES,
    convert_state_dict,
    load_weights,
    strip_prefixes,
    unwrap_state_dict,
)

_BLOCK_PARTS = {"qkv_proj": "qkv", "o_proj1": "proj1", "o_proj2": "proj2", "kln": "k_norm", "vln": "v_norm"}
# (authors' pattern, our template) and the inverse, for the names in error messages.
_RULES = [
    *ENCODER_RULES,
    (r"conv00\.(\w+)", r"lift.\1"),
    *((rf"conv(\d+)\.{a}\.(\w+)", rf"blocks.\1.{o}.\2") for a, o in _BLOCK_PARTS.items()),
    (r"fc1\.(\w+)", r"head.0.\1"),
    (r"fc2\.(\w+)", r"head.2.\1"),
]
_INVERSE = [
    *ENCODER_INVERSE,
    (r"lift\.(\w+)", r"conv00.\1"),
    *((rf"blocks\.(\d+)\.{o}\.(\w+)", rf"conv\1.{a}.\2") for a, o in _BLOCK_PARTS.items()),
    (r"head\.0\.(\w+)", r"fc1.\1"),
    (r"head\.2\.(\w+)", r"fc2.\1"),
]


def srno_args_from_state_dict(sd: Mapping[str, Tensor]) -> dict[str, int]:
    """Our ``SRNO`` constructor kwargs read off an authors' state dict (defaults where a key is absent)."""
    sd = {strip_prefixes(k): v for k, v in sd.items()}
    args = dict(SRNO_DEFAULTS)
    res = {int(m.group(1)) for k in sd if (m := re.fullmatch(r"encoder\.body\.(\d+)\.body\.0\.weight", k))}
    attn = {int(m.group(1)) for k in sd if (m := re.fullmatch(r"conv(\d+)\.qkv_proj\.weight", k))}
    if res:
        args["encoder_blocks"] = len(res)
    if attn:
        args["blocks"] = len(attn)
    for key, arg, dim in [
        ("encoder.head.0.weight", "encoder_width", 0),
        ("conv00.weight", "width", 0),
        ("conv0.kln.weight", "heads", 0),
        ("fc1.weight", "head_width", 0),
    ]:
        if key in sd and sd[key].dim() > dim:
            args[arg] = int(sd[key].shape[dim])
    return args


def extract_srno_state_dict(obj: Any) -> dict[str, Tensor]:
    """The SRNO state dict inside a NeurOp-Diff ``srno_weight.pth`` (``{'model': sd}``), an SRNO-repository
    checkpoint (``{'model': {'name': 'sronet', 'args': ..., 'sd': sd}, ...}``) or a bare state dict."""
    return unwrap_state_dict(obj, "sronet", "SRNO", "{'model': state_dict}, ")


def convert_srno_state_dict(sd: Mapping[str, Tensor], *, model: nn.Module | None = None) -> dict[str, Tensor]:
    """Authors' SRNO parameter names and shapes -> ours, checked against ``model`` (default: an SRNO with the
    architecture read off ``sd``). Strips a leading ``module.``/``srno.``, drops the mean-shift convs.

    Raises:
        ValueError: listing every missing and unexpected key and every shape mismatch (both shapes).
    """
    if model is None:
        with torch.device("meta"):
            model = SRNO(**srno_args_from_state_dict(sd))
    return convert_state_dict(sd, model, _RULES, _INVERSE, "SRNO")


def load_srno_weights(model: SRNO, path_or_obj: str | PathLike[str] | Mapping[str, Any]) -> SRNO:
    """Load the authors' SRNO weights (file path or already-loaded container) into ``model`` (strict);
    returns ``model``. Build a fitting model first with
    ``SRNO(**srno_args_from_state_dict(extract_srno_state_dict(obj)))`` when the architecture is unknown."""
    return load_weights(model, path_or_obj, extract_srno_state_dict, convert_srno_state_dict)
