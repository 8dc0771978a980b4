"""Imports point one way: cluster_sim <- saver_impl; the suite never imports saver_impl.

* ``cluster_sim`` imports none of the project's other packages;
* ``saver_impl`` may use ``cluster_sim`` and implements the suite's published contract
  (``autodist_verify.strategy_format``, ``autodist_verify.interface``): it imports
  nothing else of the suite, nor the tests;
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
CONTRACT = {"autodist_verify.strategy_format", "autodist_verify.interface"}
FORBIDDEN = {
    "cluster_sim": {"saver_impl", "autodist_verify", "property_tests", "tests"},
    "saver_impl": {"autodist_verify", "property_tests", "tests"},
    "autodist_verify": {"saver_impl", "tests"},  # its CLI runs property_tests
    "property_tests": {"saver_impl", "tests"},
}


def imported_modules(path: Path) -> set[tuple[str, int]]:
    """(module, line) of every absolute import in the file; ``from P import m`` counts
    as ``P.m`` when ``P`` is a package of the project, since ``m`` may be a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {(alias.name, node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if "." not in node.module and (REPO / node.module).is_dir():
                found |= {(f"{node.module}.{alias.name}", node.lineno) for alias in node.names}
            else:
                found.add((node.module, node.lineno))
    return found


def _forbidden(package: str, module: str) -> bool:
    if package == "saver_impl" and module in CONTRACT:
        return False
    return module.split(".")[0] in FORBIDDEN[package]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_against_the_direction(package):
    violations = [
        f"{path.relative_to(REPO)}:{line} imports {imported}"
        for path in sorted((REPO / package).rglob("*.py"))
        for imported, line in sorted(imported_modules(path))
        if _forbidden(package, imported)
    ]
    assert not violations, "\n".join(violations)


def test_the_check_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "module.py"
    source.write_text("def f():\n    from saver_impl.strategy import PS\n    import cluster_sim.spec\n")
    assert imported_modules(source) == {("saver_impl.strategy", 2), ("cluster_sim.spec", 3)}
    assert _forbidden("autodist_verify", "saver_impl.strategy")


def test_the_contract_is_the_only_part_of_the_suite_saver_impl_may_import():
    assert not _forbidden("saver_impl", "autodist_verify.strategy_format")
    assert _forbidden("saver_impl", "autodist_verify.harness")
    assert _forbidden("saver_impl", "autodist_verify")
