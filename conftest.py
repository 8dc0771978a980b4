"""Root pytest configuration.

The determinism environment is applied before anything imports TensorFlow: the oracle
in this process must run the same kernels as the simulated nodes (see
cluster_sim/determinism.py). The project's tests run under the Hypothesis profile
``autodist-verify-quick`` unless ``--hypothesis-profile`` names another
(autodist_verify/profiles.py): the conformance suite's own default, ``ci``, is what
``autodist-verify run`` draws.
"""

from cluster_sim.determinism import apply_environment

apply_environment()

import pytest  # noqa: E402

pytest_plugins = ["pytester"]  # tests/test_plugin.py runs pytest on test files of its own

from autodist_verify.profiles import load_project_profile  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    load_project_profile(config, "quick")

