"""The SR3-style UNet: configuration, embedding, attention, input checks, memory format, checkpointing."""

from __future__ import annotations

import math

import pytest
import torch

from neurop_diff.diffusion.sampling import get_sigmas
from neurop_diff.diffusion.schedule import make_schedule, sigma_to_gamma
from neurop_diff.models.unet import (
    LOG_SIGMA_SCALE,
    NoiseLevelEncoding,
    ResBlock,
    SelfAttention,
    UNet,
    c_noise,
)


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


def test_log_sigma_encoding_formula():
    # EDM's c_noise = ln(sigma) / 4 (Karras et al. 2022, Table 1) of the VE sigma, scaled into the sinusoid's range.
    sigma = torch.tensor([1e-3, 0.16, 2.0, 150.0], dtype=torch.float64)
    gamma = sigma_to_gamma(sigma)
    torch.testing.assert_close(c_noise(gamma), sigma.log() / 4, rtol=0, atol=1e-10)
    enc = NoiseLevelEncoding(64, "log_sigma")(gamma)
    assert enc.shape == (4, 64) and enc.dtype == torch.float64
    for b, s in enumerate(sigma.tolist()):
        c = LOG_SIGMA_SCALE * math.log(s) / 4
        for i in (0, 5, 31):
            w = 10000 ** (-i / 32)
            assert float(enc[b, i]) == pytest.approx(math.sin(c * w), abs=1e-8)
            assert float(enc[b, 32 + i]) == pytest.approx(math.cos(c * w), abs=1e-8)
    with pytest.raises(ValueError, match="noise_embedding must be one of"):
        NoiseLevelEncoding(64, "timestep")  # type: ignore[arg-type]


def _low_noise_pairs() -> dict[str, torch.Tensor]:
    """Adjacent VE levels at low noise: the last three of 20-step trailing and leading grids on SR3's schedule
    (0.50, 0.32, 0.16 and 0.33, 0.16, 0.001), and sigma 0.002 against 0.001."""
    sched = make_schedule()
    return {
        "trailing": get_sigmas(sched, 20, "trailing")[-4:-1],
        "leading": get_sigmas(sched, 20, "leading")[-4:-1],
        "pair": torch.tensor([0.002, 0.001], dtype=torch.float64),
    }


def _adjacent_distances(unet: UNet, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L2 distances between the embeddings of neighbouring levels: the encoding, and the MLP's output."""
    enc = unet.noise_encoding(sigma_to_gamma(sigma))
    with torch.no_grad():
        emb = unet.noise_mlp(enc.float())
    return (enc[1:] - enc[:-1]).norm(dim=1), (emb[1:] - emb[:-1]).norm(dim=1)


def test_log_sigma_tells_the_low_noise_levels_apart():
    """The SR3 sinusoid of gamma moves by at most |d gamma| * |w| = |d gamma| * 1.51 between levels (gamma is
    0.89 .. 1 there): 0.087 for the trailing grid's 0.50 -> 0.32 and 2e-6 for sigma 0.002 -> 0.001, and the MLP
    at init shrinks that to < 0.02. ln(sigma) moves by 0.44 .. 2.1 between the same levels, i.e. 250 / 4 times
    that = 27 .. 130 in the sinusoid's argument, which decorrelates the 8-10 highest of its 32 frequencies:
    measured encoding distances 5.0 .. 6.2 (of at most 2 sqrt(32) = 11.3) and 0.79 .. 1.24 after the MLP at
    init (seeds 0-4; the embedding's own norm is ~1), 50x the SR3 ones."""
    torch.manual_seed(0)
    cfg = dict(base_channels=64, channel_mults=(1, 2), attn_resolutions=(), image_size=16, norm_groups=16)
    sr3, log_sigma = UNet(**cfg, noise_embedding="sr3"), UNet(**cfg, noise_embedding="log_sigma")
    for name, sigma in _low_noise_pairs().items():
        enc_sr3, emb_sr3 = _adjacent_distances(sr3, sigma)
        enc_log, emb_log = _adjacent_distances(log_sigma, sigma)
        assert float(enc_sr3.max()) < 0.1 and float(emb_sr3.max()) < 0.05, (name, enc_sr3, emb_sr3)
        assert float(enc_log.min()) > 4.0 and float(emb_log.min()) > 0.5, (name, enc_log, emb_log)
    enc_sr3, _ = _adjacent_distances(sr3, _low_noise_pairs()["pair"])
    assert float(enc_sr3.max()) < 1e-5  # sigma 0.001 and 0.002 are one level to SR3's embedding


def test_log_sigma_embedding_ignores_bf16_autocast():
    """Computed outside autocast: under bf16 the levels near gamma = 1 would merge (bf16 has 8 mantissa bits)."""
    torch.manual_seed(0)
    unet = UNet(base_channels=16, channel_mults=(1, 2), attn_resolutions=(), image_size=16, norm_groups=4,
                noise_embedding="log_sigma").eval()  # fmt: skip
    gamma = sigma_to_gamma(torch.cat(list(_low_noise_pairs().values())))
    embs = []
    unet.noise_mlp.register_forward_hook(lambda _m, _i, out: embs.append(out))
    x = torch.randn(len(gamma), 6, 16, 16)
    with torch.no_grad():
        plain_enc = unet.noise_encoding(gamma)
        unet(x, gamma)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto_enc = unet.noise_encoding(gamma)
            unet(x, gamma)
    assert torch.equal(auto_enc, plain_enc) and auto_enc.dtype == torch.float64
    plain, auto = embs
    assert plain.dtype == auto.dtype == torch.float32 and torch.equal(auto, plain)
    d = (auto[1:] - auto[:-1]).norm(dim=1)
    assert float(d[[0, 1, 3, 4, 6]].min()) > 0.3  # the adjacent pairs stay apart under autocast


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
