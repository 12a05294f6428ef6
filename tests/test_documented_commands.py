"""Every `neurop-diff fit/validate/test/predict` command written in the README, the docs, the scripts and the
configs' headers names config files that exist and compose: its `--config` files parse together."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from neurop_diff.cli import main

REPO = Path(__file__).resolve().parents[1]
SOURCES = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *sorted((REPO / "scripts").glob("*.sh")),
    *sorted((REPO / "configs").rglob("*.yaml")),
]
COMMAND = re.compile(r"(?:neurop-diff|\$NEUROP_DIFF\"?) (fit|validate|test|predict)\b")
CONFIG = re.compile(r"--config[ =]\[?(configs/[\w/.-]+\.yaml)")


def documented_commands() -> dict[tuple[str, ...], list[str]]:
    """{config files of one command: every place it is written}; a command runs on over `\\` line ends."""
    found: dict[tuple[str, ...], list[str]] = {}
    for path in SOURCES:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            match = COMMAND.search(line)
            if not match:
                continue
            text, j = line[match.end() :], i
            while text.rstrip().endswith("\\") and j + 1 < len(lines):
                j += 1
                text += " " + lines[j]
            configs = tuple(CONFIG.findall(text))
            if configs:
                found.setdefault(configs, []).append(f"{path.relative_to(REPO)}:{i + 1}")
    return found


COMMANDS = documented_commands()


def test_the_commands_are_found():
    # the README's first steps, a composed operator overlay and a multi-file trainer recipe are among them
    assert ("configs/operator.yaml",) in COMMANDS and ("configs/diffusion.yaml",) in COMMANDS
    assert ("configs/operator.yaml", "configs/model/liif.yaml") in COMMANDS
    assert any(len(c) >= 3 for c in COMMANDS), COMMANDS
    assert any(w.startswith("scripts/demo.sh") for where in COMMANDS.values() for w in where)


@pytest.mark.parametrize("configs", sorted(COMMANDS), ids=lambda c: "+".join(Path(p).stem for p in c))
def test_documented_configs_exist_and_compose(configs, capsys):
    where = ", ".join(COMMANDS[configs])
    missing = [c for c in configs if not (REPO / c).is_file()]
    assert not missing, f"{where}: {missing} do not exist"
    args = [a for c in configs for a in ("--config", str(REPO / c))]
    with pytest.raises(SystemExit) as exc:
        main(["fit", *args, "--print_config"])
    assert exc.value.code == 0, f"{where}: {capsys.readouterr().err[-500:]}"
    assert "class_path: neurop_diff.lit." in capsys.readouterr().out
