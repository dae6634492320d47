"""Architecture contracts: layers and forbidden imports (import-linter, configured in
pyproject.toml), no import cycle anywhere in ``src/rayline`` (function-local imports included),
and no private name imported from another module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "rayline"


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("rayline", cache_dir=None)


def test_import_linter_contracts_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint), "--no-cache"], cwd=SRC.parents[1], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout and "KEPT" in done.stdout


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    """Every import, at the top of a module or inside a function, goes one way only."""
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if imported.startswith("rayline") and graph.chain_exists(imported, importer):
                cycles.append(" -> ".join(graph.find_shortest_chain(imported, importer) or ()) + f" -> {imported}")
    assert cycles == []


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rayline"):
            found += [f"{path.relative_to(SRC)}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    return [f for f in found if not f.endswith(".__version__")]


def test_no_private_name_is_imported_across_modules() -> None:
    assert [hit for path in sorted(SRC.rglob("*.py")) for hit in _private_imports(path)] == []
