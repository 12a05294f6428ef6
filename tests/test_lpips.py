"""LPIPS loading through a temporary torch hub cache: missing backbone -> one warning and None; local file used."""

from __future__ import annotations

import hashlib
import io
import urllib.request
import warnings

import pytest
import torch

from conftest import make_alexnet_file
from neurop_diff.evaluation import lpips as lp


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Empty TORCH_HOME, fresh warning registry, and any network use fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(lp, "_WARNED", set())

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:1]}")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch_home"


def test_backbone_path_follows_torch_home(offline):
    assert lp.backbone_path("alex") == offline / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert lp.backbone_path("vgg").name == "vgg16-397923af.pth"
    with pytest.raises(ValueError, match="squeeze"):
        lp.backbone_path("squeeze")


def test_missing_backbone_warns_once_and_returns_none(offline, monkeypatch):
    calls = []

    def failing_download(url, dest, timeout_s):
        calls.append((url, dest, timeout_s))
        raise OSError("network unreachable")

    monkeypatch.setattr(lp, "_download", failing_download)
    with pytest.warns(UserWarning) as record:
        assert lp.load_lpips("alex") is None
    assert len(record) == 1
    msg = str(record[0].message)
    expected = offline / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert str(expected) in msg and "TORCH_HOME" in msg and "network unreachable" in msg
    assert calls == [(lp.backbone_url("alex"), expected, 10.0)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise
        assert lp.load_lpips("alex") is None
        assert lp.load_lpips("alex", download=False) is None
    assert len(calls) == 2  # the second call tried again (quietly); download=False did not


def test_download_false_never_touches_network(offline, monkeypatch):
    monkeypatch.setattr(lp, "_download", lambda *a: pytest.fail("download attempted"))
    with pytest.warns(UserWarning, match="download disabled"):
        assert lp.load_lpips("vgg", download=False) is None


def test_download_uses_timeout_checks_hash_and_is_atomic(tmp_path, monkeypatch):
    payload = b"weights" * 100
    prefix = hashlib.sha256(payload).hexdigest()[:8]
    seen = []

    def fake_urlopen(url, timeout=None):
        seen.append(timeout)
        return io.BytesIO(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    good = tmp_path / "hub" / "checkpoints" / f"net-{prefix}.pth"
    lp._download("http://example.invalid/x", good, timeout_s=2.5)
    assert good.read_bytes() == payload and seen == [2.5]
    bad = tmp_path / "hub" / "checkpoints" / "net-00000000.pth"
    with pytest.raises(OSError, match="checksum"):
        lp._download("http://example.invalid/x", bad, timeout_s=2.5)

    def timing_out(url, timeout=None):
        raise TimeoutError("timed out")

    monkeypatch.setattr(urllib.request, "urlopen", timing_out)
    with pytest.raises(OSError, match="timed out"):
        lp._download("http://example.invalid/x", bad, timeout_s=0.1)
    assert sorted(p.name for p in good.parent.iterdir()) == [good.name]  # no partial files left


def test_local_backbone_is_loaded_and_used(offline):
    state = make_alexnet_file(offline)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model = lp.load_lpips("alex")
    assert isinstance(model, lp.LPIPS)
    backbone = model.net.net
    assert torch.equal(backbone.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(backbone.slice5[0].weight, state["features.10.weight"])
    assert not any(p.requires_grad for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 48, 48, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    same, diff = model(x, x), model(x, y)
    assert same.shape == (2,) and torch.allclose(same, torch.zeros(2), atol=1e-6)
    assert (diff > 1e-4).all()


def test_corrupt_backbone_warns_and_returns_none(offline):
    path = offline / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="loading failed"):
        assert lp.load_lpips("alex") is None
