"""Models as plain data: a JSON-serializable description that builds the same graph anywhere
(:mod:`autodist_verify.model_graph` builds it; this module needs no TensorFlow).

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
