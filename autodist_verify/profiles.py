"""Hypothesis profiles of the suite: ``autodist-verify run --profile quick|ci|thorough``,
or ``pytest --hypothesis-profile autodist-verify-quick|autodist-verify-ci|autodist-verify-thorough``.

* ``ci`` (the suite's default, ``autodist-verify run``): 80 examples per property (10 per
  strategy column, 8 per fault kind) and no deadline: each distributed example starts
  sessions on live clusters and can take seconds (``autodist-verify run``: 4 min 15 s on
  2 cores in two workers, measured). The matrix's "Examples per case feature" line says
  how often each model feature and layout label (``Case.features``) was drawn.
  It is derandomized and keeps no example database: every ``ci`` run draws the same
  cases (for a given version of the suite), so a CI verdict can be reproduced anywhere.
* ``quick``: 16 examples per property (2 per strategy column, 2 per fault kind), so every
  cell sees its minimal case and one drawn case; derandomized as ``ci``. The project's
  own test run (``pytest`` in the repository, whose root conftest chooses it) uses it to
  stay within its time budget on a slow 2-core machine: it shows that the suite and the
  reference implementation work together, while how much the suite finds is measured in
  ``ci`` (the mutation score, ``tests/test_mutation_score.py``).
* ``thorough``: many more examples, drawn at random each run (failures are kept in
  Hypothesis's database and replayed first), for on-demand conformance runs.

They are registered under prefixed names: Hypothesis has a ``ci`` profile of its own,
which it loads by itself on CI machines, and another project's tests must keep it.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

# pytest and Hypothesis are imported where a profile is registered or loaded, not here:
# the ``autodist-verify`` command reads the profile names for its --help and choices.
if TYPE_CHECKING:
    import pytest

EXAMPLES = {"quick": 16, "ci": 80, "thorough": 200}
REPRODUCIBLE = ("quick", "ci")
PROFILES = {short: f"autodist-verify-{short}" for short in EXAMPLES}  # short name -> registered name


def register_profiles() -> None:
    """Register the suite's profiles (without loading either)."""
    from hypothesis import HealthCheck, settings

    slow_example_checks = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
    for short, examples in EXAMPLES.items():
        reproducible = {"derandomize": True, "database": None} if short in REPRODUCIBLE else {}
        settings.register_profile(
            PROFILES[short], max_examples=examples, deadline=None,
            suppress_health_check=slow_example_checks, print_blob=True, **reproducible,
        )


@cache
def _project_chose() -> pytest.StashKey[bool]:
    """The stash key set once a project running the suite loaded its profile."""
    import pytest

    return pytest.StashKey[bool]()


def load_suite_profile(config: pytest.Config) -> None:
    """The suite's conftest: load ``ci`` unless the run chose a profile with
    ``--hypothesis-profile`` or a project running the suite chose one
    (:func:`load_project_profile`)."""
    from hypothesis import settings

    register_profiles()
    if config.getoption("hypothesis_profile", None) or _project_chose() in config.stash:
        return
    settings.load_profile(PROFILES["ci"])


def load_project_profile(config: pytest.Config, short: str) -> None:
    """A project whose test run holds the suite (the repository's root conftest chooses
    ``quick``): load ``short`` unless the run chose a profile with
    ``--hypothesis-profile``. It wins over the suite's default in either order: pytest
    configures a deeper conftest first when the run names its folder."""
    from hypothesis import settings

    register_profiles()
    if config.getoption("hypothesis_profile", None):
        return
    settings.load_profile(PROFILES[short])
    config.stash[_project_chose()] = True
