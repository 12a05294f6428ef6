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

import inspect
import re
from collections.abc import Callable, Mapping
from os import PathLike
from typing import Any

import torch
from torch import Tensor, nn

from ..models.operator import SRNO

#: The constructor arguments of SRNO that set its size (an OperatorModule records them, so a checkpoint
#: rebuilds the operator), and their defaults (the authors' size), read off SRNO's signature: defined once.
SRNO_ARGS = ("encoder_blocks", "encoder_width", "width", "blocks", "heads", "head_width")
SRNO_DEFAULTS: dict[str, int] = {k: inspect.signature(SRNO).parameters[k].default for k in SRNO_ARGS}
_DROPPED = re.compile(r"encoder\.(sub_mean|add_mean)\.")
_PREFIXES = ("module.", "srno.")
_BLOCK_PARTS = {"qkv_proj": "qkv", "o_proj1": "proj1", "o_proj2": "proj2", "kln": "k_norm", "vln": "v_norm"}
# (authors' pattern, our template) and the inverse, for the names in error messages.
#: The EDSR-baseline encoder's names, shared with LIIF's import (``weights/liif.py``).
ENCODER_RULES = [
    (r"encoder\.head\.0\.(\w+)", r"encoder.head.\1"),
    (r"encoder\.body\.(\d+)\.body\.0\.(\w+)", r"encoder.blocks.\1.conv1.\2"),
    (r"encoder\.body\.(\d+)\.body\.2\.(\w+)", r"encoder.blocks.\1.conv2.\2"),
    (r"encoder\.body\.(\d+)\.(weight|bias)", r"encoder.body_conv.\2"),
]
ENCODER_INVERSE = [
    (r"encoder\.head\.(\w+)", r"encoder.head.0.\1"),
    (r"encoder\.blocks\.(\d+)\.conv1\.(\w+)", r"encoder.body.\1.body.0.\2"),
    (r"encoder\.blocks\.(\d+)\.conv2\.(\w+)", r"encoder.body.\1.body.2.\2"),
    (r"encoder\.body_conv\.(\w+)", r"encoder.body.<n_resblocks>.\1"),
]
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


def _rename(name: str, rules: list[tuple[str, str]]) -> str | None:
    for pattern, template in rules:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, template, name)
    return None


def _strip(name: str) -> str:
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def srno_args_from_state_dict(sd: Mapping[str, Tensor]) -> dict[str, int]:
    """Our ``SRNO`` constructor kwargs read off an authors' state dict (defaults where a key is absent)."""
    sd = {_strip(k): v for k, v in sd.items()}
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


def unwrap_state_dict(
    obj: Any, name: str, what: str, accepted: str = "", check_args: Callable[[Mapping], None] | None = None
) -> dict[str, Tensor]:
    """The state dict in a LIIF/SRNO-repository container (``{'model': {'name', 'args', 'sd'}, ...}``, whose
    ``name`` must be ``name`` and whose ``args`` go to ``check_args``), in ``{'model': sd}`` or bare; errors
    name ``what`` (the model) and the accepted forms (``accepted`` lists extra ones)."""
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        inner = obj["model"]
        if "sd" in inner:
            if inner.get("name", name) != name:
                raise ValueError(f"{what} checkpoint: model name {inner.get('name')!r}, expected {name!r}")
            if check_args is not None:
                check_args(inner.get("args") or {})
            obj = inner["sd"]
        else:
            obj = inner
    if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        return dict(obj)
    got = f"a dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else type(obj).__name__
    article = "an" if what[0] in "AEIOUS" else "a"
    raise ValueError(
        f"not {article} {what} checkpoint: expected {accepted}{{'model': {{'name': {name!r}, 'args': ..., "
        f"'sd': state_dict}}}} or a state dict of tensors, got {got}"
    )


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


def convert_state_dict(
    sd: Mapping[str, Tensor],
    model: nn.Module,
    rules: list[tuple[str, str]],
    inverse: list[tuple[str, str]],
    what: str,
) -> dict[str, Tensor]:
    """The authors' ``sd`` renamed by ``rules`` (pattern, template) and checked strictly against ``model``'s
    names and shapes (1x1 convs become ``Linear`` weights); errors name the authors' keys (``inverse``).

    Raises:
        ValueError: ``"<what> state dict does not fit the model: "`` and every missing and unexpected key and
            shape mismatch (both shapes).
    """
    expected = {k: v.shape for k, v in model.state_dict().items()}
    n_res = str(len(getattr(getattr(model, "encoder", None), "blocks", ())))
    out: dict[str, Tensor] = {}
    unexpected, mismatched, seen = [], [], set()
    for key, tensor in sd.items():
        name = _strip(key)
        if _DROPPED.match(name):
            continue
        ours = _rename(name, rules)
        if ours is not None and ours.startswith("encoder.body_conv.") and name.split(".")[2] != n_res:
            ours = None  # the body conv sits right after the model's ResBlocks: encoder.body.<n_resblocks>
        if ours is None or ours not in expected or ours in seen:
            unexpected.append(key)
            continue
        seen.add(ours)
        want = expected[ours]
        if len(want) == 2 and tensor.dim() == 4 and tensor.shape[2:] == (1, 1):
            tensor = tensor.reshape(tensor.shape[:2])  # 1x1 conv -> Linear
        if tuple(tensor.shape) != tuple(want):
            theirs = tuple(want) + ((1, 1) if len(want) == 2 and sd[key].dim() == 4 else ())
            mismatched.append(f"{key}: checkpoint {tuple(sd[key].shape)}, model expects {theirs}")
            continue
        out[ours] = tensor
    missing = [
        f"{(_rename(k, inverse) or k).replace('<n_resblocks>', n_res)} (ours: {k})"
        for k in expected
        if k not in seen
    ]
    if missing or unexpected or mismatched:
        parts = [
            f"{label} ({len(items)}): " + "; ".join(items)
            for label, items in [
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape mismatch", mismatched),
            ]
            if items
        ]
        raise ValueError(f"{what} state dict does not fit the model: " + " | ".join(parts))
    return out


def load_srno_weights(model: SRNO, path_or_obj: str | PathLike[str] | Mapping[str, Any]) -> SRNO:
    """Load the authors' SRNO weights (file path or already-loaded container) into ``model`` (strict);
    returns ``model``. Build a fitting model first with
    ``SRNO(**srno_args_from_state_dict(extract_srno_state_dict(obj)))`` when the architecture is unknown."""
    return load_weights(model, path_or_obj, extract_srno_state_dict, convert_srno_state_dict)


def load_weights(
    model: nn.Module,
    path_or_obj: str | PathLike[str] | Mapping[str, Any],
    extract: Callable[[Any], Mapping[str, Tensor]],
    convert: Callable[..., dict[str, Tensor]],
) -> nn.Module:
    """Read ``path_or_obj`` (a file, through the one checkpoint reader, or a loaded container), pick its state
    dict with ``extract``, convert it for ``model`` with ``convert`` (strict) and load it; errors name the file."""
    if isinstance(path_or_obj, Mapping):
        obj = path_or_obj
    else:
        from .checkpoint import read_checkpoint  # the one reader (it imports this module)

        obj = read_checkpoint(path_or_obj, mmap=True)
    try:
        state = convert(extract(obj), model=model)
    except ValueError as err:
        where = "" if isinstance(path_or_obj, Mapping) else f"{path_or_obj}: "
        raise ValueError(f"{where}{err}") from err
    model.load_state_dict(state, strict=True)
    return model
