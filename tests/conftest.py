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
