"""Builds a model spec (:mod:`autodist_verify.model_spec`) as a TensorFlow graph.

The same spec gives the same original single-device graph in every process: the
implementation under test, the oracle and the witness all build it from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from autodist_verify.model_spec import (
    HEAD_VARIABLES,
    OPTIMIZERS,
    global_step_dtype,
    head_dtype,
    is_keras_optimizer,
    validate,
)
from autodist_verify.oracle import TrainModel


def build(spec: Mapping[str, Any]) -> TrainModel:
    """Build the model's original single-device graph into the current default graph."""
    import tensorflow as tf

    validate(spec)
    if spec.get("reference_variables"):  # every get_variable below, and the slots, are RefVariables
        with tf.compat.v1.variable_scope(tf.compat.v1.get_variable_scope(), use_resource=False):
            return _build(tf, spec)
    return _build(tf, spec)


def _build(tf, spec: Mapping[str, Any]) -> TrainModel:
    dtype, head = tf.as_dtype(spec["dtype"]), tf.as_dtype(head_dtype(spec))
    layers = _KerasLayers(tf, spec) if spec.get("keras_layers") else _V1Layers(tf, spec)
    v1 = tf.compat.v1

    x = v1.placeholder(dtype, [None, spec["features"]], name="x")
    y = v1.placeholder(head, [None, 1], name="y")
    h = layers.batch_norm(x) if spec.get("batch_norm") else x
    if spec.get("conv"):
        h = layers.conv(h, spec["conv"]["filters"], spec["conv"]["kernel"])
    embedding = spec.get("embedding")
    tied = None
    if embedding:
        ids = v1.placeholder(tf.int64, [None], name="ids")
        table, rows = layers.embedding(ids, embedding["vocab"], embedding["dim"])
        h = tf.concat([h, rows], axis=1)
        if spec.get("tied"):  # the table read a second time, as an output projection
            tied = tf.reduce_mean(tf.matmul(rows, table, transpose_b=True), axis=1, keepdims=True)
    for i, units in enumerate(spec.get("hidden", [])):
        h = layers.dense(h, f"dense_{i}", units, spec.get("bias", True), i)
    if spec.get("control_flow"):
        h = _control_flow(tf, spec["control_flow"], x, h, layers.initializer(60))
    if spec.get("dropout"):
        h = tf.nn.dropout(h, rate=spec["dropout"]["rate"], seed=spec["dropout"]["seed"])
    if head != dtype:
        h = tf.cast(h, head)
    out = v1.get_variable("out/kernel", [h.shape[1], 1], head, initializer=layers.initializer(50, head))
    prediction = tf.matmul(h, out)
    if spec.get("scalar", False):
        prediction = prediction * v1.get_variable("scale", [], head, initializer=v1.constant_initializer(1.5))
    if spec.get("frozen", False):
        prediction = prediction * v1.get_variable(
            "frozen", [], head, initializer=v1.constant_initializer(0.75), trainable=False)
    if tied is not None:
        prediction = prediction + tf.cast(tied, head)
    prediction = tf.identity(prediction, name="prediction")
    loss = tf.reduce_mean(tf.square(prediction - y), name="loss")
    if spec.get("counter"):
        steps_seen = v1.get_variable("steps_seen", [], tf.as_dtype(spec["counter"]), trainable=False,
                                     initializer=v1.zeros_initializer())
        v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, v1.assign_add(steps_seen, 1))
    global_step = _global_step(tf, spec)
    optimizer = make_optimizer(spec["optimizer"], _learning_rate(tf, spec, global_step))
    keras = is_keras_optimizer(spec["optimizer"])
    if keras:  # Keras 2's OptimizerV2 neither computes v1 gradients nor counts global_step
        variables = v1.trainable_variables()
        grads_and_vars = list(zip(tf.gradients(loss, variables), variables))
        if global_step is not None:
            v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, v1.assign_add(global_step, 1))
    else:
        grads_and_vars = optimizer.compute_gradients(loss)
    if spec.get("clip_norm") is not None:
        clipped, _ = tf.clip_by_global_norm([g for g, _ in grads_and_vars], spec["clip_norm"])
        grads_and_vars = list(zip(clipped, [v for _, v in grads_and_vars]))
    body, head = grads_and_vars, []
    if spec.get("head_optimizer"):  # the output layer gets its own optimizer
        body = [(g, v) for g, v in grads_and_vars if v.op.name not in HEAD_VARIABLES]
        head = [(g, v) for g, v in grads_and_vars if v.op.name in HEAD_VARIABLES]
    # The updates that are not gradient steps run before the optimizers', every step.
    with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
        if keras:
            train_op = optimizer.apply_gradients(body)
        else:
            train_op = optimizer.apply_gradients(body, global_step=global_step)
        if head:
            head_op = make_optimizer(spec["head_optimizer"]).apply_gradients(head)
            train_op = tf.group(train_op, head_op, name="train_both")
    return TrainModel(loss, train_op, grads_and_vars)


def _control_flow(tf, kind: str, x, h, initializer):
    """``h`` through control flow (functional If / While) that reads ``flow/kernel``."""
    v1 = tf.compat.v1
    width = h.shape[1]
    kernel = v1.get_variable("flow/kernel", [width, width], h.dtype, initializer=initializer)
    if kind == "cond":
        half = tf.constant(0.5, h.dtype)
        return tf.cond(tf.reduce_sum(x) > 0, lambda: tf.tanh(tf.matmul(h, kernel)),
                       lambda: tf.tanh(tf.matmul(h, kernel)) * half)
    _, result = tf.while_loop(lambda i, _: i < 2, lambda i, value: (i + 1, tf.tanh(tf.matmul(value, kernel))),
                              [tf.constant(0), h])
    return result


BATCH_NORM_MOMENTUM = 0.9
BATCH_NORM_EPSILON = 1e-3


class _V1Layers:
    """The model's layers from ``tf.compat.v1`` variables and ``tf.nn`` ops."""

    def __init__(self, tf, spec: Mapping[str, Any]):
        self.tf, self.v1 = tf, tf.compat.v1
        self.dtype = tf.as_dtype(spec["dtype"])
        self.seed = int(spec.get("seed", 0))

    def initializer(self, offset: int, dtype=None):
        return self.v1.glorot_uniform_initializer(seed=self.seed * 100 + offset, dtype=dtype or self.dtype)

    def batch_norm(self, x):
        """Batch normalization in training mode; the moving averages' updates go to UPDATE_OPS."""
        tf, v1 = self.tf, self.v1
        width, dtype = x.shape[1], x.dtype
        gamma = v1.get_variable("bn/gamma", [width], dtype, initializer=v1.constant_initializer(1.1))
        beta = v1.get_variable("bn/beta", [width], dtype, initializer=v1.constant_initializer(0.05))
        moving_mean = v1.get_variable("bn/moving_mean", [width], dtype, trainable=False,
                                      initializer=v1.zeros_initializer())
        moving_variance = v1.get_variable("bn/moving_variance", [width], dtype, trainable=False,
                                          initializer=v1.ones_initializer())
        mean, variance = tf.nn.moments(x, axes=[0])
        momentum = tf.constant(BATCH_NORM_MOMENTUM, dtype)
        for average, value in ((moving_mean, mean), (moving_variance, variance)):
            v1.add_to_collection(v1.GraphKeys.UPDATE_OPS,
                                 v1.assign(average, average * momentum + value * (1 - momentum)))
        return tf.nn.batch_normalization(x, mean, variance, beta, gamma, BATCH_NORM_EPSILON)

    def conv(self, x, filters: int, kernel_size: int):
        tf, v1 = self.tf, self.v1
        width = x.shape[1]
        kernel = v1.get_variable("conv/kernel", [kernel_size, 1, 1, filters], self.dtype,
                                 initializer=self.initializer(80))
        bias = v1.get_variable("conv/bias", [filters], self.dtype, initializer=v1.constant_initializer(0.1))
        image = tf.reshape(x, [-1, width, 1, 1])
        return tf.reshape(tf.tanh(tf.nn.conv2d(image, kernel, 1, "SAME") + bias), [-1, width * filters])

    def embedding(self, ids, vocab: int, dim: int):
        v1 = self.v1
        table = v1.get_variable("emb", [vocab, dim], self.dtype,
                                initializer=v1.random_normal_initializer(seed=self.seed * 100 + 99, dtype=self.dtype))
        return table, self.tf.nn.embedding_lookup(table, ids)

    def dense(self, h, name: str, units: int, bias: bool, number: int):
        tf, v1 = self.tf, self.v1
        kernel = v1.get_variable(f"{name}/kernel", [h.shape[1], units], self.dtype,
                                 initializer=self.initializer(number))
        h = tf.matmul(h, kernel)
        if bias:
            # Non-zero start so that a bias lost on restore shows in the bytes.
            h = h + v1.get_variable(f"{name}/bias", [units], self.dtype, initializer=v1.constant_initializer(0.1))
        return tf.tanh(h)


class _KerasLayers(_V1Layers):
    """The same layers as Keras 2 layers (same initial values, names and updates)."""

    def __init__(self, tf, spec: Mapping[str, Any]):
        super().__init__(tf, spec)
        self.keras = tf.keras
        if not tf.keras.layers.Dense.__module__.startswith("tf_keras"):
            raise RuntimeError("model spec 'keras_layers' needs Keras 2: set TF_USE_LEGACY_KERAS=1 before "
                               "TensorFlow is imported, with tf_keras installed")

    def batch_norm(self, x):
        constant = self.keras.initializers.Constant
        layer = self.keras.layers.BatchNormalization(
            momentum=BATCH_NORM_MOMENTUM, epsilon=BATCH_NORM_EPSILON, gamma_initializer=constant(1.1),
            beta_initializer=constant(0.05), name="bn", dtype=self.dtype)
        h = layer(x, training=True)
        for update in layer.updates:  # Keras 2 leaves running them to the caller (model.updates)
            self.v1.add_to_collection(self.v1.GraphKeys.UPDATE_OPS, update)
        return h

    def conv(self, x, filters: int, kernel_size: int):
        width = x.shape[1]
        layer = self.keras.layers.Conv2D(
            filters, (kernel_size, 1), padding="same", activation="tanh", kernel_initializer=self.initializer(80),
            bias_initializer=self.keras.initializers.Constant(0.1), name="conv", dtype=self.dtype)
        return self.tf.reshape(layer(self.tf.reshape(x, [-1, width, 1, 1])), [-1, width * filters])

    def embedding(self, ids, vocab: int, dim: int):
        layer = self.keras.layers.Embedding(
            vocab, dim, embeddings_initializer=self.v1.random_normal_initializer(seed=self.seed * 100 + 99,
                                                                                dtype=self.dtype),
            name="emb", dtype=self.dtype)
        rows = layer(ids)
        return layer.embeddings, rows

    def dense(self, h, name: str, units: int, bias: bool, number: int):
        layer = self.keras.layers.Dense(
            units, activation="tanh", use_bias=bias, kernel_initializer=self.initializer(number),
            bias_initializer=self.keras.initializers.Constant(0.1), name=name, dtype=self.dtype)
        return layer(h)


def _global_step(tf, spec: Mapping[str, Any]):
    dtype = global_step_dtype(spec)
    if dtype is None:
        return None
    v1 = tf.compat.v1
    if dtype == "int64":
        return v1.train.get_or_create_global_step()
    return v1.get_variable("global_step", [], tf.int32, trainable=False, initializer=v1.zeros_initializer(),
                           collections=[v1.GraphKeys.GLOBAL_VARIABLES, v1.GraphKeys.GLOBAL_STEP])


def _learning_rate(tf, spec: Mapping[str, Any], global_step):
    """The optimizer's learning rate: a number, or a schedule on ``global_step``."""
    rate = spec["optimizer"]["learning_rate"]
    schedule = spec.get("schedule")
    if not schedule:
        return rate
    train = tf.compat.v1.train
    if schedule["name"] == "exponential_decay":
        return train.exponential_decay(rate, global_step, schedule["decay_steps"], schedule["decay_rate"],
                                       staircase=schedule["staircase"])
    boundaries = [tf.constant(b, global_step.dtype) for b in schedule["boundaries"]]
    return train.piecewise_constant(global_step, boundaries, [rate * scale for scale in schedule["scales"]])


def make_optimizer(optimizer: Mapping[str, Any], learning_rate: Any = None):
    """The ``tf.compat.v1.train`` optimizer that ``optimizer`` describes (``learning_rate``,
    a tensor for a schedule, replaces the spec's number when given)."""
    import tensorflow as tf

    class_name, _ = OPTIMIZERS[optimizer["name"]]
    hyperparameters = {k: v for k, v in optimizer.items() if k != "name"}
    if learning_rate is not None:
        hyperparameters["learning_rate"] = learning_rate
    if class_name.startswith("keras."):
        return getattr(tf.keras.optimizers.legacy, class_name.split(".", 1)[1])(**hyperparameters)
    return getattr(tf.compat.v1.train, class_name)(**hyperparameters)


def feed_dict(graph, feed: Mapping[str, np.ndarray]) -> dict:
    """Turn a name-keyed feed into a TensorFlow feed_dict for ``graph``."""
    return {graph.get_tensor_by_name(f"{name}:0"): value for name, value in feed.items()}

