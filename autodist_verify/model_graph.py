"""Builds a model spec (:mod:`autodist_verify.model_spec`) as a TensorFlow graph.

The same spec gives the same original single-device graph in every process: the
implementation under test, the oracle and the witness all build it from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from autodist_verify.model_spec import OPTIMIZERS, validate
from autodist_verify.oracle import TrainModel


def build(spec: Mapping[str, Any]) -> TrainModel:
    """Build the model's original single-device graph into the current default graph."""
    import tensorflow as tf

    validate(spec)
    dtype = tf.as_dtype(spec["dtype"])
    seed = int(spec.get("seed", 0))
    v1 = tf.compat.v1

    def init(offset: int):
        return v1.glorot_uniform_initializer(seed=seed * 100 + offset, dtype=dtype)

    x = v1.placeholder(dtype, [None, spec["features"]], name="x")
    y = v1.placeholder(dtype, [None, 1], name="y")
    h = x
    width = spec["features"]
    embedding = spec.get("embedding")
    if embedding:
        ids = v1.placeholder(tf.int64, [None], name="ids")
        table = v1.get_variable(
            "emb", [embedding["vocab"], embedding["dim"]], dtype,
            initializer=v1.random_normal_initializer(seed=seed * 100 + 99, dtype=dtype))
        h = tf.concat([h, tf.nn.embedding_lookup(table, ids)], axis=1)
        width += embedding["dim"]
    for i, units in enumerate(spec.get("hidden", [])):
        kernel = v1.get_variable(f"dense_{i}/kernel", [width, units], dtype, initializer=init(i))
        h = tf.matmul(h, kernel)
        if spec.get("bias", True):
            # Non-zero start so that a bias lost on restore shows in the bytes.
            bias = v1.get_variable(f"dense_{i}/bias", [units], dtype, initializer=v1.constant_initializer(0.1))
            h = h + bias
        h = tf.tanh(h)
        width = units
    out = v1.get_variable("out/kernel", [width, 1], dtype, initializer=init(50))
    prediction = tf.matmul(h, out)
    if spec.get("scalar", False):
        prediction = prediction * v1.get_variable("scale", [], dtype, initializer=v1.constant_initializer(1.5))
    if spec.get("frozen", False):
        prediction = prediction * v1.get_variable(
            "frozen", [], dtype, initializer=v1.constant_initializer(0.75), trainable=False)
    prediction = tf.identity(prediction, name="prediction")
    loss = tf.reduce_mean(tf.square(prediction - y), name="loss")
    global_step = v1.train.get_or_create_global_step() if spec.get("global_step", False) else None
    optimizer = make_optimizer(spec["optimizer"])
    grads_and_vars = optimizer.compute_gradients(loss)
    train_op = optimizer.apply_gradients(grads_and_vars, global_step=global_step)
    return TrainModel(loss, train_op, grads_and_vars)


def make_optimizer(optimizer: Mapping[str, Any]):
    """The ``tf.compat.v1.train`` optimizer that ``optimizer`` describes."""
    import tensorflow as tf

    class_name, _ = OPTIMIZERS[optimizer["name"]]
    hyperparameters = {k: v for k, v in optimizer.items() if k != "name"}
    return getattr(tf.compat.v1.train, class_name)(**hyperparameters)


def feed_dict(graph, feed: Mapping[str, np.ndarray]) -> dict:
    """Turn a name-keyed feed into a TensorFlow feed_dict for ``graph``."""
    return {graph.get_tensor_by_name(f"{name}:0"): value for name, value in feed.items()}

