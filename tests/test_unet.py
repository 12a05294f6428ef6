"""The SR3-style UNet: configuration, embedding, attention, input checks, memory format, checkpointing."""

from __future__ import annotations

import math

import pytest
import torch

from neurop_diff.models.unet import NoiseLevelEncoding, ResBlock, SelfAttention, UNet


def tiny(**kw) -> UNet:
    cfg = dict(base_channels=8, channel_mults=(1, 2, 2), attn_resolutions=(8,), image_size=16, norm_groups=4)
    return UNet(**(cfg | kw))


def test_default_configuration_is_the_authors():
    with torch.device("meta"):
        model = UNet()
    assert sum(p.numel() for p in model.parameters()) == 47_478_595  # "about 47.5M" (method.md sec. 4)
    attn = [name for name, m in model.named_modules() if isinstance(m, SelfAttention)]
    # 16x16 is the 5th level of 256 -> 8: one block down, two up; plus the middle.
    assert attn == ["downs.9.attn", "mid.0.attn", "ups.3.attn", "ups.4.attn"]
    assert model.downs[0].in_channels == 6 and model.out_conv.out_channels == 3
    assert model.factor == 32
    blocks = [m for m in model.modules() if isinstance(m, ResBlock)]
    assert len(blocks) == 6 + 2 + 12 and all(b.dropout.p == 0.2 for b in blocks)
    assert all(m.num_groups == 16 for m in model.modules() if isinstance(m, torch.nn.GroupNorm))


def test_noise_level_encoding_formula():
    gamma = torch.tensor([0.0, 0.37, 1.0], dtype=torch.float64)
    enc = NoiseLevelEncoding(64)(gamma)
    assert enc.shape == (3, 64)
    for b, g in enumerate(gamma.tolist()):
        for i in (0, 5, 31):
            w = 10000 ** (-i / 32)
            assert float(enc[b, i]) == pytest.approx(math.sin(g * w), abs=1e-12)
            assert float(enc[b, 32 + i]) == pytest.approx(math.cos(g * w), abs=1e-12)


def test_self_attention_matches_the_naive_formula():
    torch.manual_seed(0)
    attn = SelfAttention(8, groups=4)
    x = torch.randn(2, 8, 4, 5)
    h = attn.norm(x).flatten(2)  # (B, C, N)
    w = attn.qkv.weight[:, :, 0, 0]
    q, k, v = (w[i * 8 : (i + 1) * 8] @ h for i in range(3))
    a = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(8), dim=-1)  # (B, N, N)
    y = (v @ a.transpose(1, 2)).view(2, 8, 4, 5)
    expected = x + attn.out(y)
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_forward_shapes_and_conditioning():
    model = tiny().eval()
    assert [i for i, m in enumerate(model.downs) if isinstance(m, ResBlock) and m.attn is not None] == [3]
    x = torch.randn(2, 6, 16, 24)
    with torch.no_grad():
        out = model(x, torch.tensor([0.9, 0.9]))
        other = model(x, torch.tensor([0.9, 0.1]))
    assert out.shape == (2, 3, 16, 24)
    torch.testing.assert_close(out[0], other[0])  # items are independent
    assert (out[1] - other[1]).abs().max() > 1e-4  # gamma matters


def test_input_checks():
    model = tiny()
    with pytest.raises(ValueError, match=r"divisible by 4"):
        model(torch.randn(1, 6, 16, 18), torch.ones(1))
    with pytest.raises(ValueError, match=r"\(B, 6, H, W\)"):
        model(torch.randn(1, 3, 16, 16), torch.ones(1))
    with pytest.raises(ValueError, match=r"gamma of shape \(2,\)"):
        model(torch.randn(2, 6, 16, 16), torch.ones(2, 1))
    with pytest.raises(ValueError, match="norm_groups=32"):
        UNet(base_channels=48, norm_groups=32)


def test_channels_last_gives_the_same_output():
    torch.manual_seed(1)
    ref = tiny().eval()
    fast = tiny(channels_last=True).eval()
    fast.load_state_dict(ref.state_dict())
    assert fast.downs[1].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x, g = torch.randn(2, 6, 16, 16), torch.rand(2)
    with torch.no_grad():
        torch.testing.assert_close(fast(x, g), ref(x, g), atol=1e-5, rtol=1e-4)


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(2)
    ref = tiny(dropout=0.0).train()
    ckpt = tiny(dropout=0.0, checkpoint=True).train()
    ckpt.load_state_dict(ref.state_dict())
    x, g = torch.randn(2, 6, 16, 16), torch.rand(2)
    ref(x, g).square().mean().backward()
    ckpt(x, g).square().mean().backward()
    for (name, a), b in zip(ref.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-6, rtol=1e-4, msg=name)
