"""Root pytest configuration.

The determinism environment is applied before anything imports TensorFlow: the oracle
in this process must run the same kernels as the simulated nodes (see
cluster_sim/determinism.py). The Hypothesis profiles ``ci`` (default) and ``thorough``
are registered here (see autodist_verify/profiles.py); the ``autodist_verify`` pytest
plugin registers them too, for runs of the installed suite outside this checkout.
"""

from cluster_sim.determinism import apply_environment

apply_environment()

from autodist_verify.profiles import register_profiles  # noqa: E402

register_profiles()
