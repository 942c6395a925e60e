"""The package's layers (``../shared/DESIGN.md``, "Layers"): no import runs up a layer,
function-local imports included, and no module imports itself back at import time."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "omniflex"
DESIGN = ROOT.parent / "shared" / "DESIGN.md"

#: Top to bottom of the import order: a package may import only those before it. ``common`` (files,
#: folders, configs, schedules, voices) is the bottom layer every package shares; ``assets`` holds
#: shipped weights; DESIGN.md's table names the rest in this order.
LAYERS = (
    "common", "assets", "flex", "media", "data", "tokenizers", "model", "train", "safety",
    "serve", "eval", "cli",
)  # fmt: skip


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(path: Path, *, top_level_only: bool) -> list[tuple[int, str]]:
    """(line, module) for each omniflex module ``path`` imports; ``from pkg import sub`` counts as
    the submodule ``pkg.sub`` when ``sub`` is one. ``if TYPE_CHECKING:`` blocks never run."""
    tree = ast.parse(path.read_text())
    nodes: list[ast.AST] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
            continue
        if top_level_only and isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if top_level_only and isinstance(stmt, ast.ClassDef):
            methods = ast.FunctionDef | ast.AsyncFunctionDef
            nodes += [n for s in stmt.body if not isinstance(s, methods) for n in ast.walk(s)]
            continue
        nodes += list(ast.walk(stmt))
    found: list[tuple[int, str]] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            subs = [f"{node.module}.{a.name}" for a in node.names]
            subs = [s for s in subs if s in MODULES]
            names = subs if len(subs) == len(node.names) else [node.module, *subs]
            found += [(node.lineno, n) for n in names]
    return [(line, m) for line, m in found if m.startswith("omniflex.")]


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert packages <= set(LAYERS), f"not placed in LAYERS: {packages - set(LAYERS)}"


def test_no_import_runs_up_a_layer() -> None:
    up = []
    for name, path in MODULES.items():
        own = _layer(name)
        if own is None:  # omniflex/__init__.py, omniflex/__main__.py: above every layer
            continue
        for line, module in _imports(path, top_level_only=False):
            other = _layer(module)
            if other is not None and LAYERS.index(other) > LAYERS.index(own):
                up.append(f"{path.relative_to(ROOT)}:{line} ({own}) imports {module} ({other})")
    assert not up, "imports that run up a layer:\n" + "\n".join(up)


def test_no_import_cycles_at_import_time() -> None:
    graph = {name: {m for _, m in _imports(path, top_level_only=True) if m in MODULES and m != name}
             for name, path in MODULES.items()}  # fmt: skip
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    cycles = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_design_lists_the_layers_in_this_order() -> None:
    if not DESIGN.exists():
        pytest.skip(f"{DESIGN} is not beside the checkout")
    table = re.findall(r"^\| `omniflex\.(\w+)` \|", DESIGN.read_text(), flags=re.MULTILINE)
    assert table, "DESIGN.md has no layer table"
    assert [p for p in LAYERS if p in table] == table
