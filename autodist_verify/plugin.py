"""The pytest plugin of the conformance suite (entry point ``pytest11: autodist_verify``).

Installing the package changes nothing for a project that does not run the suite:
importing this plugin registers the Hypothesis profiles ``autodist-verify-ci`` and
``autodist-verify-thorough`` without loading either (Hypothesis's own ``ci`` profile is
left alone), sets no environment variable and imports no TensorFlow. The suite's
own entry points do that: ``property_tests/conftest.py`` (when the suite's tests are
collected) and ``autodist-verify run``.

Options:
  --impl MODULE               the implementation under test (default: saver_impl)
  --conformance-report DIR    where the matrix (JSON, Markdown) and reproductions go

Fixtures (session scope): ``conformance_impl`` (the loaded implementation),
``cluster_pool`` (running simulated clusters, shared by all examples), ``witness``
(the plain-TensorFlow witness process, which never imports the implementation) and
``conformance`` (runs a property on a case through :mod:`autodist_verify.runner`).
The implementation is loaded once, when collection ends, if a selected test needs it: a
module that cannot be imported (or lacks the interface) ends the run there, with one
message and exit code 2, before any test runs.

The matrix counts examples: the cases a test ran until its first failure, plus the
final (shrunk) failing case — not the cases Hypothesis tries while shrinking. A test
that fails writes that final case to ``DIR/reproductions/PROPERTY-HASH.json``
(``autodist-verify replay FILE`` re-runs it). At the end the terminal summary shows
the matrix, also written as ``matrix.json`` and ``matrix.md``; a run that was
interrupted or did not run every conformance test it collected is "incomplete",
never "conforms". Under pytest-xdist (``-n``) the workers' outcomes are merged into one
matrix, printed and written by the controller.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from autodist_verify.case import Case
from autodist_verify.implementation import DEFAULT_IMPLEMENTATION
from autodist_verify.matrix import Matrix
from autodist_verify.outcome import ERROR, FAIL, Outcome
from autodist_verify.profiles import register_profiles

if TYPE_CHECKING:
    from autodist_verify.implementation import Implementation

register_profiles()  # registered only: loading one is the suite's choice, not every project's

_STATE = pytest.StashKey["_RunState"]()


@dataclass
class _RunState:
    """What the plugin tracks over one pytest run."""

    matrix: Matrix = field(default_factory=Matrix)
    collected: set[str] = field(default_factory=set)  # conformance tests collected
    finished: set[str] = field(default_factory=set)  # ... and those that ran to the end
    current: str | None = None  # the test running now
    outcomes: dict[str, list[tuple[str, str, Outcome, Any]]] = field(default_factory=dict)
    implementation: Implementation | None = None  # the --impl module, loaded once


class PropertyDoesNotHold(AssertionError):
    """Raised into Hypothesis when a property fails, so that it shrinks the case."""


class HarnessFailed(RuntimeError):
    """Raised when the harness, not the implementation, failed on a case."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("autodist-verify", "conformance suite")
    group.addoption("--impl", default=DEFAULT_IMPLEMENTATION, metavar="MODULE",
                    help="implementation under test: a module exposing AutoDist, Saver, SavedModelBuilder "
                         "(default: %(default)s)")
    group.addoption("--conformance-report", default="conformance-report", metavar="DIR",
                    help="directory for matrix.json, matrix.md and reproductions (default: %(default)s)")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STATE] = _RunState()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Load the implementation if a selected test needs it (one clear error and exit code
    2, before any test runs, for a module that cannot be used), and note the conformance
    tests selected to run (after ``-k`` and ``-m`` deselection)."""
    state = session.config.stash[_STATE]
    if any("conformance_impl" in getattr(item, "fixturenames", ()) for item in session.items):
        _implementation(session.config)
    state.collected = {item.nodeid for item in session.items if "conformance" in getattr(item, "fixturenames", ())}


def _implementation(config: pytest.Config) -> Implementation:
    """The implementation named by ``--impl``, loaded on first use; a module that cannot
    be used ends the whole run (exit code 2), not each test that needs it."""
    from autodist_verify.implementation import ImplementationError, load_implementation

    state = config.stash[_STATE]
    if state.implementation is None:
        try:
            state.implementation = load_implementation(config.getoption("impl"))
        except ImplementationError as err:
            pytest.exit(str(err), returncode=2)
    return state.implementation


def pytest_runtest_setup(item: pytest.Item) -> None:
    item.config.stash[_STATE].current = item.nodeid


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    state = item.config.stash.get(_STATE, None)
    if state is None or call.when != "call" or item.nodeid not in state.collected:
        return report
    state.finished.add(item.nodeid)
    outcomes = state.outcomes.pop(item.nodeid, [])
    conformance = item.funcargs.get("conformance")
    for prop, column, outcome, case in _examples(outcomes):
        state.matrix.record(prop, column, outcome.status, outcome.detail if outcome.status != FAIL else "")
        if isinstance(case, Case):
            state.matrix.record_features(case.features() + list(outcome.observed))
        if outcome.status == FAIL and case is not None and conformance is not None:
            path = conformance.write_reproduction(prop, case)
            report.sections.append(("reproduction", f"autodist-verify replay {path} --impl {conformance.impl.name}"))
    return report


def _examples(outcomes: list[tuple[str, str, Outcome, Any]]) -> list[tuple[str, str, Outcome, Any]]:
    """The examples among a test's outcomes: everything before the first failure or
    error (the outcomes that raise into Hypothesis), and the last example when there
    was one (Hypothesis re-runs the shrunk case last). What lies between is shrinking.
    A failure followed by passes is no shrink: explicit ``@example`` cases all run, a
    failing one included, before anything is generated; all of them count.
    Consecutive outcomes of one case object are one example (:meth:`Conformance.check_all`)."""
    examples: list[list[tuple[str, str, Outcome, Any]]] = []
    for outcome in outcomes:
        case = outcome[3]
        if examples and case is not None and examples[-1][-1][3] is case:
            examples[-1].append(outcome)
        else:
            examples.append([outcome])

    def raised(example) -> bool:
        return any(o.status in (FAIL, ERROR) for _, _, o, _ in example)

    first_raised = next((i for i, example in enumerate(examples) if raised(example)), None)
    if first_raised is not None and raised(examples[-1]):
        examples = examples[:first_raised] + examples[-1:]
    return [outcome for example in examples for outcome in example]


class Conformance:
    """Runs properties on cases with the suite's runner and notes every outcome."""

    def __init__(self, impl, pool, witness, state: _RunState, report_dir: Path):
        self.impl = impl
        self.pool = pool
        self.witness = witness
        self.state = state
        self.report_dir = report_dir

    def check(self, prop: str, case, column: str | None = None) -> Outcome:
        """Run ``prop`` on ``case``; raise if it failed (so Hypothesis shrinks it) or
        if the harness failed. Not applicable is a recorded outcome, not an exception.
        The matrix column is the case's strategy unless ``column`` names another (``-``
        for a property that uses no strategy)."""
        return self.check_all([prop], case, column)[0]

    def check_all(self, props: list[str], case, column: str | None = None) -> list[Outcome]:
        """Run every property of ``props`` on ``case``, sharing the implementation's
        distributed runs between them (:func:`~autodist_verify.runner.run_properties`),
        and note each outcome; raise as :meth:`check` does if any failed (the message
        names the property when there are several)."""
        from autodist_verify.runner import run_properties

        outcomes = run_properties(props, case, self.impl, self.pool, self.witness)
        for prop, outcome in zip(props, outcomes):
            self.note(prop, column or case.source.label, outcome, case)
            _hypothesis_note(f"{prop}: {outcome.status}" + (f": {outcome.detail}" if outcome.detail else ""))
        for status, raised in ((FAIL, PropertyDoesNotHold), (ERROR, HarnessFailed)):
            details = [o.detail if len(props) == 1 else f"{prop}: {o.detail}"
                       for prop, o in zip(props, outcomes) if o.status == status]
            if details:
                raise raised("\n".join(details))
        return outcomes

    def note(self, prop: str, column: str, outcome: Outcome, case=None) -> None:
        """Note an outcome for the running test (the matrix is updated when it ends)."""
        key = self.state.current or "-"
        self.state.outcomes.setdefault(key, []).append((prop, column, outcome, case))

    def write_reproduction(self, prop: str, case) -> Path:
        data = {"property": prop, **case.to_dict()}
        digest = hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]
        directory = self.report_dir / "reproductions"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{prop}-{digest}.json"
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        self.state.matrix.reproductions.append(str(path))
        return path


def _hypothesis_note(text: str) -> None:
    """Attach ``text`` to the Hypothesis example being run, if any (shown on failure)."""
    from hypothesis import note
    from hypothesis.errors import InvalidArgument

    try:
        note(text)
    except InvalidArgument:  # not inside a Hypothesis test
        pass


@pytest.fixture(scope="session")
def conformance_impl(pytestconfig: pytest.Config):
    """The implementation named by ``--impl``."""
    return _implementation(pytestconfig)


@pytest.fixture(scope="session")
def cluster_pool():
    """Simulated clusters started on first use and shared by the whole session."""
    from autodist_verify.clusters import ClusterPool

    with ClusterPool() as pool:
        yield pool


@pytest.fixture(scope="session")
def witness(pytestconfig: pytest.Config, conformance_impl):
    """The plain-TensorFlow witness process, started on first use and shared by the session."""
    from autodist_verify.witness import Witness

    with Witness(forbidden=conformance_impl.name) as running:
        yield running


@pytest.fixture(scope="session")
def conformance(pytestconfig: pytest.Config, conformance_impl, cluster_pool, witness) -> Conformance:
    """Runs a property on a case and records the outcome in the conformance matrix."""
    report_dir = Path(pytestconfig.getoption("conformance_report"))
    return Conformance(conformance_impl, cluster_pool, witness, pytestconfig.stash[_STATE], report_dir)


# Under pytest-xdist each worker holds the outcomes of the tests it ran; it hands them
# to the controller in ``workeroutput`` when its session ends, and the controller, which
# ran no test, prints and writes the merged matrix.
_WORKER_OUTPUT_KEY = "autodist_verify"


def pytest_sessionfinish(session: pytest.Session) -> None:
    worker_output = getattr(session.config, "workeroutput", None)
    state = session.config.stash.get(_STATE, None)
    if worker_output is None or state is None:
        return
    worker_output[_WORKER_OUTPUT_KEY] = {
        "matrix": state.matrix.to_dict(session.config.getoption("impl")),
        "collected": sorted(state.collected),
        "finished": sorted(state.finished),
    }


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """(pytest-xdist, in the controller) Merge a finished worker's share of the matrix."""
    share = getattr(node, "workeroutput", {}).get(_WORKER_OUTPUT_KEY)
    state = node.config.stash.get(_STATE, None)
    if share is None or state is None:
        return
    state.collected.update(share["collected"])
    state.finished.update(share["finished"])
    state.matrix.absorb(share["matrix"])


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is None or not state.collected:
        return
    matrix = state.matrix
    not_run = state.collected - state.finished
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        matrix.incomplete = "the run was interrupted"
    elif not_run:
        matrix.incomplete = f"{len(not_run)} of {len(state.collected)} conformance tests did not run"
    implementation = config.getoption("impl")
    json_path, md_path = matrix.write(Path(config.getoption("conformance_report")), implementation)
    terminalreporter.section("conformance matrix")
    for line in matrix.markdown(implementation).splitlines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"written: {json_path}, {md_path}")
