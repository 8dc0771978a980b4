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
The cluster simulator sets the same variables in every node process; the oracle
and the reference implementation both take their session configuration from here.
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


def session_config(**overrides: Any):
    """A ``tf.compat.v1.ConfigProto`` with the contract's determinism settings.

    Keyword arguments are set as fields of the ConfigProto (for example
    ``operation_timeout_in_ms=20000``).
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import rewriter_config_pb2

    config = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=INTRA_OP_THREADS,
        allow_soft_placement=False,
    )
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    config.graph_options.rewrite_options.constant_folding = rewriter_config_pb2.RewriterConfig.OFF
    config.graph_options.optimizer_options.opt_level = tf.compat.v1.OptimizerOptions.L0
    config.graph_options.optimizer_options.do_constant_folding = False
    config.graph_options.optimizer_options.do_common_subexpression_elimination = False
    config.graph_options.optimizer_options.do_function_inlining = False
    for field, value in overrides.items():
        setattr(config, field, value)
    return config
