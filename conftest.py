"""Root pytest configuration: Hypothesis profiles shared by every test directory.

Profiles (choose with ``--hypothesis-profile NAME``):

* ``ci`` (default): few examples and a generous deadline, so the whole default run
  stays within the 15-minute budget on a 2-core machine. Distributed examples start
  TensorFlow sessions against a live cluster, so a single example can take seconds.
* ``thorough``: many more examples for on-demand, longer conformance runs.
"""

from cluster_sim.determinism import apply_environment

# Before anything imports TensorFlow: the oracle in this process must run the same
# kernels as the simulated nodes (see cluster_sim/determinism.py).
apply_environment()

from hypothesis import HealthCheck, settings  # noqa: E402

_SLOW_EXAMPLE_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile(
    "ci",
    max_examples=10,
    deadline=None,
    suppress_health_check=_SLOW_EXAMPLE_CHECKS,
    print_blob=True,
)
settings.register_profile(
    "thorough",
    max_examples=200,
    deadline=None,
    suppress_health_check=_SLOW_EXAMPLE_CHECKS,
    print_blob=True,
)
settings.load_profile("ci")
