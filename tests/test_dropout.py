"""The UNet's dropout: torch's statistics and seeding with a cheaper CPU mask (models/dropout.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from neurop_diff.models.dropout import Dropout, cpu_dropout
from neurop_diff.models.unet import UNet

DROP = 13107 / 65536  # round(0.2 * 2**16) / 2**16
SCALE = 65536 / (65536 - 13107)


def test_drop_rate_scale_and_mean():
    torch.manual_seed(0)
    x = torch.ones(2, 16, 128, 128)
    out = cpu_dropout(x, 0.2)
    n = x.numel()
    dropped = (out == 0).double().mean().item()
    assert abs(dropped - DROP) < 5 * (DROP * (1 - DROP) / n) ** 0.5  # 5 sigma
    values = out.unique()
    assert len(values) == 2 and values[0] == 0 and values[1].item() == pytest.approx(SCALE)
    assert abs(out.double().mean().item() - 1) < 5 * (SCALE * (1 - DROP) * DROP / n) ** 0.5 * SCALE
    # the four 16-bit lanes of one 64-bit draw are independent: neighbours' masks are uncorrelated
    keep = (out != 0).double().view(-1, 4)
    for a, b in ((0, 1), (1, 2), (2, 3), (0, 3)):
        assert abs(torch.corrcoef(torch.stack([keep[:, a], keep[:, b]]))[0, 1].item()) < 0.01


def test_layout_gradient_and_seeding():
    x = torch.randn(1, 8, 32, 32).to(memory_format=torch.channels_last).requires_grad_()
    torch.manual_seed(3)
    out = cpu_dropout(x, 0.2)
    assert out.is_contiguous(memory_format=torch.channels_last)
    kept = out != 0
    torch.testing.assert_close(out[kept], x[kept] * SCALE)
    out.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() * SCALE)  # backward uses the same mask
    torch.manual_seed(3)
    assert torch.equal(cpu_dropout(x, 0.2), out)
    torch.manual_seed(4)
    assert not torch.equal(cpu_dropout(x, 0.2), out)


def test_module_falls_back_to_torch_where_it_should():
    x = torch.randn(4, 4, 8, 8)
    layer = Dropout(0.2)
    assert torch.equal(layer.eval()(x), x)  # evaluation: identity
    layer.train()
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
    torch.manual_seed(0)
    inplace = Dropout(0.2, inplace=True).train()(x.clone())
    torch.manual_seed(0)
    assert torch.equal(inplace, F.dropout(x.clone(), 0.2, True, inplace=True))
    assert isinstance(layer, torch.nn.Dropout) and layer.state_dict() == {}


def test_activation_checkpointing_recomputes_the_same_mask():
    """Recomputed blocks must draw the same dropout mask as the forward did (torch restores the RNG)."""
    kw = dict(base_channels=16, channel_mults=(1, 2), attn_resolutions=(), image_size=16, norm_groups=8)
    x, gamma = torch.randn(2, 6, 16, 16), torch.rand(2)
    grads = []
    for checkpoint in (False, True):
        torch.manual_seed(0)
        net = UNet(dropout=0.5, checkpoint=checkpoint, **kw).train()
        torch.manual_seed(1)
        net(x, gamma).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)
    torch.manual_seed(0)
    net = UNet(dropout=0.5, **kw).train()
    torch.manual_seed(2)  # another mask: other gradients (dropout is active)
    net(x, gamma).square().mean().backward()
    assert not torch.allclose(torch.cat([p.grad.flatten() for p in net.parameters()]), grads[0])
