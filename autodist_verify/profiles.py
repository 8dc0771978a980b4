"""Hypothesis profiles of the suite: ``autodist-verify run --profile ci|thorough``, or
``pytest --hypothesis-profile autodist-verify-ci|autodist-verify-thorough``.

* ``ci`` (the suite's default): 64 examples per property (8 per strategy column) and no
  deadline: each distributed example starts sessions on live clusters and can take
  seconds (``autodist-verify run``: 3 min 26 s on 2 cores in two workers, measured).
  The matrix's "Examples per case feature" line says how often each model feature and
  layout label (``Case.features``) was drawn.
  It is derandomized and keeps no example database: every ``ci`` run draws the same
  cases (for a given version of the suite), so a CI verdict can be reproduced anywhere.
* ``thorough``: many more examples, drawn at random each run (failures are kept in
  Hypothesis's database and replayed first), for on-demand conformance runs.

They are registered under prefixed names: Hypothesis has a ``ci`` profile of its own,
which it loads by itself on CI machines, and another project's tests must keep it.
"""

from hypothesis import HealthCheck, settings

_SLOW_EXAMPLE_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large,
                        HealthCheck.function_scoped_fixture]

EXAMPLES = {"ci": 64, "thorough": 200}
PROFILES = {short: f"autodist-verify-{short}" for short in EXAMPLES}  # short name -> registered name


def register_profiles() -> None:
    """Register the suite's profiles (without loading either)."""
    for short, examples in EXAMPLES.items():
        reproducible = {"derandomize": True, "database": None} if short == "ci" else {}
        settings.register_profile(
            PROFILES[short], max_examples=examples, deadline=None,
            suppress_health_check=_SLOW_EXAMPLE_CHECKS, print_blob=True, **reproducible,
        )


def load_suite_profile(config) -> None:
    """Load the suite's ``ci`` profile unless the run chose one with ``--hypothesis-profile``."""
    register_profiles()
    if not config.getoption("hypothesis_profile", None):
        settings.load_profile(PROFILES["ci"])
