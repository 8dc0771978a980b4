"""Small original (single-device) training graphs used by the project's own tests.

Every builder builds into the current default graph and returns the handles the oracle
needs. Initializers are seeded, so every process builds the same initial values.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from autodist_verify.oracle import TrainModel

OPTIMIZERS = {
    "sgd": lambda: tf.compat.v1.train.GradientDescentOptimizer(0.1),
    "momentum": lambda: tf.compat.v1.train.MomentumOptimizer(0.05, 0.9),
    "adam": lambda: tf.compat.v1.train.AdamOptimizer(0.01),
    "adagrad": lambda: tf.compat.v1.train.AdagradOptimizer(0.1),
    "rmsprop": lambda: tf.compat.v1.train.RMSPropOptimizer(0.01, momentum=0.5),
}

FEATURES, VOCAB, HIDDEN = 4, 10, 3


def dense_embedding_model(optimizer: str = "adam", dtype=tf.float32) -> TrainModel:
    """A dense layer, an embedding lookup (sparse gradient), a scalar trainable
    variable, a non-trainable variable and ``global_step``."""
    x = tf.compat.v1.placeholder(dtype, [None, FEATURES], name="x")
    ids = tf.compat.v1.placeholder(tf.int64, [None], name="ids")
    y = tf.compat.v1.placeholder(dtype, [None, 1], name="y")
    kernel = tf.compat.v1.get_variable(
        "dense/kernel", [FEATURES, HIDDEN], dtype,
        initializer=tf.compat.v1.glorot_uniform_initializer(seed=1))
    bias = tf.compat.v1.get_variable("dense/bias", [HIDDEN], dtype, initializer=tf.zeros_initializer())
    emb = tf.compat.v1.get_variable(
        "emb", [VOCAB, HIDDEN], dtype, initializer=tf.compat.v1.random_normal_initializer(seed=2))
    out = tf.compat.v1.get_variable(
        "out", [HIDDEN, 1], dtype, initializer=tf.compat.v1.glorot_uniform_initializer(seed=3))
    temperature = tf.compat.v1.get_variable("temperature", [], dtype, initializer=tf.ones_initializer())
    scale = tf.compat.v1.get_variable(
        "scale", [], dtype, initializer=tf.constant_initializer(0.5), trainable=False)
    hidden = tf.tanh(tf.matmul(x, kernel) + bias + tf.nn.embedding_lookup(emb, ids))
    prediction = tf.identity(tf.matmul(hidden, out) * temperature * scale, name="prediction")
    loss = tf.reduce_mean(tf.square(prediction - y), name="loss")
    global_step = tf.compat.v1.train.get_or_create_global_step()
    opt = OPTIMIZERS[optimizer]()
    grads_and_vars = opt.compute_gradients(loss)
    train_op = opt.apply_gradients(grads_and_vars, global_step=global_step)
    return TrainModel(loss, train_op, grads_and_vars)


def batches(steps: int, batch: int, seed: int = 0, dtype=np.float32) -> list[dict[str, np.ndarray]]:
    """Deterministic feeds for :func:`dense_embedding_model`, keyed by placeholder name."""
    rng = np.random.default_rng(seed)
    return [
        {
            "x": rng.standard_normal((batch, FEATURES)).astype(dtype),
            "ids": rng.integers(0, VOCAB, size=batch).astype(np.int64),
            "y": rng.standard_normal((batch, 1)).astype(dtype),
        }
        for _ in range(steps)
    ]
