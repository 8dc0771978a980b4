"""The pytest plugin: no side effects on other projects, examples counted once, and a
run that did not finish never reported as conforming.

Each test runs pytest in a fresh process on a small test file of its own (pytester),
with the plugin loaded from its installed entry point as any project would get it.
"""

from __future__ import annotations

import json

import pytest

from autodist_verify.profiles import EXAMPLES
from cluster_sim.determinism import DETERMINISM_ENV

PROBE = """
import json, os, sys
from hypothesis import given, settings, strategies as st

def test_probe(pytestconfig):
    seen = {"plugin": pytestconfig.pluginmanager.has_plugin("autodist_verify"),
            "settings": repr(settings.default),
            "environment": {k: v for k, v in os.environ.items() if k.startswith("TF_")},
            "tensorflow": "tensorflow" in sys.modules}
    with open("seen.json" if seen["plugin"] else "seen-without.json", "w") as file:
        json.dump(seen, file)

@given(st.integers())
def test_a_hypothesis_test_runs(n):
    pass
"""


def test_installing_the_plugin_changes_nothing_for_another_project(pytester, monkeypatch):
    """Another project's run sees the same Hypothesis settings (also the ``ci`` profile
    Hypothesis loads by itself on CI machines), the same environment and no TensorFlow,
    with the plugin as without it."""
    for name in DETERMINISM_ENV:
        monkeypatch.delenv(name, raising=False)
    pytester.makepyfile(test_other_project=PROBE)
    for disable in ([], ["-p", "no:autodist_verify"]):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *disable)
        result.assert_outcomes(passed=2)
        assert "conformance matrix" not in result.stdout.str()
    with_plugin = json.loads((pytester.path / "seen.json").read_text())
    without = json.loads((pytester.path / "seen-without.json").read_text())
    assert with_plugin.pop("plugin") is True and without.pop("plugin") is False
    assert with_plugin == without
    assert with_plugin["tensorflow"] is False


NOTED = """
from hypothesis import given, strategies as st
from autodist_verify.outcome import FAIL, PASS, Outcome

@given(st.integers(0, 1000))
def test_shrinking_is_not_counted(conformance, n):
    conformance.note("fine_tune", "PS", Outcome(FAIL, "too big") if n > 10 else Outcome(PASS))
    assert n <= 10

def test_passes(conformance):
    conformance.note("save_fidelity", "PS", Outcome(PASS))
"""


def _matrix(pytester):
    return json.loads((pytester.path / "report" / "matrix.json").read_text())


def test_the_matrix_counts_examples_not_shrink_attempts(pytester):
    pytester.makepyfile(test_noted=NOTED)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--conformance-report", "report")
    result.assert_outcomes(passed=1, failed=1)
    cell = _matrix(pytester)["properties"]["fine_tune"]["PS"]
    assert cell["failed"] == 1, cell  # Hypothesis tried many failing cases while shrinking
    assert _matrix(pytester)["conforms"] is False
    assert "Verdict: does NOT conform" in result.stdout.str()


NOTED_TOGETHER = """
from hypothesis import given, strategies as st
from autodist_verify.outcome import FAIL, PASS, Outcome

class Drawn:  # stands for a Case: what a reproduction file needs of it
    def to_dict(self):
        return {}

@given(st.integers(0, 1000))
def test_shrinking_is_not_counted(conformance, n):
    case = Drawn()  # the outcomes of one case object are one example
    conformance.note("save_fidelity", "PS", Outcome(PASS), case)
    conformance.note("restore_fidelity", "PS", Outcome(FAIL, "too big") if n > 10 else Outcome(PASS), case)
    conformance.note("fine_tune", "PS", Outcome(PASS), case)
    assert n <= 10
"""


def test_properties_checked_together_count_each_example_once(pytester):
    """A case whose properties ran together (Conformance.check_all) is one example: when
    one of them fails, the last example's passing outcomes count as well, and none of
    the shrinking's."""
    pytester.makepyfile(test_noted=NOTED_TOGETHER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--conformance-report", "report")
    result.assert_outcomes(failed=1)
    cells = {prop: _matrix(pytester)["properties"][prop]["PS"] for prop in ("save_fidelity", "restore_fidelity",
                                                                             "fine_tune")}
    assert cells["restore_fidelity"]["failed"] == 1, cells
    generated = cells["save_fidelity"]["passed"]
    assert generated >= 2 and cells["fine_tune"]["passed"] == generated, cells  # every example's, the last one's too
    assert cells["restore_fidelity"]["passed"] == generated - 1, cells


EXPLICIT_EXAMPLES = """
from hypothesis import Phase, example, given, settings, strategies as st
from autodist_verify.outcome import FAIL, PASS, Outcome

@settings(phases=[Phase.explicit])
@given(st.integers(0, 1000))
@example(50)
@example(1)
def test_explicit(conformance, n):
    conformance.note("saver_api", "-", Outcome(FAIL, "too big") if n > 10 else Outcome(PASS))
    assert n <= 10
"""


def test_a_failing_explicit_example_followed_by_a_passing_one_is_a_failure(pytester):
    """Hypothesis runs every @example, a failing one first here, and shrinks none:
    the matrix must not take the last (passing) one for a shrunk rerun."""
    pytester.makepyfile(test_explicit=EXPLICIT_EXAMPLES)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--conformance-report", "report")
    result.assert_outcomes(failed=1)
    cell = _matrix(pytester)["properties"]["saver_api"]["-"]
    assert (cell["failed"], cell["passed"]) == (1, 1), cell
    assert _matrix(pytester)["conforms"] is False


NOT_APPLICABLE_AMONG_PASSES = """
from autodist_verify.outcome import NOT_APPLICABLE, PASS, Outcome

def test_mixed(conformance):
    conformance.note("fine_tune", "PS", Outcome(PASS))
    conformance.note("fine_tune", "PS", Outcome(NOT_APPLICABLE, "why not"))
    conformance.note("fine_tune", "PS", Outcome(PASS))
"""


def test_not_applicable_examples_of_a_passing_test_are_all_counted(pytester):
    """n/a does not raise, so nothing is shrunk: every outcome is an example."""
    pytester.makepyfile(test_mixed=NOT_APPLICABLE_AMONG_PASSES)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--conformance-report", "report")
    result.assert_outcomes(passed=1)
    cell = _matrix(pytester)["properties"]["fine_tune"]["PS"]
    assert (cell["passed"], cell["not_applicable"], cell["reasons"]) == (2, 1, ["why not"]), cell


INTERRUPTED = """
from autodist_verify.outcome import PASS, Outcome

def test_first(conformance):
    conformance.note("save_fidelity", "PS", Outcome(PASS))

def test_interrupted(conformance):
    raise KeyboardInterrupt

def test_never_reached(conformance):
    conformance.note("fine_tune", "PS", Outcome(PASS))
"""


def test_an_interrupted_run_is_incomplete_not_conforming(pytester):
    pytester.makepyfile(test_interrupted=INTERRUPTED)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--conformance-report", "report")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    matrix = _matrix(pytester)
    assert matrix["conforms"] is False and matrix["verdict"].startswith("incomplete")
    assert "Verdict: incomplete (the run was interrupted)" in result.stdout.str()


HARNESS_ERROR = """
from autodist_verify.outcome import ERROR, PASS, Outcome

def test_ok(conformance):
    conformance.note("save_fidelity", "PS", Outcome(PASS))

def test_cluster_did_not_start(conformance):
    conformance.note("save_fidelity", "AllReduce", Outcome(ERROR, "ClusterError: node 1 did not start"))
"""


def test_a_harness_error_is_not_non_conformance(pytester):
    pytester.makepyfile(test_errors=HARNESS_ERROR)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--conformance-report", "report")
    matrix = _matrix(pytester)
    assert matrix["properties"]["save_fidelity"]["AllReduce"]["verdict"] == "error"
    assert matrix["conforms"] is False and "does NOT conform" not in matrix["verdict"]
    assert "harness error" in matrix["verdict"]
    assert "ClusterError: node 1 did not start" in result.stdout.str()


SHARE_OF_WORKER_A = """
from autodist_verify.outcome import PASS, Outcome

def test_a(conformance):
    conformance.note("save_fidelity", "PS", Outcome(PASS))
"""

SHARE_OF_WORKER_B = """
from autodist_verify.outcome import NOT_APPLICABLE, PASS, Outcome

def test_b(conformance):
    conformance.note("save_fidelity", "PS", Outcome(PASS))
    conformance.note("fine_tune", "AllReduce", Outcome(NOT_APPLICABLE, "why not"))
"""


def test_under_xdist_the_controller_prints_the_workers_merged_matrix(pytester):
    """Two files on two workers (--dist loadfile): the matrix holds both files' outcomes.
    Without the merge the controller, which runs no test, would write no matrix at all."""
    pytester.makepyfile(test_worker_a=SHARE_OF_WORKER_A, test_worker_b=SHARE_OF_WORKER_B)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--dist", "loadfile",
                                           "--conformance-report", "report")
    result.assert_outcomes(passed=2)
    matrix = _matrix(pytester)
    assert matrix["properties"]["save_fidelity"]["PS"]["passed"] == 2, matrix
    assert matrix["properties"]["fine_tune"]["AllReduce"]["reasons"] == ["why not"], matrix
    assert matrix["conforms"] is True, matrix
    assert "Verdict: conforms" in result.stdout.str()


SUITE_CONFTEST = """
from autodist_verify.profiles import load_suite_profile

def pytest_configure(config):
    load_suite_profile(config)
"""

PROJECT_CONFTEST = """
from autodist_verify.profiles import load_project_profile

def pytest_configure(config):
    load_project_profile(config, "quick")
"""

PROFILE_PROBE = """
from hypothesis import settings

def test_probe():
    with open("examples.txt", "w") as file:
        file.write(str(settings.default.max_examples))
"""


@pytest.mark.parametrize("root_chooses, arguments, examples", [
    (False, [], EXAMPLES["ci"]),  # the suite alone: ci
    (True, [], EXAMPLES["quick"]),  # the repository's root conftest chooses quick for the project's run
    (True, ["suite"], EXAMPLES["quick"]),  # ... also when the suite's conftest is configured first
    (True, ["--hypothesis-profile", "autodist-verify-ci"], EXAMPLES["ci"]),  # autodist-verify run's choice wins
])
def test_the_profile_is_the_runs_choice_then_the_projects_then_ci(pytester, root_chooses, arguments, examples):
    if root_chooses:
        pytester.makeconftest(PROJECT_CONFTEST)
    suite = pytester.mkpydir("suite")
    (suite / "conftest.py").write_text(SUITE_CONFTEST)
    (suite / "test_probe.py").write_text(PROFILE_PROBE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *arguments)
    result.assert_outcomes(passed=1)
    assert int((pytester.path / "examples.txt").read_text()) == examples
