"""Models as plain data: a JSON-serializable description that builds the same graph anywhere.

A model spec is a dict (the form the Hypothesis strategies generate, reproductions
store and every process reads)::

    {
      "dtype": "float32",                  # or "float64"
      "features": 3,                       # width of the input x
      "hidden": [4, 2],                    # dense layers (tanh), in order
      "bias": true,                        # dense layers have a bias
      "embedding": {"vocab": 6, "dim": 2}, # optional: ids -> rows, concatenated to x
      "scalar": true,                      # a trainable scalar multiplying the output
      "frozen": true,                      # a non-trainable scalar multiplying the output
      "global_step": true,
      "optimizer": {"name": "adam", "learning_rate": 0.01, ...},
      "seed": 7                            # initializer seeds derive from it
    }

The graph: ``h = concat(x, embedding_lookup(emb, ids))``, then ``h = tanh(h W_i + b_i)``
per hidden layer, ``prediction = (h W_out) * scale * frozen``, loss = mean squared error
against ``y``. Placeholders ``x``, ``ids`` (with an embedding) and ``y`` have a ``None``
batch dimension. Nothing here is random at run time (no dropout, no random ops), so the
model is inside the equivalence contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from autodist_verify.oracle import TrainModel

DTYPES = ("float32", "float64")

# Optimizer name -> (tf.compat.v1.train class name, allowed hyperparameters).
OPTIMIZERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sgd": ("GradientDescentOptimizer", ("learning_rate",)),
    "momentum": ("MomentumOptimizer", ("learning_rate", "momentum", "use_nesterov")),
    "adam": ("AdamOptimizer", ("learning_rate", "beta1", "beta2", "epsilon")),
    "adagrad": ("AdagradOptimizer", ("learning_rate", "initial_accumulator_value")),
    "rmsprop": ("RMSPropOptimizer", ("learning_rate", "decay", "momentum", "epsilon", "centered")),
}

_KEYS = {"dtype", "features", "hidden", "bias", "embedding", "scalar", "frozen", "global_step", "optimizer", "seed"}


class ModelSpecError(ValueError):
    """An invalid model spec; the message names the field."""


def validate(spec: Mapping[str, Any]) -> None:
    """Raise :class:`ModelSpecError` naming the first bad field of ``spec``."""
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise ModelSpecError(f"model spec: unknown field {unknown[0]!r}")
    if spec.get("dtype") not in DTYPES:
        raise ModelSpecError(f"model spec: field 'dtype' is {spec.get('dtype')!r}; expected one of {DTYPES}")
    if not isinstance(spec.get("features"), int) or spec["features"] < 1:
        raise ModelSpecError("model spec: field 'features' must be a positive integer")
    hidden = spec.get("hidden", [])
    if not isinstance(hidden, list) or any(not isinstance(w, int) or w < 1 for w in hidden):
        raise ModelSpecError("model spec: field 'hidden' must be a list of positive integers")
    embedding = spec.get("embedding")
    if embedding is not None and (
        not isinstance(embedding, Mapping) or set(embedding) != {"vocab", "dim"}
        or any(not isinstance(embedding[k], int) or embedding[k] < 1 for k in ("vocab", "dim"))
    ):
        raise ModelSpecError("model spec: field 'embedding' must be null or {vocab: int >= 1, dim: int >= 1}")
    optimizer = spec.get("optimizer")
    if not isinstance(optimizer, Mapping) or optimizer.get("name") not in OPTIMIZERS:
        raise ModelSpecError(f"model spec: field 'optimizer.name' must be one of {sorted(OPTIMIZERS)}")
    allowed = OPTIMIZERS[optimizer["name"]][1]
    extra = sorted(set(optimizer) - {"name", *allowed})
    if extra:
        raise ModelSpecError(f"model spec: field 'optimizer.{extra[0]}' is not a hyperparameter of {optimizer['name']}")


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


def feeds(spec: Mapping[str, Any], steps: int, batch: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Deterministic input batches, keyed by placeholder name (``x``, ``ids``, ``y``)."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(spec["dtype"])
    result = []
    for _ in range(steps):
        feed = {"x": rng.standard_normal((batch, spec["features"])).astype(dtype)}
        if spec.get("embedding"):
            feed["ids"] = rng.integers(0, spec["embedding"]["vocab"], size=batch).astype(np.int64)
        feed["y"] = rng.standard_normal((batch, 1)).astype(dtype)
        result.append(feed)
    return result


def feed_dict(graph, feed: Mapping[str, np.ndarray]) -> dict:
    """Turn a name-keyed feed into a TensorFlow feed_dict for ``graph``."""
    return {graph.get_tensor_by_name(f"{name}:0"): value for name, value in feed.items()}


def variables(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The model's variables without optimizer slots, in creation order, as plain data:
    ``{"name", "shape", "dtype", "trainable", "sparse_grad"}``."""
    dtype = spec["dtype"]
    result = []

    def add(name: str, shape: list[int], trainable: bool = True, sparse: bool = False, kind: str = dtype) -> None:
        result.append({"name": name, "shape": shape, "dtype": kind, "trainable": trainable, "sparse_grad": sparse})

    width = spec["features"]
    if spec.get("embedding"):
        add("emb", [spec["embedding"]["vocab"], spec["embedding"]["dim"]], sparse=True)
        width += spec["embedding"]["dim"]
    for i, units in enumerate(spec.get("hidden", [])):
        add(f"dense_{i}/kernel", [width, units])
        if spec.get("bias", True):
            add(f"dense_{i}/bias", [units])
        width = units
    add("out/kernel", [width, 1])
    if spec.get("scalar", False):
        add("scale", [])
    if spec.get("frozen", False):
        add("frozen", [], trainable=False)
    if spec.get("global_step", False):
        add("global_step", [], trainable=False, kind="int64")
    return result
