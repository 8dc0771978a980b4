"""The model spec the project's own tests train, and plain single-device training of a spec.

The model is an :mod:`autodist_verify.model_spec` spec, built by
:func:`autodist_verify.model_graph.build` like every model of the suite: a dense layer
with a bias, an embedding lookup (a sparse gradient), a trainable scalar (``scale``), a
non-trainable scalar (``frozen``) and ``global_step``. Its variables are
``emb``, ``dense_0/kernel`` ([7, 3]: 4 features and 3 embedding columns), ``dense_0/bias``,
``out/kernel``, ``scale``, ``frozen`` and ``global_step``.

:func:`plain_training` is not the suite's oracle: it runs the original train op on each
whole batch in one plain session, the reference the oracle itself (and a one-replica
distributed session) is checked against.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from autodist_verify import model_graph

SPEC: dict[str, Any] = {
    "dtype": "float32", "features": 4, "hidden": [3], "bias": True, "embedding": {"vocab": 10, "dim": 3},
    "scalar": True, "frozen": True, "global_step": True,
    "optimizer": {"name": "adam", "learning_rate": 0.01}, "seed": 1,
}

# The same model with plain gradient descent (no optimizer slots).
SGD_SPEC: dict[str, Any] = {**SPEC, "optimizer": {"name": "sgd", "learning_rate": 0.1}}


def plain_training(spec: Mapping[str, Any], feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every variable after running the original train op once per feed, on the whole
    batch, in a plain single-device session under the suite's determinism settings."""
    import tensorflow as tf

    from cluster_sim.determinism import session_config

    graph = tf.Graph()
    with graph.as_default():
        handles = model_graph.build(spec)
        variables = tf.compat.v1.global_variables()
        with tf.compat.v1.Session(config=session_config()) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            for feed in feeds:
                sess.run(handles.train_op, model_graph.feed_dict(graph, feed))
            return {v.op.name: value for v, value in zip(variables, sess.run(variables))}
