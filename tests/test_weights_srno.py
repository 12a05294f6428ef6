"""Import of the authors' SRNO weights: names/shapes of state-dicts.md, containers, errors, and numerics
against an independent functional re-implementation of the authors' forward pass (method.md, section 2)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from neurop_diff.models.srno import SRNO
from neurop_diff.weights import (
    convert_srno_state_dict,
    extract_srno_state_dict,
    load_srno_weights,
    read_checkpoint,
    srno_args_from_state_dict,
)

# The SRNO table of /work/shared/reference/state-dicts.md (authors' names, shapes), default configuration.
AUTHORS_SRNO = """
encoder.sub_mean.weight 3,3,1,1
encoder.sub_mean.bias 3
encoder.add_mean.weight 3,3,1,1
encoder.add_mean.bias 3
encoder.head.0.weight 64,3,3,3
encoder.head.0.bias 64
encoder.body.0.body.0.weight 64,64,3,3
encoder.body.0.body.0.bias 64
encoder.body.0.body.2.weight 64,64,3,3
encoder.body.0.body.2.bias 64
encoder.body.1.body.0.weight 64,64,3,3
encoder.body.1.body.0.bias 64
encoder.body.1.body.2.weight 64,64,3,3
encoder.body.1.body.2.bias 64
encoder.body.2.body.0.weight 64,64,3,3
encoder.body.2.body.0.bias 64
encoder.body.2.body.2.weight 64,64,3,3
encoder.body.2.body.2.bias 64
encoder.body.3.body.0.weight 64,64,3,3
encoder.body.3.body.0.bias 64
encoder.body.3.body.2.weight 64,64,3,3
encoder.body.3.body.2.bias 64
encoder.body.4.body.0.weight 64,64,3,3
encoder.body.4.body.0.bias 64
encoder.body.4.body.2.weight 64,64,3,3
encoder.body.4.body.2.bias 64
encoder.body.5.body.0.weight 64,64,3,3
encoder.body.5.body.0.bias 64
encoder.body.5.body.2.weight 64,64,3,3
encoder.body.5.body.2.bias 64
encoder.body.6.body.0.weight 64,64,3,3
encoder.body.6.body.0.bias 64
encoder.body.6.body.2.weight 64,64,3,3
encoder.body.6.body.2.bias 64
encoder.body.7.body.0.weight 64,64,3,3
encoder.body.7.body.0.bias 64
encoder.body.7.body.2.weight 64,64,3,3
encoder.body.7.body.2.bias 64
encoder.body.8.body.0.weight 64,64,3,3
encoder.body.8.body.0.bias 64
encoder.body.8.body.2.weight 64,64,3,3
encoder.body.8.body.2.bias 64
encoder.body.9.body.0.weight 64,64,3,3
encoder.body.9.body.0.bias 64
encoder.body.9.body.2.weight 64,64,3,3
encoder.body.9.body.2.bias 64
encoder.body.10.body.0.weight 64,64,3,3
encoder.body.10.body.0.bias 64
encoder.body.10.body.2.weight 64,64,3,3
encoder.body.10.body.2.bias 64
encoder.body.11.body.0.weight 64,64,3,3
encoder.body.11.body.0.bias 64
encoder.body.11.body.2.weight 64,64,3,3
encoder.body.11.body.2.bias 64
encoder.body.12.body.0.weight 64,64,3,3
encoder.body.12.body.0.bias 64
encoder.body.12.body.2.weight 64,64,3,3
encoder.body.12.body.2.bias 64
encoder.body.13.body.0.weight 64,64,3,3
encoder.body.13.body.0.bias 64
encoder.body.13.body.2.weight 64,64,3,3
encoder.body.13.body.2.bias 64
encoder.body.14.body.0.weight 64,64,3,3
encoder.body.14.body.0.bias 64
encoder.body.14.body.2.weight 64,64,3,3
encoder.body.14.body.2.bias 64
encoder.body.15.body.0.weight 64,64,3,3
encoder.body.15.body.0.bias 64
encoder.body.15.body.2.weight 64,64,3,3
encoder.body.15.body.2.bias 64
encoder.body.16.weight 64,64,3,3
encoder.body.16.bias 64
conv00.weight 256,266,1,1
conv00.bias 256
conv0.qkv_proj.weight 768,256,1,1
conv0.qkv_proj.bias 768
conv0.o_proj1.weight 256,256,1,1
conv0.o_proj1.bias 256
conv0.o_proj2.weight 256,256,1,1
conv0.o_proj2.bias 256
conv0.kln.weight 16,1,16
conv0.kln.bias 16,1,16
conv0.vln.weight 16,1,16
conv0.vln.bias 16,1,16
conv1.qkv_proj.weight 768,256,1,1
conv1.qkv_proj.bias 768
conv1.o_proj1.weight 256,256,1,1
conv1.o_proj1.bias 256
conv1.o_proj2.weight 256,256,1,1
conv1.o_proj2.bias 256
conv1.kln.weight 16,1,16
conv1.kln.bias 16,1,16
conv1.vln.weight 16,1,16
conv1.vln.bias 16,1,16
fc1.weight 256,256,1,1
fc1.bias 256
fc2.weight 3,256,1,1
fc2.bias 3
"""
SRNO_REPO_ARGS = {
    "encoder_spec": {"name": "edsr-baseline", "args": {"no_upsampling": True}},
    "width": 256,
    "blocks": 16,
}
DEFAULT_KWARGS = {
    "encoder_blocks": 16,
    "encoder_width": 64,
    "width": 256,
    "blocks": 2,
    "heads": 16,
    "head_width": 256,
}


def authors_table() -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in AUTHORS_SRNO.strip().splitlines():
        name, shape = line.split()
        rows.append((name, tuple(int(s) for s in shape.split(","))))
    return rows


def authors_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with the authors' names and shapes, scaled so activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in authors_table():
        if name.endswith("ln.weight"):
            t = 1 + 0.2 * torch.randn(shape, generator=g)
        elif name.endswith("ln.bias") or name.endswith(".bias"):
            t = 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = math.prod(shape[1:])
            t = torch.randn(shape, generator=g) * (0.5 / math.sqrt(fan_in))
        sd[name] = t
    return sd


def our_name(name: str) -> str | None:
    """The test's own statement of the name mapping (None: dropped)."""
    if "sub_mean" in name or "add_mean" in name:
        return None
    parts = name.split(".")
    if name.startswith("encoder.head.0."):
        return "encoder.head." + parts[-1]
    if name.startswith("encoder.body.") and len(parts) == 4:
        return "encoder.body_conv." + parts[-1]
    if name.startswith("encoder.body."):
        return f"encoder.blocks.{parts[2]}.{'conv1' if parts[4] == '0' else 'conv2'}.{parts[-1]}"
    if name.startswith("conv00."):
        return "lift." + parts[-1]
    if name.startswith("conv"):
        sub = {"qkv_proj": "qkv", "o_proj1": "proj1", "o_proj2": "proj2", "kln": "k_norm", "vln": "v_norm"}
        return f"blocks.{parts[0][4:]}.{sub[parts[1]]}.{parts[2]}"
    return {"fc1": "head.0.", "fc2": "head.2."}[parts[0]] + parts[1]


def containers(sd):
    return {
        "neuropdiff": {"model": sd},
        "srno_repo": {
            "model": {"name": "sronet", "args": SRNO_REPO_ARGS, "sd": sd},
            "epoch": 3,
            "optimizer": {},
        },
        "bare": sd,
    }


# --------------------------------------------------------------------------- independent authors' forward
def _liif_coord(n: int) -> torch.Tensor:
    r = 1.0 / n
    return -1 + r + (2 * r) * torch.arange(n).float()


def _conv1x1(x, sd, name):
    return F.conv2d(x, sd[name + ".weight"], sd[name + ".bias"])


def _ln(x, w, b, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    std = x.std(-1, keepdim=True)
    return (x - mean) / (std + eps) * w + b


def reference_forward(sd, inp, coord, cell):
    """SRNO forward written from method.md with the authors' parameter names. inp (B,3,h,w), coord (B,H,W,2)."""
    x = F.conv2d(inp, sd["encoder.head.0.weight"], sd["encoder.head.0.bias"], padding=1)
    res, i = x, 0
    while f"encoder.body.{i}.body.0.weight" in sd:
        p = f"encoder.body.{i}.body."
        t = F.relu(F.conv2d(res, sd[p + "0.weight"], sd[p + "0.bias"], padding=1))
        res = res + F.conv2d(t, sd[p + "2.weight"], sd[p + "2.bias"], padding=1)
        i += 1
    feat = x + F.conv2d(res, sd[f"encoder.body.{i}.weight"], sd[f"encoder.body.{i}.bias"], padding=1)

    b, _, h, w = feat.shape
    hh, ww = coord.shape[1:3]
    ys, xs = _liif_coord(h), _liif_coord(w)
    pos_lr = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), 0).unsqueeze(0).expand(b, 2, h, w)
    rel_coords, feats, areas = [], [], []
    for vy in (-1, 1):
        for vx in (-1, 1):
            c = coord.clone()
            c[..., 0] += vy / h + 1e-6
            c[..., 1] += vx / w + 1e-6
            c.clamp_(-1 + 1e-6, 1 - 1e-6)
            f = F.grid_sample(feat, c.flip(-1), mode="nearest", align_corners=False)
            old = F.grid_sample(pos_lr, c.flip(-1), mode="nearest", align_corners=False)
            rel = coord.permute(0, 3, 1, 2) - old
            rel[:, 0] *= h
            rel[:, 1] *= w
            areas.append(torch.abs(rel[:, 0] * rel[:, 1]) + 1e-9)
            rel_coords.append(rel)
            feats.append(f)
    tot = torch.stack(areas).sum(0)
    areas = [areas[3], areas[2], areas[1], areas[0]]
    feats = [f * (a / tot).unsqueeze(1) for f, a in zip(feats, areas, strict=True)]
    rel_cell = (cell * torch.tensor([h, w])).view(b, 2, 1, 1).expand(b, 2, hh, ww)
    x = _conv1x1(torch.cat([*rel_coords, *feats, rel_cell], 1), sd, "conv00")

    j = 0
    while f"conv{j}.qkv_proj.weight" in sd:
        p = f"conv{j}."
        heads = sd[p + "kln.weight"].shape[0]
        c_ = x.shape[1]
        qkv = _conv1x1(x, sd, p + "qkv_proj").permute(0, 2, 3, 1).reshape(b, hh * ww, heads, 3 * c_ // heads)
        q, k, v = qkv.permute(0, 2, 1, 3).chunk(3, dim=-1)
        k = _ln(k, sd[p + "kln.weight"], sd[p + "kln.bias"])
        v = _ln(v, sd[p + "vln.weight"], sd[p + "vln.bias"])
        att = q @ (k.transpose(-2, -1) @ v / (hh * ww))
        att = att.permute(0, 2, 1, 3).reshape(b, hh, ww, c_).permute(0, 3, 1, 2)
        r = x + att
        x = x + _conv1x1(F.gelu(_conv1x1(r, sd, p + "o_proj1")), sd, p + "o_proj2")
        j += 1
    out = _conv1x1(F.gelu(_conv1x1(x, sd, "fc1")), sd, "fc2")
    return out + F.grid_sample(
        inp, coord.flip(-1), mode="bilinear", padding_mode="border", align_corners=False
    )


# ------------------------------------------------------------------------------------------------- tests
def test_table_is_the_default_architecture():
    table = authors_table()
    assert len(table) == 98
    assert srno_args_from_state_dict(dict(authors_state_dict())) == DEFAULT_KWARGS
    ours = {k: tuple(v.shape) for k, v in SRNO().state_dict().items()}
    mapped = {our_name(n): s for n, s in table if our_name(n) is not None}
    assert set(mapped) == set(ours)
    for name, shape in mapped.items():
        assert math.prod(shape) == math.prod(ours[name]), name


@pytest.mark.parametrize("kind", ["neuropdiff", "srno_repo", "bare"])
def test_every_tensor_lands_in_its_parameter(tmp_path, kind):
    sd = authors_state_dict(seed=1)
    path = tmp_path / f"{kind}.pth"
    torch.save(containers(sd)[kind], path)
    model = load_srno_weights(SRNO(), path)
    ours = model.state_dict()
    for name, tensor in sd.items():
        target = our_name(name)
        if target is None:
            continue
        assert torch.equal(ours[target], tensor.reshape(ours[target].shape)), name
    assert len(ours) == len(sd) - 4


def test_prefixes_are_stripped_and_mean_shift_dropped():
    sd = authors_state_dict()
    for prefix in ("module.", "srno.", "module.srno."):
        out = convert_srno_state_dict({prefix + k: v for k, v in sd.items()})
        assert "lift.weight" in out and not any("mean" in k for k in out)
        assert out["lift.weight"].shape == (256, 266)
        assert torch.equal(out["lift.weight"], sd["conv00.weight"][:, :, 0, 0])


def test_clear_errors_for_missing_unexpected_and_wrong_shapes():
    sd = authors_state_dict()
    sd["conv00.weight"] = torch.zeros(256, 260, 1, 1)
    del sd["fc2.bias"]
    sd["conv0.extra.weight"] = torch.zeros(3)
    with pytest.raises(ValueError) as info:
        convert_srno_state_dict(sd, model=SRNO())
    msg = str(info.value)
    assert "conv00.weight: checkpoint (256, 260, 1, 1), model expects (256, 266, 1, 1)" in msg
    assert "missing (1): fc2.bias (ours: head.2.bias)" in msg
    assert "unexpected (1): conv0.extra.weight" in msg


def test_architecture_mismatch_is_reported(tmp_path):
    sd = authors_state_dict()
    small = SRNO(encoder_blocks=15)
    with pytest.raises(ValueError) as info:
        load_srno_weights(small, {"model": sd})
    msg = str(info.value)
    assert "missing (2): encoder.body.15.weight (ours: encoder.body_conv.weight); encoder.body.15.bias" in msg
    assert "unexpected (6): encoder.body.15.body.0.weight;" in msg and "; encoder.body.16.bias" in msg
    bare = tmp_path / "w.pth"
    torch.save({k: v for k, v in sd.items() if not k.startswith("conv1.")}, bare)
    with pytest.raises(ValueError, match=rf"{bare.name}.*missing \(10\): conv1\.qkv_proj\.weight"):
        load_srno_weights(SRNO(), bare)


def test_extract_rejects_other_containers():
    with pytest.raises(ValueError, match="not an SRNO checkpoint"):
        extract_srno_state_dict([1, 2])
    with pytest.raises(ValueError, match=r"not an SRNO checkpoint.*'epoch'"):
        extract_srno_state_dict({"epoch": 1, "x": torch.zeros(1)})
    with pytest.raises(ValueError, match="'liif'"):
        extract_srno_state_dict({"model": {"name": "liif", "args": {}, "sd": {"a": torch.zeros(1)}}})


def test_checkpoint_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        read_checkpoint(tmp_path / "nope.pth")
    good = tmp_path / "good.pth"
    torch.save({"model": {"a": torch.arange(1000.0)}}, good)
    assert torch.equal(read_checkpoint(good)["model"]["a"], torch.arange(1000.0))
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(ValueError, match=r"truncated\.pth.*truncated or corrupt"):
        read_checkpoint(truncated)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"model": {"a": torch.zeros(1)}, "obj": _Opaque()}, unsafe)
    with pytest.raises(ValueError, match=r"unsafe\.pth.*only plain weights are accepted"):
        read_checkpoint(unsafe)


class _Opaque:
    """Any non-allowlisted class: unpickling it would run code from the file."""


@pytest.mark.parametrize("lift", ["direct", "table", "auto"])
def test_imported_weights_match_the_authors_forward(lift):
    from neurop_diff.models.chunked import evaluate

    sd = authors_state_dict(seed=2)
    model = load_srno_weights(SRNO(), {"model": sd}).eval()
    g = torch.Generator().manual_seed(3)
    lr = torch.rand(2, 3, 7, 9, generator=g) * 2 - 1
    size = (19, 24)  # x2.71 / x2.67: a non-integer scale
    coord = torch.stack(torch.meshgrid(_liif_coord(19), _liif_coord(24), indexing="ij"), -1)
    coord = coord.unsqueeze(0).expand(2, *coord.shape)
    cell = torch.tensor([[2 / 19, 2 / 24]] * 2)
    with torch.no_grad():
        ref = reference_forward(sd, lr, coord, cell)
        ours = model(lr, size)
        chunked = model(lr, size, chunk_size=100)
        points = coord.reshape(2, -1, 2)
        evaluated = evaluate(model, model.encode(lr), lr, points, cell, chunk=100, lift=lift)
        evaluated = evaluated.transpose(1, 2).reshape(2, 3, 19, 24)
    torch.testing.assert_close(evaluated, ref, atol=1e-5, rtol=0)
    assert ref.shape == ours.shape == (2, 3, 19, 24)
    assert ref.abs().max() > 0.5 and ref.std() > 0.1  # not a degenerate comparison
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked, ref, atol=1e-5, rtol=0)
