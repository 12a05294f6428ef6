"""Rename the authors' (SR3-code) UNet parameters to :class:`neurop_diff.models.unet.UNet`'s.

Both keep SR3's flat ``downs`` / ``mid`` / ``ups`` lists in forward order, so the mapping is a fixed set of
renames inside a block (``/work/shared/reference/state-dicts.md``, second table):

    noise_level_mlp.1 / .3                 -> noise_mlp.0 / .2
    <blk>.res_block.block1.block.0 / .3    -> <blk>.norm1 / .conv1
    <blk>.res_block.noise_func.noise_func.0 -> <blk>.emb_proj
    <blk>.res_block.block2.block.0 / .3    -> <blk>.norm2 / .conv2
    <blk>.res_block.res_conv               -> <blk>.skip
    <blk>.attn.{norm,qkv,out}              -> unchanged
    final_conv.block.0 / .3                -> out_norm / out_conv
    downs.0, downs.<k>.conv, ups.<k>.conv  -> unchanged
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

from neurop_diff.models.unet import UNet

__all__ = ["UNET_PREFIX", "convert_unet_state_dict", "unet_key"]

UNET_PREFIX = "Unet."

# Modules outside the down/mid/up lists, and modules inside one of their blocks (authors' -> ours).
_TOP = {
    "noise_level_mlp.1": "noise_mlp.0",
    "noise_level_mlp.3": "noise_mlp.2",
    "final_conv.block.0": "out_norm",
    "final_conv.block.3": "out_conv",
    "downs.0": "downs.0",
}
_IN_BLOCK = {
    "res_block.block1.block.0": "norm1",
    "res_block.block1.block.3": "conv1",
    "res_block.noise_func.noise_func.0": "emb_proj",
    "res_block.block2.block.0": "norm2",
    "res_block.block2.block.3": "conv2",
    "res_block.res_conv": "skip",
    "attn.norm": "attn.norm",
    "attn.qkv": "attn.qkv",
    "attn.out": "attn.out",
    "conv": "conv",
}
_BLOCK = re.compile(r"^(downs|mid|ups)\.(\d+)\.(.+)$")


def unet_key(name: str) -> str | None:
    """Our parameter name for one of the authors' UNet names (``Unet.`` prefix allowed); None if unknown."""
    module, _, leaf = name.removeprefix(UNET_PREFIX).rpartition(".")
    if leaf not in ("weight", "bias"):
        return None
    if module in _TOP:
        return f"{_TOP[module]}.{leaf}"
    m = _BLOCK.match(module)
    if m is None or m[3] not in _IN_BLOCK:
        return None
    return f"{m[1]}.{m[2]}.{_IN_BLOCK[m[3]]}.{leaf}"


def convert_unet_state_dict(sd: dict[str, Tensor], model: UNet | None = None) -> dict[str, Tensor]:
    """The authors' UNet state dict (names ``[Unet.]<name>``) in our names, checked against ``model``.

    ``model`` gives the expected names and shapes (default: ``UNet()``, the authors' configuration, built on
    the meta device). Raises ValueError listing unknown, missing and mismatched keys.
    """
    if model is None:
        with torch.device("meta"):
            model = UNet()
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    out: dict[str, Tensor] = {}
    unknown, problems = [], []
    for name, value in sd.items():
        key = unet_key(name)
        if key is None or key not in expected:
            unknown.append(name)
            continue
        if key in out:
            problems.append(f"{name}: maps to {key}, which is given twice")
        elif tuple(value.shape) != expected[key]:
            problems.append(f"{name}: shape {tuple(value.shape)}, expected {expected[key]} for {key}")
        out[key] = value
    missing = sorted(set(expected) - set(out))
    if unknown or missing or problems:
        parts = []
        if unknown:
            parts.append(f"unexpected keys ({len(unknown)}): {', '.join(unknown[:10])}")
        if missing:
            parts.append(f"missing keys ({len(missing)}, our names): {', '.join(missing[:10])}")
        if problems:
            parts.append(f"shape mismatches ({len(problems)}): {'; '.join(problems[:10])}")
        raise ValueError(
            "authors' UNet state dict does not fit the UNet configuration: "
            + " | ".join(parts)
            + " (pass a model built with the checkpoint's configuration as `model=`)"
        )
    return out
