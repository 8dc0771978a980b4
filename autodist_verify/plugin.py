"""The pytest plugin of the conformance suite (entry point ``pytest11: autodist_verify``).

Options:
  --impl MODULE               the implementation under test (default: saver_impl)
  --conformance-report DIR    where the matrix (JSON, Markdown) and reproductions go

Fixtures (session scope): ``conformance_impl`` (the loaded implementation),
``cluster_pool`` (running simulated clusters, shared by all examples), ``witness``
(the plain-TensorFlow witness process, which never imports the implementation) and
``conformance`` (runs a property on a case and records the outcome).

At the end the terminal summary shows the conformance matrix, also written as
``matrix.json`` and ``matrix.md``. A property that fails writes its shrunk case to
``DIR/reproductions/PROPERTY-HASH.json``; ``autodist-verify replay FILE`` re-runs it.
"""

from __future__ import annotations

from cluster_sim.determinism import apply_environment

apply_environment()  # before TensorFlow is imported by anything the suite loads

import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from autodist_verify.case import Case  # noqa: E402
from autodist_verify.clusters import ClusterPool  # noqa: E402
from autodist_verify.implementation import DEFAULT_IMPLEMENTATION, Implementation, load_implementation  # noqa: E402
from autodist_verify.matrix import FAIL, NOT_APPLICABLE, PASS, Matrix  # noqa: E402
from autodist_verify.profiles import register_profiles  # noqa: E402
from autodist_verify.properties import PROPERTIES, Context, NotApplicable  # noqa: E402
from autodist_verify.witness import Witness  # noqa: E402

register_profiles()

_MATRIX = pytest.StashKey[Matrix]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("autodist-verify", "conformance suite")
    group.addoption("--impl", default=DEFAULT_IMPLEMENTATION, metavar="MODULE",
                    help="implementation under test: a module exposing AutoDist, Saver, SavedModelBuilder "
                         "(default: %(default)s)")
    group.addoption("--conformance-report", default="conformance-report", metavar="DIR",
                    help="directory for matrix.json, matrix.md and reproductions (default: %(default)s)")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_MATRIX] = Matrix()


class Conformance:
    """Runs properties on cases and records every outcome in the matrix."""

    def __init__(self, impl: Implementation, pool: ClusterPool, witness: Witness, matrix: Matrix,
                 report_dir: Path):
        self.impl = impl
        self.pool = pool
        self.witness = witness
        self.matrix = matrix
        self.report_dir = report_dir

    def check(self, prop: str, case: Case) -> None:
        """Run property ``prop`` on ``case``; a failure is re-raised after recording."""
        column = case.source.label
        workdir = Path(tempfile.mkdtemp(prefix=f"autodist-verify-{prop}-"))
        try:
            PROPERTIES[prop](Context(self.impl, self.pool, self.witness, workdir), case)
        except NotApplicable as reason:
            self.matrix.record(prop, column, NOT_APPLICABLE, str(reason))
            _note(f"not applicable: {reason}")
            return
        except Exception:
            self.matrix.record(prop, column, FAIL)
            if _is_final_example():
                path = self.write_reproduction(prop, case)
                _note(f"reproduction written: autodist-verify replay {path} --impl {self.impl.name}")
            raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self.matrix.record(prop, column, PASS)

    def record(self, prop: str, column: str, passed: bool) -> None:
        """Record the outcome of a property checked outside :meth:`check`."""
        self.matrix.record(prop, column, PASS if passed else FAIL)

    def write_reproduction(self, prop: str, case: Case) -> Path:
        data = {"property": prop, **case.to_dict()}
        digest = hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]
        directory = self.report_dir / "reproductions"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{prop}-{digest}.json"
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        self.matrix.reproductions.append(str(path))
        return path


def _is_final_example() -> bool:
    """True on Hypothesis's last run of a failing example (the shrunk one), or outside Hypothesis."""
    from hypothesis.control import current_build_context

    try:
        return current_build_context().is_final
    except Exception:  # no Hypothesis context: a plain test
        return True


def _note(text: str) -> None:
    from hypothesis import note

    try:
        note(text)
    except Exception:  # outside Hypothesis
        pass


@pytest.fixture(scope="session")
def conformance_impl(pytestconfig: pytest.Config) -> Implementation:
    """The implementation named by ``--impl``."""
    return load_implementation(pytestconfig.getoption("impl"))


@pytest.fixture(scope="session")
def cluster_pool():
    """Simulated clusters started on first use and shared by the whole session."""
    with ClusterPool() as pool:
        yield pool


@pytest.fixture(scope="session")
def witness(pytestconfig: pytest.Config, conformance_impl: Implementation):
    """The plain-TensorFlow witness process, started on first use and shared by the session."""
    with Witness(forbidden=conformance_impl.name, cwd=pytestconfig.rootpath) as running:
        yield running


@pytest.fixture(scope="session")
def conformance(pytestconfig: pytest.Config, conformance_impl: Implementation, cluster_pool: ClusterPool,
                witness: Witness) -> Conformance:
    """Runs a property on a case and records the outcome in the conformance matrix."""
    report_dir = Path(pytestconfig.getoption("conformance_report"))
    return Conformance(conformance_impl, cluster_pool, witness, pytestconfig.stash[_MATRIX], report_dir)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    matrix = config.stash.get(_MATRIX, None)
    if matrix is None or matrix.empty:
        return
    implementation = config.getoption("impl")
    json_path, md_path = matrix.write(Path(config.getoption("conformance_report")), implementation)
    terminalreporter.section("conformance matrix")
    for line in matrix.markdown(implementation).splitlines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"written: {json_path}, {md_path}")
