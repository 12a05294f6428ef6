"""Shared fixtures: the real remote-sensing images in ../shared/data (override with NEUROP_DIFF_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA_ENV = "NEUROP_DIFF_DATA"


def shared_data_dir() -> Path:
    return Path(os.environ.get(DATA_ENV, REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared real images; tests skip (never in CI: .ci/run checks it) when it is absent."""
    root = shared_data_dir()
    if not (root / "rsscn7").is_dir():
        pytest.skip(f"shared test images not found at {root} (set {DATA_ENV} to the folder holding rsscn7/)")
    return root


@pytest.fixture(autouse=True)
def _small_torch(monkeypatch):
    # Tests run on 2 cores; keep each process to its share and make runs reproducible.
    torch.manual_seed(0)
    monkeypatch.setenv("WANDB_MODE", os.environ.get("WANDB_MODE", "offline"))
    yield


def make_alexnet_file(torch_home: Path) -> dict:
    """A locally made AlexNet backbone under torchvision's hub file name in `torch_home`, for LPIPS's real
    loading path; returns the saved state dict. The classifier (unused by LPIPS, 58M parameters) is stored as
    an expanded zero so the file stays ~10 MB."""
    import torchvision

    with torch.device("meta"):  # only the shapes; building the real 61M-parameter net is slow
        shapes = {k: v.shape for k, v in torchvision.models.alexnet(weights=None).state_dict().items()}
    g = torch.Generator().manual_seed(3)
    state = {
        k: 0.05 * torch.randn(shape, generator=g)
        if k.startswith("features")
        else torch.zeros(1).expand(shape)
        for k, shape in shapes.items()
    }
    path = torch_home / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state
