"""Hypothesis profiles of the suite (choose with ``--hypothesis-profile NAME``).

* ``ci`` (the suite's default): few examples per property and no deadline, so the
  default run fits the 15-minute budget on a 2-core machine; each distributed example
  starts sessions on live clusters and can take seconds.
* ``thorough``: many more examples, for on-demand conformance runs.
"""

from hypothesis import HealthCheck, settings

_SLOW_EXAMPLE_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large,
                        HealthCheck.function_scoped_fixture]

EXAMPLES = {"ci": 16, "thorough": 200}


def register_profiles() -> None:
    """Register ``ci`` and ``thorough`` (without loading either)."""
    for name, examples in EXAMPLES.items():
        settings.register_profile(
            name, max_examples=examples, deadline=None,
            suppress_health_check=_SLOW_EXAMPLE_CHECKS, print_blob=True,
        )


def load_suite_profile(config) -> None:
    """Load ``ci`` unless the run chose a profile with ``--hypothesis-profile``."""
    register_profiles()
    if not config.getoption("hypothesis_profile", None):
        settings.load_profile("ci")
