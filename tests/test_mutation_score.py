"""Mutation score of the Hypothesis suite itself, in the ``ci`` profile (slow: opt-in).

    pytest -m slow tests/test_mutation_score.py

For each mutant, ``autodist-verify run --impl tests.mutants.NAME`` runs the generated
property tests of the property meant to catch it, in one process (``--workers 0``:
under xdist, ``-x`` interrupts the other worker and pytest exits 2, not 1), stopping
at the first failure; it must fail, write a reproduction, and show the problem in its
output. Unlike ``test_mutants.py`` (one fixed case per mutant, in the default run),
this asks whether the generated cases find the bug by themselves, which takes minutes
per mutant.
"""

import json
import subprocess
import sys

import pytest

from autodist_verify.properties import ROUND_TRIP
from tests.test_mutants import CAUGHT

FIRST_PROPERTY = {}
for _mutant, _prop, _ in CAUGHT:
    FIRST_PROPERTY.setdefault(_mutant, _prop)


def _test_of(prop: str) -> str:
    """The generated property test that checks ``prop`` (the round-trip properties share one)."""
    return "test_round_trip" if prop in ROUND_TRIP else f"test_{prop}"


@pytest.mark.slow
@pytest.mark.parametrize("mutant", sorted(FIRST_PROPERTY))
def test_the_generated_suite_kills_the_mutant(mutant, tmp_path):
    prop = FIRST_PROPERTY[mutant]
    report = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "autodist_verify", "run", "--impl", f"tests.mutants.{mutant}",
         "--report", str(report), "--workers", "0", "-k", _test_of(prop), "-x"],
        capture_output=True, text=True, timeout=3600,
    )
    assert done.returncode == 1, done.stdout[-3000:]
    matrix = json.loads((report / "matrix.json").read_text())
    assert matrix["conforms"] is False
    assert matrix["reproductions"], "a failing property writes its shrunk case"
    assert "PropertyDoesNotHold" in done.stdout, "the failure is the property's, not a crash of the suite"
