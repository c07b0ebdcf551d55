"""The runtime packages never import upwards: what trains or scores them (``editagent.train``, ``editagent.eval``)
imports them, not the other way round, and the store knows nothing of models."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "editagent"
RUNTIME = ("scope", "editors", "memory")


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function, absolute or relative."""
    found: set[str] = set()
    package = ".".join(("editagent", *path.relative_to(PACKAGE).parent.parts))
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("runtime", RUNTIME)
def test_runtime_packages_import_neither_training_nor_scoring(runtime: str) -> None:
    files = sorted((PACKAGE / runtime).rglob("*.py"))
    assert files
    upward = {f"{path.relative_to(PACKAGE)}: {module}" for path in files for module in imported_modules(path)
              if module.startswith(("editagent.train", "editagent.eval"))}
    assert not upward


def test_the_store_imports_nothing_of_models() -> None:
    modules = {module for path in (PACKAGE / "memory").rglob("*.py") for module in imported_modules(path)}
    assert "editagent.paths" in modules  # the store's cache folder comes from the leaf module
    assert not {module for module in modules if module.startswith("editagent.models")}
    assert "editagent.models" in imported_modules(PACKAGE / "scope" / "trained.py")  # the scan sees such imports
