"""Imports point one way: cluster_sim <- saver_impl; the suite never imports saver_impl.

* ``cluster_sim`` imports none of the project's other packages;
* ``saver_impl`` may use ``cluster_sim``, and nothing of the suite or the tests;
* ``autodist_verify`` and ``property_tests`` reach an implementation only through
  ``--impl`` (``autodist_verify.implementation``) and import nothing from ``saver_impl``.

Every ``import`` and ``from ... import`` statement counts, also inside functions. No
TensorFlow needed: the sources are parsed, not imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("cluster_sim", "saver_impl", "autodist_verify", "property_tests", "tests")
FORBIDDEN = {
    "cluster_sim": {"saver_impl", "autodist_verify", "property_tests", "tests"},
    "saver_impl": {"autodist_verify", "property_tests", "tests"},
    "autodist_verify": {"saver_impl", "tests"},  # its CLI runs property_tests
    "property_tests": {"saver_impl", "tests"},
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level package, line) of every absolute import in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_against_the_direction(package):
    violations = [
        f"{path.relative_to(REPO)}:{line} imports {imported}"
        for path in sorted((REPO / package).rglob("*.py"))
        for imported, line in sorted(imported_packages(path))
        if imported in FORBIDDEN[package]
    ]
    assert not violations, "\n".join(violations)


def test_the_check_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "module.py"
    source.write_text("def f():\n    from saver_impl.strategy import PS\n    import cluster_sim.spec\n")
    assert imported_packages(source) == {("saver_impl", 2), ("cluster_sim", 3)}
