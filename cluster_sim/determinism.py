"""The determinism settings both sides of the equivalence contract run under.

Bit-identical results between a distributed step and the single-device oracle need the
same kernels with the same reduction orders on both sides. These are the knobs:

* ``TF_DETERMINISTIC_OPS=1``: TensorFlow's op determinism.
* ``TF_ENABLE_ONEDNN_OPTS=0``: plain Eigen kernels instead of oneDNN's, whose
  algorithm choice may depend on shapes and threads.
* one intra-op thread: Eigen may split a reduction across threads, which changes the
  summation order with the thread count.
* graph rewriting off (Grappler and the classic graph optimizer): the distributed graph
  and the original graph have different structures, and rewrites such as arithmetic
  simplification or constant folding could then take different forms on each side.

The environment variables are read when TensorFlow is imported, so
:func:`apply_environment` must run before the first ``import tensorflow`` of a process.

These settings are what the *conformance suite* needs for bitwise comparisons, not
something a user's training program must obey (``TF_DETERMINISTIC_OPS=1`` refuses
unseeded random ops such as Dropout). A cluster opts in: ``LocalCluster(...,
deterministic=True)`` (the suite's clusters, ``cluster-sim ... --deterministic``) sets
them in every node process, and its :meth:`~cluster_sim.LocalCluster.session_config`
carries the matching session settings; the oracle uses :func:`session_config` directly.
Without the opt-in, nodes run with TensorFlow's defaults.
"""

from __future__ import annotations

import os
import sys
from typing import Any

DETERMINISM_ENV: dict[str, str] = {
    "TF_DETERMINISTIC_OPS": "1",
    "TF_ENABLE_ONEDNN_OPTS": "0",
}
INTRA_OP_THREADS = 1

# Every process of the project that imports TensorFlow routes ``tf.keras`` to Keras 2
# (the ``tf_keras`` package): Keras 3 has no TF1 graph mode.
LEGACY_KERAS_ENV: dict[str, str] = {"TF_USE_LEGACY_KERAS": "1"}


def node_environment(deterministic: bool) -> dict[str, str]:
    """The environment variables a node process sets before importing TensorFlow."""
    env = {"TF_CPP_MIN_LOG_LEVEL": "1", **LEGACY_KERAS_ENV}
    if deterministic:
        env.update(DETERMINISM_ENV)
    return env


def apply_environment() -> None:
    """Set the determinism environment variables in this process (before TF import).

    Raises RuntimeError if TensorFlow was imported before without them: its kernels
    were then chosen under other settings, and bitwise comparisons against the nodes
    would depend on the machine instead of failing loudly here.
    """
    missing = {k: v for k, v in DETERMINISM_ENV.items() if os.environ.get(k) != v}
    if missing and "tensorflow" in sys.modules:
        raise RuntimeError(
            "TensorFlow was imported before the determinism environment was set "
            f"({', '.join(f'{k}={v}' for k, v in missing.items())}); set it before the first "
            "`import tensorflow` of the process"
        )
    os.environ.update(DETERMINISM_ENV)
    os.environ.update(LEGACY_KERAS_ENV)


def session_config(deterministic: bool = True, **overrides: Any):
    """A ``tf.compat.v1.ConfigProto``: with the contract's determinism settings, or
    (``deterministic=False``) TensorFlow's defaults.

    Keyword arguments are set as fields of the ConfigProto (for example
    ``operation_timeout_in_ms=20000``).
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import rewriter_config_pb2

    config = tf.compat.v1.ConfigProto(allow_soft_placement=False)
    if deterministic:
        config.intra_op_parallelism_threads = INTRA_OP_THREADS
        rewrites = config.graph_options.rewrite_options
        rewrites.disable_meta_optimizer = True
        rewrites.constant_folding = rewriter_config_pb2.RewriterConfig.OFF
        classic = config.graph_options.optimizer_options
        classic.opt_level = tf.compat.v1.OptimizerOptions.L0
        classic.do_constant_folding = False
        classic.do_common_subexpression_elimination = False
        classic.do_function_inlining = False
    for field, value in overrides.items():
        setattr(config, field, value)
    return config
