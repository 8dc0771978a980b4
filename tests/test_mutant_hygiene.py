"""Mutants reach the reference implementation through public names only.

A mutant that reads or overrides a private name (``Saver._bind``, ``AutoDist._target``)
tests that private code: a refactor of ``saver_impl`` would silently change what it
plants. So no module of ``tests/mutants`` may access an attribute, define a method, or
import a name that starts with one underscore (dunder names such as ``__init__`` are
public protocol). No TensorFlow needed: the sources are parsed, not imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MUTANTS = Path(__file__).resolve().parent / "mutants"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_names(source: str, filename: str = "<string>") -> list[str]:
    """``line: name`` of every private attribute, import or method name in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        names: list[str] = []
        if isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names] + (node.module or "").split(".")
        elif isinstance(node, ast.Import):
            names = [part for alias in node.names for part in alias.name.split(".")]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names = [node.name]
        found += [(node.lineno, name) for name in names if _private(name)]
    return [f"{line}: {name}" for line, name in sorted(found)]


@pytest.mark.parametrize("path", sorted(MUTANTS.glob("*.py")), ids=lambda p: p.name)
def test_the_mutant_uses_public_names_only(path):
    assert not private_names(path.read_text(), str(path)), f"{path.name} reaches private names"


def test_the_check_finds_private_names():
    source = (
        "import saver_impl\n"
        "from tests.mutants._faulty_storage import FaultyStorageSaver\n"
        "from saver_impl.checkpoint.saver import _variable_name\n"
        "class Saver(saver_impl.Saver):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "    def _bind(self, sess):\n"
        "        return sess.dist._storage\n"
    )
    assert private_names(source) == [
        "2: _faulty_storage", "3: _variable_name", "7: _bind", "8: _storage",
    ]
