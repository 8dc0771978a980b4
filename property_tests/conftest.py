"""Makes the conformance suite's process ready before its tests are imported.

The oracle runs in this process, so the determinism environment must be set before
TensorFlow is first imported (cluster_sim/determinism.py; it refuses, loudly, if
TensorFlow came first). The suite runs under the Hypothesis profile ``autodist-verify-ci`` unless
``--hypothesis-profile`` names another, or the repository's root conftest chose
``quick`` for the project's own test run. Both happen only when these tests are
collected: the installed pytest plugin changes nothing for other projects.
"""

from cluster_sim.determinism import apply_environment

apply_environment()

from autodist_verify.profiles import load_suite_profile  # noqa: E402


def pytest_configure(config):
    load_suite_profile(config)
