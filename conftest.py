"""Root pytest configuration.

The determinism environment is applied before anything imports TensorFlow: the oracle
in this process must run the same kernels as the simulated nodes (see
cluster_sim/determinism.py). The Hypothesis profiles ``ci`` (default) and ``thorough``
are registered here (see autodist_verify/profiles.py); the ``autodist_verify`` pytest
plugin registers them too, for runs of the installed suite outside this checkout.
"""

from cluster_sim.determinism import apply_environment

apply_environment()

import pytest  # noqa: E402

from autodist_verify.profiles import register_profiles  # noqa: E402
from cluster_sim.launcher import NodeLauncher  # noqa: E402

register_profiles()


@pytest.fixture(scope="session")
def node_launcher():
    """One node template for the session's test clusters: their nodes are forked from a
    process that has imported TensorFlow, so a cluster starts in about a second."""
    with NodeLauncher() as launcher:
        yield launcher
