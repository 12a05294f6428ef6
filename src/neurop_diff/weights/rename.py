"""Renaming the authors' state dicts to ours, shared by every format on top (``weights/srno.py``, ``liif.py``):
regex rules (authors' pattern, our template) and their inverse for error messages, the container unwrapping,
the strict name-and-shape check, and loading through the one reader (``weights/reader.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from os import PathLike
from typing import Any

from torch import Tensor, nn

from .reader import read_checkpoint

__all__ = [
    "DROPPED",
    "ENCODER_INVERSE",
    "ENCODER_RULES",
    "convert_state_dict",
    "load_weights",
    "rename",
    "strip_prefixes",
    "unwrap_state_dict",
]

#: The authors' unused mean-shift convs, dropped on import.
DROPPED = re.compile(r"encoder\.(sub_mean|add_mean)\.")
PREFIXES = ("module.", "srno.")
#: The EDSR-baseline encoder's names (authors' pattern, our template), shared by SRNO's and LIIF's import,
#: and the inverse for the names in error messages.
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


def rename(name: str, rules: list[tuple[str, str]]) -> str | None:
    """``name`` renamed by the first of ``rules`` (pattern, template) that matches it whole; None if none does."""
    for pattern, template in rules:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, template, name)
    return None


def strip_prefixes(name: str) -> str:
    """``name`` without the wrappers' leading ``module.`` / ``srno.``."""
    for prefix in PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
    return name


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
        name = strip_prefixes(key)
        if DROPPED.match(name):
            continue
        ours = rename(name, rules)
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
        f"{(rename(k, inverse) or k).replace('<n_resblocks>', n_res)} (ours: {k})"
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


def load_weights(
    model: nn.Module,
    path_or_obj: str | PathLike[str] | Mapping[str, Any],
    extract: Callable[[Any], Mapping[str, Tensor]],
    convert: Callable[..., dict[str, Tensor]],
) -> nn.Module:
    """Read ``path_or_obj`` (a file, through the one checkpoint reader, or a loaded container), pick its state
    dict with ``extract``, convert it for ``model`` with ``convert`` (strict) and load it; errors name the file."""
    obj = path_or_obj if isinstance(path_or_obj, Mapping) else read_checkpoint(path_or_obj, mmap=True)
    try:
        state = convert(extract(obj), model=model)
    except ValueError as err:
        where = "" if isinstance(path_or_obj, Mapping) else f"{path_or_obj}: "
        raise ValueError(f"{where}{err}") from err
    model.load_state_dict(state, strict=True)
    return model
