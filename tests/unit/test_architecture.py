"""The layering that docs/ARCHITECTURE.md describes, checked on the source.

Each package of src/bertforge may import only from the layers below it (and from itself).
Imports inside functions count too: a lazy import is still a dependency. The table here and
the one in docs/ARCHITECTURE.md are the same; change both together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src" / "bertforge"

BASE = {"errors", "fileio", "progress", "version", "config"}
"""Leaf modules every layer may use (config: typed dataclasses and YAML loading)."""

ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "version": set(),
    "fileio": {"errors"},
    "progress": set(),
    "config": {"errors"},
    "tokenizer": BASE,
    "convert": BASE,
    "model": BASE | {"tokenizer", "convert"},
    "data": BASE | {"tokenizer"},
    "train": BASE | {"tokenizer", "convert", "model", "data"},
    "tasks": BASE | {"tokenizer", "convert", "model", "data", "train"},
    "export": BASE | {"tokenizer", "convert", "model", "tasks"},
    "explain": BASE | {"tokenizer", "model", "tasks"},
    "compress": BASE | {"tokenizer", "convert", "model", "data", "train", "tasks", "export"},
    "serve": BASE | {"tokenizer", "model", "tasks", "explain"},
    "cli": BASE | {"tokenizer", "convert", "model", "data", "train", "tasks", "export", "explain", "compress",
                   "serve"},
}
"""Package -> the packages it may import. `bertforge` itself (the package root, which imports
the model) is allowed only in cli."""


def _unit(module: str) -> str:
    parts = module.split(".")
    return "bertforge" if len(parts) == 1 else parts[1]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bertforge":
            found.add(_unit(node.module))
        elif isinstance(node, ast.Import):
            found.update(_unit(alias.name) for alias in node.names if alias.name.split(".")[0] == "bertforge")
    return found


def _package_of(path: Path) -> str | None:
    relative = path.relative_to(SOURCE).with_suffix("")
    if relative.parts in (("__init__",), ("__main__",)):
        return None  # the package root and `python -m bertforge` sit above every layer
    return relative.parts[0]


def test_every_package_is_in_the_table():
    packages = {_package_of(path) for path in SOURCE.rglob("*.py")} - {None}
    assert packages == set(ALLOWED), "add the new package to ALLOWED and to docs/ARCHITECTURE.md"


@pytest.mark.parametrize("path", sorted(SOURCE.rglob("*.py")), ids=lambda p: str(p.relative_to(SOURCE)))
def test_imports_run_down_the_layers_only(path: Path):
    package = _package_of(path)
    if package is None:
        return
    allowed = ALLOWED[package] | {package} | ({"bertforge"} if package == "cli" else set())
    wrong = _imports(path) - allowed
    assert not wrong, f"{path.relative_to(SOURCE)} imports {sorted(wrong)}, above its layer ({package})"


def test_data_preparation_does_not_import_the_model():
    """Data workers know token ids, not the model: preparing data must not load torch's model code."""
    for path in (SOURCE / "data").rglob("*.py"):
        assert "model" not in _imports(path), path
