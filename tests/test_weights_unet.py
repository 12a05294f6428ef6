"""Import of the authors' UNet weights: names/shapes of state-dicts.md, numerics against their forward."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from neurop_diff.models.unet import UNet
from neurop_diff.weights.neuropdiff import load_neuropdiff_checkpoint, split_neuropdiff_checkpoint
from neurop_diff.weights.unet import convert_unet_state_dict

# The UNet table of /work/shared/reference/state-dicts.md (authors' names, shapes), default configuration.
AUTHORS_UNET = """
noise_level_mlp.1.weight 256,64
noise_level_mlp.1.bias 256
noise_level_mlp.3.weight 64,256
noise_level_mlp.3.bias 64
downs.0.weight 64,6,3,3
downs.0.bias 64
downs.1.res_block.noise_func.noise_func.0.weight 64,64
downs.1.res_block.noise_func.noise_func.0.bias 64
downs.1.res_block.block1.block.0.weight 64
downs.1.res_block.block1.block.0.bias 64
downs.1.res_block.block1.block.3.weight 64,64,3,3
downs.1.res_block.block1.block.3.bias 64
downs.1.res_block.block2.block.0.weight 64
downs.1.res_block.block2.block.0.bias 64
downs.1.res_block.block2.block.3.weight 64,64,3,3
downs.1.res_block.block2.block.3.bias 64
downs.2.conv.weight 64,64,3,3
downs.2.conv.bias 64
downs.3.res_block.noise_func.noise_func.0.weight 128,64
downs.3.res_block.noise_func.noise_func.0.bias 128
downs.3.res_block.block1.block.0.weight 64
downs.3.res_block.block1.block.0.bias 64
downs.3.res_block.block1.block.3.weight 128,64,3,3
downs.3.res_block.block1.block.3.bias 128
downs.3.res_block.block2.block.0.weight 128
downs.3.res_block.block2.block.0.bias 128
downs.3.res_block.block2.block.3.weight 128,128,3,3
downs.3.res_block.block2.block.3.bias 128
downs.3.res_block.res_conv.weight 128,64,1,1
downs.3.res_block.res_conv.bias 128
downs.4.conv.weight 128,128,3,3
downs.4.conv.bias 128
downs.5.res_block.noise_func.noise_func.0.weight 128,64
downs.5.res_block.noise_func.noise_func.0.bias 128
downs.5.res_block.block1.block.0.weight 128
downs.5.res_block.block1.block.0.bias 128
downs.5.res_block.block1.block.3.weight 128,128,3,3
downs.5.res_block.block1.block.3.bias 128
downs.5.res_block.block2.block.0.weight 128
downs.5.res_block.block2.block.0.bias 128
downs.5.res_block.block2.block.3.weight 128,128,3,3
downs.5.res_block.block2.block.3.bias 128
downs.6.conv.weight 128,128,3,3
downs.6.conv.bias 128
downs.7.res_block.noise_func.noise_func.0.weight 256,64
downs.7.res_block.noise_func.noise_func.0.bias 256
downs.7.res_block.block1.block.0.weight 128
downs.7.res_block.block1.block.0.bias 128
downs.7.res_block.block1.block.3.weight 256,128,3,3
downs.7.res_block.block1.block.3.bias 256
downs.7.res_block.block2.block.0.weight 256
downs.7.res_block.block2.block.0.bias 256
downs.7.res_block.block2.block.3.weight 256,256,3,3
downs.7.res_block.block2.block.3.bias 256
downs.7.res_block.res_conv.weight 256,128,1,1
downs.7.res_block.res_conv.bias 256
downs.8.conv.weight 256,256,3,3
downs.8.conv.bias 256
downs.9.res_block.noise_func.noise_func.0.weight 256,64
downs.9.res_block.noise_func.noise_func.0.bias 256
downs.9.res_block.block1.block.0.weight 256
downs.9.res_block.block1.block.0.bias 256
downs.9.res_block.block1.block.3.weight 256,256,3,3
downs.9.res_block.block1.block.3.bias 256
downs.9.res_block.block2.block.0.weight 256
downs.9.res_block.block2.block.0.bias 256
downs.9.res_block.block2.block.3.weight 256,256,3,3
downs.9.res_block.block2.block.3.bias 256
downs.9.attn.norm.weight 256
downs.9.attn.norm.bias 256
downs.9.attn.qkv.weight 768,256,1,1
downs.9.attn.out.weight 256,256,1,1
downs.9.attn.out.bias 256
downs.10.conv.weight 256,256,3,3
downs.10.conv.bias 256
downs.11.res_block.noise_func.noise_func.0.weight 512,64
downs.11.res_block.noise_func.noise_func.0.bias 512
downs.11.res_block.block1.block.0.weight 256
downs.11.res_block.block1.block.0.bias 256
downs.11.res_block.block1.block.3.weight 512,256,3,3
downs.11.res_block.block1.block.3.bias 512
downs.11.res_block.block2.block.0.weight 512
downs.11.res_block.block2.block.0.bias 512
downs.11.res_block.block2.block.3.weight 512,512,3,3
downs.11.res_block.block2.block.3.bias 512
downs.11.res_block.res_conv.weight 512,256,1,1
downs.11.res_block.res_conv.bias 512
mid.0.res_block.noise_func.noise_func.0.weight 512,64
mid.0.res_block.noise_func.noise_func.0.bias 512
mid.0.res_block.block1.block.0.weight 512
mid.0.res_block.block1.block.0.bias 512
mid.0.res_block.block1.block.3.weight 512,512,3,3
mid.0.res_block.block1.block.3.bias 512
mid.0.res_block.block2.block.0.weight 512
mid.0.res_block.block2.block.0.bias 512
mid.0.res_block.block2.block.3.weight 512,512,3,3
mid.0.res_block.block2.block.3.bias 512
mid.0.attn.norm.weight 512
mid.0.attn.norm.bias 512
mid.0.attn.qkv.weight 1536,512,1,1
mid.0.attn.out.weight 512,512,1,1
mid.0.attn.out.bias 512
mid.1.res_block.noise_func.noise_func.0.weight 512,64
mid.1.res_block.noise_func.noise_func.0.bias 512
mid.1.res_block.block1.block.0.weight 512
mid.1.res_block.block1.block.0.bias 512
mid.1.res_block.block1.block.3.weight 512,512,3,3
mid.1.res_block.block1.block.3.bias 512
mid.1.res_block.block2.block.0.weight 512
mid.1.res_block.block2.block.0.bias 512
mid.1.res_block.block2.block.3.weight 512,512,3,3
mid.1.res_block.block2.block.3.bias 512
ups.0.res_block.noise_func.noise_func.0.weight 512,64
ups.0.res_block.noise_func.noise_func.0.bias 512
ups.0.res_block.block1.block.0.weight 1024
ups.0.res_block.block1.block.0.bias 1024
ups.0.res_block.block1.block.3.weight 512,1024,3,3
ups.0.res_block.block1.block.3.bias 512
ups.0.res_block.block2.block.0.weight 512
ups.0.res_block.block2.block.0.bias 512
ups.0.res_block.block2.block.3.weight 512,512,3,3
ups.0.res_block.block2.block.3.bias 512
ups.0.res_block.res_conv.weight 512,1024,1,1
ups.0.res_block.res_conv.bias 512
ups.1.res_block.noise_func.noise_func.0.weight 512,64
ups.1.res_block.noise_func.noise_func.0.bias 512
ups.1.res_block.block1.block.0.weight 768
ups.1.res_block.block1.block.0.bias 768
ups.1.res_block.block1.block.3.weight 512,768,3,3
ups.1.res_block.block1.block.3.bias 512
ups.1.res_block.block2.block.0.weight 512
ups.1.res_block.block2.block.0.bias 512
ups.1.res_block.block2.block.3.weight 512,512,3,3
ups.1.res_block.block2.block.3.bias 512
ups.1.res_block.res_conv.weight 512,768,1,1
ups.1.res_block.res_conv.bias 512
ups.2.conv.weight 512,512,3,3
ups.2.conv.bias 512
ups.3.res_block.noise_func.noise_func.0.weight 256,64
ups.3.res_block.noise_func.noise_func.0.bias 256
ups.3.res_block.block1.block.0.weight 768
ups.3.res_block.block1.block.0.bias 768
ups.3.res_block.block1.block.3.weight 256,768,3,3
ups.3.res_block.block1.block.3.bias 256
ups.3.res_block.block2.block.0.weight 256
ups.3.res_block.block2.block.0.bias 256
ups.3.res_block.block2.block.3.weight 256,256,3,3
ups.3.res_block.block2.block.3.bias 256
ups.3.res_block.res_conv.weight 256,768,1,1
ups.3.res_block.res_conv.bias 256
ups.3.attn.norm.weight 256
ups.3.attn.norm.bias 256
ups.3.attn.qkv.weight 768,256,1,1
ups.3.attn.out.weight 256,256,1,1
ups.3.attn.out.bias 256
ups.4.res_block.noise_func.noise_func.0.weight 256,64
ups.4.res_block.noise_func.noise_func.0.bias 256
ups.4.res_block.block1.block.0.weight 512
ups.4.res_block.block1.block.0.bias 512
ups.4.res_block.block1.block.3.weight 256,512,3,3
ups.4.res_block.block1.block.3.bias 256
ups.4.res_block.block2.block.0.weight 256
ups.4.res_block.block2.block.0.bias 256
ups.4.res_block.block2.block.3.weight 256,256,3,3
ups.4.res_block.block2.block.3.bias 256
ups.4.res_block.res_conv.weight 256,512,1,1
ups.4.res_block.res_conv.bias 256
ups.4.attn.norm.weight 256
ups.4.attn.norm.bias 256
ups.4.attn.qkv.weight 768,256,1,1
ups.4.attn.out.weight 256,256,1,1
ups.4.attn.out.bias 256
ups.5.conv.weight 256,256,3,3
ups.5.conv.bias 256
ups.6.res_block.noise_func.noise_func.0.weight 256,64
ups.6.res_block.noise_func.noise_func.0.bias 256
ups.6.res_block.block1.block.0.weight 512
ups.6.res_block.block1.block.0.bias 512
ups.6.res_block.block1.block.3.weight 256,512,3,3
ups.6.res_block.block1.block.3.bias 256
ups.6.res_block.block2.block.0.weight 256
ups.6.res_block.block2.block.0.bias 256
ups.6.res_block.block2.block.3.weight 256,256,3,3
ups.6.res_block.block2.block.3.bias 256
ups.6.res_block.res_conv.weight 256,512,1,1
ups.6.res_block.res_conv.bias 256
ups.7.res_block.noise_func.noise_func.0.weight 256,64
ups.7.res_block.noise_func.noise_func.0.bias 256
ups.7.res_block.block1.block.0.weight 384
ups.7.res_block.block1.block.0.bias 384
ups.7.res_block.block1.block.3.weight 256,384,3,3
ups.7.res_block.block1.block.3.bias 256
ups.7.res_block.block2.block.0.weight 256
ups.7.res_block.block2.block.0.bias 256
ups.7.res_block.block2.block.3.weight 256,256,3,3
ups.7.res_block.block2.block.3.bias 256
ups.7.res_block.res_conv.weight 256,384,1,1
ups.7.res_block.res_conv.bias 256
ups.8.conv.weight 256,256,3,3
ups.8.conv.bias 256
ups.9.res_block.noise_func.noise_func.0.weight 128,64
ups.9.res_block.noise_func.noise_func.0.bias 128
ups.9.res_block.block1.block.0.weight 384
ups.9.res_block.block1.block.0.bias 384
ups.9.res_block.block1.block.3.weight 128,384,3,3
ups.9.res_block.block1.block.3.bias 128
ups.9.res_block.block2.block.0.weight 128
ups.9.res_block.block2.block.0.bias 128
ups.9.res_block.block2.block.3.weight 128,128,3,3
ups.9.res_block.block2.block.3.bias 128
ups.9.res_block.res_conv.weight 128,384,1,1
ups.9.res_block.res_conv.bias 128
ups.10.res_block.noise_func.noise_func.0.weight 128,64
ups.10.res_block.noise_func.noise_func.0.bias 128
ups.10.res_block.block1.block.0.weight 256
ups.10.res_block.block1.block.0.bias 256
ups.10.res_block.block1.block.3.weight 128,256,3,3
ups.10.res_block.block1.block.3.bias 128
ups.10.res_block.block2.block.0.weight 128
ups.10.res_block.block2.block.0.bias 128
ups.10.res_block.block2.block.3.weight 128,128,3,3
ups.10.res_block.block2.block.3.bias 128
ups.10.res_block.res_conv.weight 128,256,1,1
ups.10.res_block.res_conv.bias 128
ups.11.conv.weight 128,128,3,3
ups.11.conv.bias 128
ups.12.res_block.noise_func.noise_func.0.weight 128,64
ups.12.res_block.noise_func.noise_func.0.bias 128
ups.12.res_block.block1.block.0.weight 256
ups.12.res_block.block1.block.0.bias 256
ups.12.res_block.block1.block.3.weight 128,256,3,3
ups.12.res_block.block1.block.3.bias 128
ups.12.res_block.block2.block.0.weight 128
ups.12.res_block.block2.block.0.bias 128
ups.12.res_block.block2.block.3.weight 128,128,3,3
ups.12.res_block.block2.block.3.bias 128
ups.12.res_block.res_conv.weight 128,256,1,1
ups.12.res_block.res_conv.bias 128
ups.13.res_block.noise_func.noise_func.0.weight 128,64
ups.13.res_block.noise_func.noise_func.0.bias 128
ups.13.res_block.block1.block.0.weight 192
ups.13.res_block.block1.block.0.bias 192
ups.13.res_block.block1.block.3.weight 128,192,3,3
ups.13.res_block.block1.block.3.bias 128
ups.13.res_block.block2.block.0.weight 128
ups.13.res_block.block2.block.0.bias 128
ups.13.res_block.block2.block.3.weight 128,128,3,3
ups.13.res_block.block2.block.3.bias 128
ups.13.res_block.res_conv.weight 128,192,1,1
ups.13.res_block.res_conv.bias 128
ups.14.conv.weight 128,128,3,3
ups.14.conv.bias 128
ups.15.res_block.noise_func.noise_func.0.weight 64,64
ups.15.res_block.noise_func.noise_func.0.bias 64
ups.15.res_block.block1.block.0.weight 192
ups.15.res_block.block1.block.0.bias 192
ups.15.res_block.block1.block.3.weight 64,192,3,3
ups.15.res_block.block1.block.3.bias 64
ups.15.res_block.block2.block.0.weight 64
ups.15.res_block.block2.block.0.bias 64
ups.15.res_block.block2.block.3.weight 64,64,3,3
ups.15.res_block.block2.block.3.bias 64
ups.15.res_block.res_conv.weight 64,192,1,1
ups.15.res_block.res_conv.bias 64
ups.16.res_block.noise_func.noise_func.0.weight 64,64
ups.16.res_block.noise_func.noise_func.0.bias 64
ups.16.res_block.block1.block.0.weight 128
ups.16.res_block.block1.block.0.bias 128
ups.16.res_block.block1.block.3.weight 64,128,3,3
ups.16.res_block.block1.block.3.bias 64
ups.16.res_block.block2.block.0.weight 64
ups.16.res_block.block2.block.0.bias 64
ups.16.res_block.block2.block.3.weight 64,64,3,3
ups.16.res_block.block2.block.3.bias 64
ups.16.res_block.res_conv.weight 64,128,1,1
ups.16.res_block.res_conv.bias 64
final_conv.block.0.weight 64
final_conv.block.0.bias 64
final_conv.block.3.weight 3,64,3,3
final_conv.block.3.bias 3
"""


def table_shapes() -> dict[str, tuple[int, ...]]:
    rows = [line.split(" ") for line in AUTHORS_UNET.strip().splitlines()]
    return {name: tuple(int(d) for d in dims.split(",")) for name, dims in rows}


def sr3_shapes(in_ch=6, out_ch=3, base=64, mults=(1, 2, 2, 4, 4, 8), res_blocks=1, attn_res=(16,), size=256):
    """The authors' (SR3 code) parameter names and shapes, restated from their constructor."""
    s: dict[str, tuple[int, ...]] = {}

    def conv(p, cin, cout, k, bias=True):
        s[p + ".weight"] = (cout, cin, k, k)
        if bias:
            s[p + ".bias"] = (cout,)

    def vec(p, c, cin=None):
        s[p + ".weight"] = (c,) if cin is None else (c, cin)
        s[p + ".bias"] = (c,)

    def resblock(p, cin, cout, attn):
        r = p + ".res_block"
        vec(r + ".noise_func.noise_func.0", cout, base)
        vec(r + ".block1.block.0", cin)
        conv(r + ".block1.block.3", cin, cout, 3)
        vec(r + ".block2.block.0", cout)
        conv(r + ".block2.block.3", cout, cout, 3)
        if cin != cout:
            conv(r + ".res_conv", cin, cout, 1)
        if attn:
            vec(p + ".attn.norm", cout)
            conv(p + ".attn.qkv", cout, 3 * cout, 1, bias=False)
            conv(p + ".attn.out", cout, cout, 1)

    vec("noise_level_mlp.1", base * 4, base)
    vec("noise_level_mlp.3", base, base * 4)
    conv("downs.0", in_ch, base, 3)
    n, pre, feats, res = 1, base, [base], size
    for i, m in enumerate(mults):
        for _ in range(res_blocks):
            resblock(f"downs.{n}", pre, base * m, res in attn_res)
            pre, n = base * m, n + 1
            feats.append(pre)
        if i < len(mults) - 1:
            conv(f"downs.{n}.conv", pre, pre, 3)
            feats.append(pre)
            n, res = n + 1, res // 2
    resblock("mid.0", pre, pre, True)
    resblock("mid.1", pre, pre, False)
    n = 0
    for i in reversed(range(len(mults))):
        for _ in range(res_blocks + 1):
            resblock(f"ups.{n}", pre + feats.pop(), base * mults[i], res in attn_res)
            pre, n = base * mults[i], n + 1
        if i > 0:
            conv(f"ups.{n}.conv", pre, pre, 3)
            n, res = n + 1, res * 2
    vec("final_conv.block.0", pre)
    conv("final_conv.block.3", pre, out_ch, 3)
    return s


def authors_forward(sd, x, gamma, groups):
    """Independent functional forward of the authors' UNet, walking their parameter names."""

    def conv(p, h, **kw):
        return F.conv2d(h, sd[p + ".weight"], sd.get(p + ".bias"), **kw)

    def lin(p, h):
        return F.linear(h, sd[p + ".weight"], sd[p + ".bias"])

    def gn(p, h):
        return F.group_norm(h, groups, sd[p + ".weight"], sd[p + ".bias"])

    def block(p, h):  # [GroupNorm, Swish, Dropout/Identity, Conv3x3]
        return conv(p + ".block.3", F.silu(gn(p + ".block.0", h)), padding=1)

    def attn(p, h):
        b, c, hh, ww = h.shape
        q, k, v = F.conv2d(gn(p + ".norm", h), sd[p + ".qkv.weight"]).chunk(3, dim=1)
        a = torch.einsum("bchw,bcyx->bhwyx", q, k) / math.sqrt(c)
        a = a.reshape(b, hh, ww, hh * ww).softmax(-1).reshape(b, hh, ww, hh, ww)
        return h + conv(p + ".out", torch.einsum("bhwyx,bcyx->bchw", a, v))

    def resblock(p, h, emb):
        r = p + ".res_block"
        y = block(r + ".block1", h) + lin(r + ".noise_func.noise_func.0", emb)[:, :, None, None]
        y = block(r + ".block2", y) + (conv(r + ".res_conv", h) if r + ".res_conv.weight" in sd else h)
        return attn(p + ".attn", y) if p + ".attn.qkv.weight" in sd else y

    half = sd["noise_level_mlp.1.weight"].shape[1] // 2
    enc = gamma[:, None] * torch.exp(-math.log(1e4) * torch.arange(half, dtype=x.dtype)[None] / half)
    emb = lin("noise_level_mlp.3", F.silu(lin("noise_level_mlp.1", torch.cat([enc.sin(), enc.cos()], -1))))
    n_layers = {
        pre: 1 + max(int(k.split(".")[1]) for k in sd if k.startswith(pre)) for pre in ("downs.", "ups.")
    }
    h, feats = x, []
    for i in range(n_layers["downs."]):
        p = f"downs.{i}"
        if p + ".weight" in sd:
            h = conv(p, h, padding=1)
        elif p + ".conv.weight" in sd:
            h = conv(p + ".conv", h, stride=2, padding=1)
        else:
            h = resblock(p, h, emb)
        feats.append(h)
    h = resblock("mid.1", resblock("mid.0", h, emb), emb)
    for i in range(n_layers["ups."]):
        p = f"ups.{i}"
        if p + ".conv.weight" in sd:
            h = conv(p + ".conv", F.interpolate(h, scale_factor=2.0, mode="nearest"), padding=1)
        else:
            h = resblock(p, torch.cat([h, feats.pop()], dim=1), emb)
    return block("final_conv", h)


TINY = dict(base=8, mults=(1, 2, 2), res_blocks=1, attn_res=(8,), size=16)


def tiny_unet() -> UNet:
    return UNet(
        base_channels=8,
        channel_mults=(1, 2, 2),
        res_blocks=1,
        attn_resolutions=(8,),
        image_size=16,
        norm_groups=4,
    ).eval()


def random_sd(shapes, seed=0, scale=0.2):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * scale for k, s in shapes.items()}


def test_sr3_restatement_reproduces_the_published_table():
    assert sr3_shapes() == table_shapes()


def test_every_published_tensor_lands_in_its_parameter():
    shapes = table_shapes()
    # Distinct value per tensor (its row number), stored as a broadcast view: no 190 MB of memory.
    sd = {"Unet." + k: torch.tensor(float(i)).expand(s) for i, (k, s) in enumerate(shapes.items())}
    ours = convert_unet_state_dict(sd)
    with torch.device("meta"):
        model = UNet()
    assert len(ours) == len(shapes) == len(model.state_dict()) == 280
    model.load_state_dict(ours, strict=True, assign=True)
    params = {k: p.detach() for k, p in model.named_parameters()}
    assert sum(p.numel() for p in params.values()) == sum(math.prod(s) for s in shapes.values()) == 47_478_595
    seen = set()
    for i, (name, shape) in enumerate(shapes.items()):
        # Values identify the source; the semantic rule (which module) is checked numerically below.
        target = [k for k, p in params.items() if p.shape == shape and float(p.reshape(-1)[0]) == i]
        assert len(target) == 1, name
        seen.add(target[0])
    assert seen == set(params)
    # Spot checks of the rules on module roles.
    index = list(shapes).index
    with torch.no_grad():
        assert float(model.downs[9].attn.qkv.weight[0, 0, 0, 0]) == index("downs.9.attn.qkv.weight")
        assert float(model.ups[16].skip.bias[0]) == index("ups.16.res_block.res_conv.bias")
        assert float(model.noise_mlp[2].weight[0, 0]) == index("noise_level_mlp.3.weight")
        assert float(model.mid[0].emb_proj.bias[0]) == index("mid.0.res_block.noise_func.noise_func.0.bias")
        assert float(model.out_conv.weight[0, 0, 0, 0]) == index("final_conv.block.3.weight")


def test_imported_unet_matches_the_authors_forward():
    sd = random_sd(sr3_shapes(**TINY))
    model = tiny_unet()
    model.load_state_dict(convert_unet_state_dict({"Unet." + k: v for k, v in sd.items()}, model))
    g = torch.Generator().manual_seed(1)
    x, gamma = torch.randn(2, 6, 16, 16, generator=g), torch.tensor([0.93, 0.2])
    with torch.no_grad():
        expected = authors_forward(sd, x, gamma, groups=4)
        out = model(x, gamma)
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-4)


def test_conversion_errors_name_the_keys():
    sd = {k: torch.zeros(s) for k, s in sr3_shapes(**TINY).items()}
    model = tiny_unet()
    bad = dict(sd)
    del bad["ups.3.res_block.res_conv.weight"]
    with pytest.raises(ValueError, match=r"missing keys.*ups\.3\.skip\.weight"):
        convert_unet_state_dict(bad, model)
    with pytest.raises(ValueError, match=r"unexpected keys.*downs\.1\.res_block\.gamma"):
        convert_unet_state_dict({**sd, "downs.1.res_block.gamma": torch.zeros(1)}, model)
    bad = {**sd, "downs.0.weight": torch.zeros(8, 3, 3, 3)}
    with pytest.raises(ValueError, match=r"downs\.0\.weight: shape \(8, 3, 3, 3\), expected \(8, 6, 3, 3\)"):
        convert_unet_state_dict(bad, model)
    with pytest.raises(ValueError, match="does not fit"):
        convert_unet_state_dict(sd)  # tiny weights against the default configuration


def _checkpoint(unet_raw, unet_ema):
    srno_raw = {"encoder.head.0.weight": torch.ones(4, 3, 3, 3), "fc2.bias": torch.zeros(3)}
    model_state = {"Unet." + k: v for k, v in unet_raw.items()} | {
        "srno." + k: v for k, v in srno_raw.items()
    }
    shadow = {"Unet." + k: v for k, v in unet_ema.items()} | {"srno.fc2.bias": torch.full((3,), 7.0)}
    return [model_state, {"state": {}, "param_groups": []}, 3, 1200, shadow]


def test_neuropdiff_checkpoint_takes_ema_weights(tmp_path):
    shapes = sr3_shapes(**TINY)
    raw, ema = random_sd(shapes, seed=0), random_sd(shapes, seed=1)
    del ema["downs.1.res_block.block1.block.0.bias"]  # the shadow may lack a name: fall back to the raw one
    path = tmp_path / "step_1200.pth"
    torch.save(_checkpoint(raw, ema), path)
    unet_sd, srno_sd = load_neuropdiff_checkpoint(path, unet=tiny_unet())
    assert set(srno_sd) == {"encoder.head.0.weight", "fc2.bias"}
    torch.testing.assert_close(srno_sd["fc2.bias"], torch.full((3,), 7.0))
    torch.testing.assert_close(srno_sd["encoder.head.0.weight"], torch.ones(4, 3, 3, 3))
    torch.testing.assert_close(unet_sd["downs.1.norm1.bias"], raw["downs.1.res_block.block1.block.0.bias"])
    torch.testing.assert_close(
        unet_sd["downs.1.norm1.weight"], ema["downs.1.res_block.block1.block.0.weight"]
    )
    torch.testing.assert_close(unet_sd["mid.0.attn.qkv.weight"], ema["mid.0.attn.qkv.weight"])

    unet_raw, srno_raw = load_neuropdiff_checkpoint(path, use_ema=False, unet=tiny_unet())
    torch.testing.assert_close(unet_raw["mid.0.attn.qkv.weight"], raw["mid.0.attn.qkv.weight"])
    torch.testing.assert_close(srno_raw["fc2.bias"], torch.zeros(3))
    tiny_unet().load_state_dict(unet_sd)  # loads strictly


def test_neuropdiff_checkpoint_errors():
    shapes = sr3_shapes(**TINY)
    raw = random_sd(shapes)
    with pytest.raises(ValueError, match="expected a NeurOp-Diff checkpoint"):
        split_neuropdiff_checkpoint({"model": raw})
    with pytest.raises(ValueError, match="no EMA weights"):
        split_neuropdiff_checkpoint(_checkpoint(raw, raw)[:4], unet=tiny_unet())
    ckpt = _checkpoint(raw, raw)
    ckpt[0]["decoder.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"decoder\.weight"):
        split_neuropdiff_checkpoint(ckpt, unet=tiny_unet())
