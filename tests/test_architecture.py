"""The house reads from the top: the import graph of src/neurop_diff has no circles and no import back up a
floor, no file over 400 lines, no function over 80, no underscore name imported across modules
(docs/architecture.md draws the floors)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "neurop_diff"
#: Rooms by floor, bottom first: a module may import its own floor's rooms (without a circle) and those below.
FLOORS = [
    {"coords", "files", "compat", "runtime"},
    {"data"},
    {"diffusion", "evaluation"},
    {"comparison"},
    {"models"},
    {"weights"},
    {"lit", "checkpointing", "callbacks", "loggers"},
    {"inference"},
    {"cli", "__main__", "__init__"},
]
FLOOR = {room: i for i, rooms in enumerate(FLOORS) for room in rooms}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, str]]:
    """(imported module, imported name or '') of every neurop_diff import of the module, lazy ones too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            mod = ".".join([*base, node.module] if node.module else base) if node.level else node.module or ""
            found += [(mod, a.name) for a in node.names if mod.startswith("neurop_diff")]
        elif isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.startswith("neurop_diff")]
    return found


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for mod, item in _imports(name, path):
            target = f"{mod}.{item}" if f"{mod}.{item}" in MODULES else mod
            if target in MODULES and target != name:
                edges[name].add(target)
    return edges


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_room_has_a_floor():
    assert {_room(m) for m in MODULES} <= set(FLOOR), {_room(m) for m in MODULES} - set(FLOOR)


def test_no_import_circles():
    edges, seen, stack, cycles = _edges(), {}, [], []

    def visit(node: str) -> None:  # depth-first; a grey node met again closes a circle
        seen[node] = "grey"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if seen.get(nxt) == "grey":
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in seen:
                visit(nxt)
        stack.pop()
        seen[node] = "black"

    for node in sorted(edges):
        if node not in seen:
            visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_no_import_runs_back_up_a_floor():
    up = [
        f"{a} -> {b}" for a, targets in _edges().items() for b in targets if FLOOR[_room(b)] > FLOOR[_room(a)]
    ]
    assert not up, up


def test_no_underscore_name_crosses_a_module():
    crossing = [
        f"{name} imports {mod}.{item}"
        for name, path in MODULES.items()
        for mod, item in _imports(name, path)
        if item.startswith("_") and f"{mod}.{item}" not in MODULES
    ]
    assert not crossing, crossing


def test_files_and_functions_stay_small():
    long_files = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 400}
    long_functions = [
        f"{m}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for m, p in MODULES.items()
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > 80
    ]
    assert not long_files and not long_functions, (long_files, long_functions)


def test_one_module_knows_the_kinds_of_checkpoint():
    """Only `weights.checkpoint` tells an OperatorModule checkpoint from a DiffusionModule one or the authors'
    files and acts on it: everyone else asks its `Checkpoint` (a stage, a model, a check)."""
    from neurop_diff.weights.checkpoint import KINDS

    names = "|".join(KINDS)
    compare = re.compile(
        rf"""\b(?:kind|checkpoint_kind\([^)]*\))\s*(?:[!=]=|in|not in)\s*[("'{{]*(?:{names})\b"""
    )
    outside = [
        f"{m}:{i}: {line.strip()}"
        for m, p in MODULES.items()
        if m != "neurop_diff.weights.checkpoint"
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if compare.search(line) or "checkpoint_kind(" in line
    ]
    assert not outside, outside
    # the pattern finds what it is meant to find
    assert compare.search('if ckpt.kind == "DiffusionModule":') and compare.search("kind in ('srno', 'liif')")
