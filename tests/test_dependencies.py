"""pyproject's dependency floors are at least the versions whose APIs the code uses, every declared
dependency is used, and the installed versions satisfy the floors (scripts/check_min_versions.sh installs
exactly the floors and runs a test subset)."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "neurop_diff"

# dependency: (oldest version with what the code uses, what it is, where it is used)
NEEDED = {
    "lightning": ("2.6", "WeightAveraging / EMAWeightAveraging callbacks", "checkpointing.py"),
    "jsonargparse": ("4.39", "the version LightningCLI 2.6 requires", "cli/lightning.py"),
    "torchmetrics": ("1.2.1", "LPIPS without the third-party lpips package", "evaluation/lpips.py"),
    "torch": ("2.1", "torch.load(mmap=True)", "weights/checkpoint.py"),
}
# How each declared dependency shows itself in the code: an import (default), or a config that needs it.
USED_AS = {
    "pillow": r"(import|from) PIL\b",
    "tensorboard": r"class_path: .*TensorBoardLogger",
    "jsonargparse": r"\bLightningCLI\b",  # LightningCLI is built on it
}


def floors() -> dict[str, Version]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    out = {}
    for line in project["dependencies"]:
        req = Requirement(line)
        lower = [s.version for s in req.specifier if s.operator == ">="]
        assert len(lower) == 1, f"{line}: one '>=' floor expected"
        out[req.name.lower()] = Version(lower[0])
    return out


def test_floors_cover_the_apis_the_code_uses():
    found = floors()
    for name, (version, what, where) in NEEDED.items():
        assert found[name] >= Version(version), f"{name} >= {version} is needed for {what} ({where})"
    # the APIs named above are really used where stated
    assert "WeightAveraging" in (SRC / "checkpointing.py").read_text()
    assert "mmap=" in (SRC / "weights" / "checkpoint.py").read_text()


def test_every_declared_dependency_is_used():
    code = "\n".join(p.read_text() for p in SRC.rglob("*.py"))
    code += "\n".join(p.read_text() for p in (REPO / "configs").rglob("*.yaml"))
    for name in floors():
        pattern = USED_AS.get(name, rf"(import|from) {name}\b")
        assert re.search(pattern, code), f"{name} is declared but never used"


def test_installed_versions_satisfy_the_floors():
    for name, floor in floors().items():
        assert Version(metadata.version(name)) >= floor, name
