"""What a source file imports, for the tests that hold the package's layers apart."""

from __future__ import annotations

import ast
from pathlib import Path


def imported_modules(source: str | Path) -> list[str]:
    """Every module the Python file ``source`` imports (``import a.b`` and ``from a.b import c``
    both give ``a.b``), function-local imports included."""
    names: list[str] = []
    for node in ast.walk(ast.parse(Path(source).read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names.append(node.module or "")
    return names
