"""Models as plain data: a JSON-serializable description that builds the same graph anywhere
(:mod:`autodist_verify.model_graph` builds it; this module needs no TensorFlow).

A model spec is a dict (the form the Hypothesis strategies generate, reproductions
store and every process reads)::

    {
      "dtype": "float32",                  # or "float64", "float16", "bfloat16"
      "features": 3,                       # width of the input x
      "hidden": [4, 2],                    # dense layers (tanh), in order
      "bias": true,                        # dense layers have a bias
      "embedding": {"vocab": 6, "dim": 2}, # optional: ids -> rows, concatenated to x
      "scalar": true,                      # a trainable scalar multiplying the output
      "frozen": true,                      # a non-trainable scalar multiplying the output
      "global_step": true,                 # or "int32" / "int64" (true: int64)
      "optimizer": {"name": "adam", "learning_rate": 0.01, ...},
      "seed": 7,                           # initializer seeds derive from it
      # optional, each absent (or null/false) by default:
      "batch_norm": true,                  # batch norm of x, moving averages updated by the train op
      "tied": true,                        # the embedding table is also an output projection
      "counter": "int32",                  # an integer variable the train op increments
      "clip_norm": 1.0,                    # tf.clip_by_global_norm of the gradients
      "schedule": {"name": "exponential_decay", "decay_steps": 2, "decay_rate": 0.5,
                   "staircase": false},    # or {"name": "piecewise_constant",
                                           #     "boundaries": [1, 3], "scales": [1, 0.5, 0.1]}
      "dropout": {"rate": 0.5, "seed": 3}, # dropout before the output layer (outside the contract)
      "reference_variables": true,         # tf.compat.v1 reference variables (optional feature)
      "head_dtype": "float64",             # the output layer's dtype (x, y: the body's and the head's)
      "conv": {"filters": 2, "kernel": 2}, # a convolution over the features, before the dense layers
      "keras_layers": true,                # layers built with Keras 2 (tf_keras) instead of tf.compat.v1
      "control_flow": "cond",              # or "while": control flow reading a variable, after the dense layers
      "head_optimizer": {"name": "adam", "learning_rate": 0.1}  # a second optimizer for the output layer
    }

The graph: ``x`` is batch-normalized (``bn/gamma``, ``bn/beta`` trained;
``bn/moving_mean``, ``bn/moving_variance`` updated from the batch's moments through
``UPDATE_OPS``, which the train op depends on), ``h = concat(x, embedding_lookup(emb,
ids))``, then ``h = tanh(h W_i + b_i)`` per hidden layer, ``prediction = (h W_out) * scale
* frozen``, plus, with ``tied``, the mean over the vocabulary of ``rows emb^T`` (the
looked-up rows against the whole table: ``emb`` is read by two layers and its gradient is
dense); loss = mean squared error against ``y``. The gradients are clipped by their
global norm when ``clip_norm`` is set; the learning rate follows ``schedule`` on
``global_step`` (required then); ``counter`` (``steps_seen``) is incremented by one per
step. Placeholders ``x``, ``ids`` (with an embedding) and ``y`` have a ``None`` batch
dimension. Without ``dropout`` nothing is random at run time, so the model is inside
the equivalence contract; with it (``tf.nn.dropout`` with an op seed, before the output
layer) each replica draws its own mask, and :func:`outside_contract` says why no oracle
applies.

With ``conv``, ``x`` (after batch norm) is seen as a column image ``[batch, features, 1,
1]`` and convolved (``conv/kernel`` ``[kernel, 1, 1, filters]``, ``conv/bias``, same
padding, tanh), then flattened back to ``features * filters`` values. With
``head_dtype``, the output layer (``out/kernel``, ``scale``, ``frozen``, ``y`` and the
loss) has that dtype and the body's output is cast to it: one optimizer updates
variables of two dtypes. Low-precision models (``float16``, ``bfloat16``) train with
``sgd`` or ``momentum`` only: other CPU kernels either do not exist for them or are not
bit-stable across partition boundaries (README, kernel stability).

With ``control_flow``, ``flow/kernel`` (square, the width of the last dense layer) is
read inside control flow after the dense layers (TensorFlow 2's functional ``If`` /
``While`` ops, whose functions take the variable's handle): ``"cond"`` computes
``tanh(h flow)`` when the replica's batch sums to more than zero and ``tanh(h flow) / 2``
otherwise (so replicas of one step may take different branches); ``"while"`` applies
``h = tanh(h flow)`` twice in a ``tf.while_loop``.

With ``head_optimizer`` (a ``tf.compat.v1.train`` optimizer) the output layer's
trainable variables (``out/kernel``, ``scale``) are updated by that second optimizer, the
rest by ``optimizer`` (which counts ``global_step``); the train op groups both steps, as
programs with parameter groups do. Two optimizers of one class keep separate state
(``beta1_power`` and ``beta1_power_1``).

With ``keras_layers`` the same layers are Keras 2 layers (``Dense``, ``Conv2D``,
``Embedding``, ``BatchNormalization``, whose moving-average updates the graph adds to
``UPDATE_OPS``, as ``model.updates`` users do). Their variables keep the names above,
except the embedding table, which Keras calls ``emb/embeddings``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np

DTYPES = ("float32", "float64", "float16", "bfloat16")
LOW_PRECISION = ("float16", "bfloat16")
LOW_PRECISION_OPTIMIZERS = ("sgd", "momentum")

# Optimizer name -> (tf.compat.v1.train class name, or "keras.<class>" for Keras 2's
# OptimizerV2 in tf.keras.optimizers.legacy; allowed hyperparameters).
OPTIMIZERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sgd": ("GradientDescentOptimizer", ("learning_rate",)),
    "momentum": ("MomentumOptimizer", ("learning_rate", "momentum", "use_nesterov")),
    "adam": ("AdamOptimizer", ("learning_rate", "beta1", "beta2", "epsilon")),
    "adagrad": ("AdagradOptimizer", ("learning_rate", "initial_accumulator_value")),
    "rmsprop": ("RMSPropOptimizer", ("learning_rate", "decay", "momentum", "epsilon", "centered")),
    "adadelta": ("AdadeltaOptimizer", ("learning_rate", "rho", "epsilon")),
    "ftrl": ("FtrlOptimizer", ("learning_rate", "learning_rate_power", "initial_accumulator_value",
                               "l1_regularization_strength", "l2_regularization_strength")),
    "proximal_adagrad": ("ProximalAdagradOptimizer", ("learning_rate", "initial_accumulator_value",
                                                      "l1_regularization_strength", "l2_regularization_strength")),
    "keras_sgd": ("keras.SGD", ("learning_rate", "momentum", "nesterov")),
    "keras_adam": ("keras.Adam", ("learning_rate", "beta_1", "beta_2", "epsilon")),
    "keras_rmsprop": ("keras.RMSprop", ("learning_rate", "rho", "momentum", "epsilon", "centered")),
}

# The float32 hyperparameter variables a Keras 2 OptimizerV2 creates beside its slots
# and ``iter`` (named CLASS/NAME, in this order): model variables to a strategy.
KERAS_HYPERPARAMETER_VARIABLES = {
    "keras_sgd": ("decay", "learning_rate", "momentum"),
    "keras_adam": ("beta_1", "beta_2", "decay", "learning_rate"),
    "keras_rmsprop": ("decay", "learning_rate", "momentum", "rho"),
}


def is_keras_optimizer(optimizer: Mapping[str, Any]) -> bool:
    return OPTIMIZERS[optimizer["name"]][0].startswith("keras.")


def has_slots(optimizer: Mapping[str, Any]) -> bool:
    """Whether ``optimizer`` keeps per-variable slots (plain SGD does not)."""
    if optimizer["name"] == "sgd":
        return False
    return not (optimizer["name"] == "keras_sgd" and not optimizer.get("momentum"))


def optimizer_of(spec: Mapping[str, Any], variable: str) -> Mapping[str, Any]:
    """The optimizer that updates trainable ``variable`` of model ``spec``."""
    head: Mapping[str, Any] | None = spec.get("head_optimizer")
    main: Mapping[str, Any] = spec["optimizer"]
    return head if head and variable in HEAD_VARIABLES else main

INT_DTYPES = ("int32", "int64")
SCHEDULES = ("exponential_decay", "piecewise_constant")

_KEYS = {"dtype", "features", "hidden", "bias", "embedding", "scalar", "frozen", "global_step", "optimizer", "seed",
         "batch_norm", "tied", "counter", "clip_norm", "schedule", "dropout", "reference_variables",
         "head_dtype", "conv", "keras_layers", "control_flow", "head_optimizer"}
CONTROL_FLOW = ("cond", "while")
# The trainable variables ``head_optimizer`` updates.
HEAD_VARIABLES = ("out/kernel", "scale")


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
    _validate_optimizer("optimizer", spec.get("optimizer"), sorted(OPTIMIZERS))
    optimizer: Mapping[str, Any] = spec["optimizer"]
    if is_keras_optimizer(optimizer) and (spec.get("schedule") or spec.get("reference_variables")):
        raise ModelSpecError(f"model spec: field 'optimizer.name': {optimizer['name']} (Keras 2) takes neither "
                             "a 'schedule' on global_step nor 'reference_variables' here")
    if optimizer["name"] == "proximal_adagrad" and {spec["dtype"], head_dtype(spec)} != {"float32"}:
        raise ModelSpecError("model spec: field 'optimizer.name': TensorFlow's ProximalAdagradOptimizer "
                             "builds float32 updates only (its learning rate is not cast to the variable's dtype)")
    if spec.get("global_step") not in (None, False, True, *INT_DTYPES):
        raise ModelSpecError(f"model spec: field 'global_step' must be true, false or one of {INT_DTYPES}")
    if spec.get("counter") not in (None, *INT_DTYPES):
        raise ModelSpecError(f"model spec: field 'counter' must be null or one of {INT_DTYPES}")
    if spec.get("tied") and not embedding:
        raise ModelSpecError("model spec: field 'tied' needs an 'embedding' to tie")
    clip_norm = spec.get("clip_norm")
    if clip_norm is not None and (not isinstance(clip_norm, (int, float)) or clip_norm <= 0):
        raise ModelSpecError("model spec: field 'clip_norm' must be null or a positive number")
    _validate_schedule(spec)
    if not isinstance(spec.get("reference_variables", False), bool):
        raise ModelSpecError("model spec: field 'reference_variables' must be true or false")
    conv = spec.get("conv")
    if conv is not None and (
        not isinstance(conv, Mapping) or set(conv) != {"filters", "kernel"}
        or any(not isinstance(conv[k], int) or conv[k] < 1 for k in ("filters", "kernel"))
    ):
        raise ModelSpecError("model spec: field 'conv' must be null or {filters: int >= 1, kernel: int >= 1}")
    if not isinstance(spec.get("keras_layers", False), bool):
        raise ModelSpecError("model spec: field 'keras_layers' must be true or false")
    if spec.get("control_flow") not in (None, *CONTROL_FLOW):
        raise ModelSpecError(f"model spec: field 'control_flow' must be null or one of {CONTROL_FLOW}")
    if spec.get("keras_layers") and spec.get("reference_variables"):
        raise ModelSpecError("model spec: field 'keras_layers': Keras 2 layers make resource variables only; "
                             "drop 'reference_variables'")
    _validate_head_optimizer(spec)
    _validate_precision(spec)  # last: it reads the model's variables
    dropout = spec.get("dropout")
    if dropout is not None and (
        not isinstance(dropout, Mapping) or set(dropout) != {"rate", "seed"}
        or not isinstance(dropout["rate"], (int, float)) or not 0 < dropout["rate"] < 1
        or not isinstance(dropout["seed"], int)
    ):
        raise ModelSpecError("model spec: field 'dropout' must be null or {rate: 0 < number < 1, seed: int}")
    _validate_value_types(spec)


_FLAGS = ("bias", "scalar", "frozen", "batch_norm", "tied")  # true or false (null: absent)
_BOOLEAN_HYPERPARAMETERS = ("use_nesterov", "centered", "nesterov")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)  # JSON true is not 1


def _validate_value_types(spec: Mapping[str, Any]) -> None:
    """The types of the flags, the seed, the optimizer's hyperparameters and the
    schedule's values: a wrong one would otherwise reach TensorFlow, where it reads as
    the implementation's failure."""
    for key in _FLAGS:
        if spec.get(key) is not None and not isinstance(spec[key], bool):
            raise ModelSpecError(f"model spec: field {key!r} must be true or false, got {spec[key]!r}")
    if "seed" in spec and (not isinstance(spec["seed"], int) or isinstance(spec["seed"], bool)):
        raise ModelSpecError(f"model spec: field 'seed' must be an integer, got {spec['seed']!r}")
    optimizer = spec["optimizer"]
    if "learning_rate" not in optimizer:
        raise ModelSpecError("model spec: field 'optimizer.learning_rate' is missing")
    for key, value in optimizer.items():
        if key in _BOOLEAN_HYPERPARAMETERS and not isinstance(value, bool):
            raise ModelSpecError(f"model spec: field 'optimizer.{key}' must be true or false, got {value!r}")
        if key not in (*_BOOLEAN_HYPERPARAMETERS, "name") and not _is_number(value):
            raise ModelSpecError(f"model spec: field 'optimizer.{key}' must be a number, got {value!r}")
    schedule = spec.get("schedule") or {}
    if "decay_rate" in schedule and not _is_number(schedule["decay_rate"]):
        raise ModelSpecError("model spec: field 'schedule.decay_rate' must be a number")
    if "staircase" in schedule and not isinstance(schedule["staircase"], bool):
        raise ModelSpecError("model spec: field 'schedule.staircase' must be true or false")
    if any(not _is_number(scale) for scale in schedule.get("scales", [])):
        raise ModelSpecError("model spec: field 'schedule.scales' must be a list of numbers")


def _validate_optimizer(field: str, optimizer: Any, names: list[str]) -> None:
    """An optimizer field: a known name among ``names`` and only its hyperparameters."""
    if not isinstance(optimizer, Mapping) or not isinstance(optimizer.get("name"), str) \
            or optimizer["name"] not in names:
        raise ModelSpecError(f"model spec: field '{field}.name' must be one of {names}")
    extra = sorted(set(optimizer) - {"name", *OPTIMIZERS[optimizer["name"]][1]})
    if extra:
        raise ModelSpecError(f"model spec: field '{field}.{extra[0]}' is not a hyperparameter of {optimizer['name']}")


def _validate_head_optimizer(spec: Mapping[str, Any]) -> None:
    head = spec.get("head_optimizer")
    if head is None:
        return
    _validate_optimizer("head_optimizer", head,
                        sorted(n for n, (cls, _) in OPTIMIZERS.items() if not cls.startswith("keras.")))
    if head["name"] == "proximal_adagrad" and head_dtype(spec) != "float32":
        raise ModelSpecError("model spec: field 'head_optimizer.name': ProximalAdagrad builds float32 updates only")
    if head_dtype(spec) in LOW_PRECISION and head["name"] not in LOW_PRECISION_OPTIMIZERS:
        raise ModelSpecError(f"model spec: field 'head_optimizer.name': {head['name']} with {head_dtype(spec)} "
                             f"variables; low-precision models train with {' or '.join(LOW_PRECISION_OPTIMIZERS)} only")
    if not any(v["trainable"] and v["name"] not in HEAD_VARIABLES for v in variables(spec)):
        raise ModelSpecError("model spec: field 'head_optimizer': the model has no trainable variable outside the "
                             f"output layer {HEAD_VARIABLES} for 'optimizer' to update")


def variable_dtypes(spec: Mapping[str, Any]) -> set[str]:
    """The dtypes of the model's float variables."""
    return {v["dtype"] for v in variables(spec) if not v["dtype"].startswith("int")}


def _validate_precision(spec: Mapping[str, Any]) -> None:
    dtypes = variable_dtypes(spec)
    if spec.get("head_dtype") is not None and spec["head_dtype"] not in DTYPES:
        raise ModelSpecError(f"model spec: field 'head_dtype' is {spec['head_dtype']!r}; expected one of {DTYPES}")
    low = sorted(dtypes & set(LOW_PRECISION))
    if low and spec["optimizer"]["name"] not in LOW_PRECISION_OPTIMIZERS:
        raise ModelSpecError(
            f"model spec: field 'optimizer.name': {spec['optimizer']['name']} with {low[0]} variables; "
            f"low-precision models train with {' or '.join(LOW_PRECISION_OPTIMIZERS)} only (TensorFlow's other "
            "CPU kernels are missing for them or not bit-stable across partitions)")
    if len(dtypes) > 1 and spec.get("clip_norm") is not None:
        raise ModelSpecError("model spec: field 'clip_norm': tf.clip_by_global_norm needs gradients of one "
                             f"dtype, and this model has {' and '.join(sorted(dtypes))}")


def head_dtype(spec: Mapping[str, Any]) -> str:
    """The dtype of the output layer, ``y`` and the loss (the model's dtype by default)."""
    return str(spec.get("head_dtype") or spec["dtype"])


def optional_features(spec: Mapping[str, Any]) -> list[str]:
    """The graph features of the model an implementation may decline (by raising
    ``NotImplementedError``; the suite then reports the case not applicable):
    ``reference_variables``, TF1's ``RefVariable`` instead of resource variables."""
    return ["reference variables"] if spec.get("reference_variables") else []


def outside_contract(spec: Mapping[str, Any]) -> str | None:
    """Why the model's training cannot equal the single-device oracle's, or None."""
    if spec.get("dropout"):
        return ("stateful random ops (dropout): each replica draws its own mask, so no "
                "single-device step can match the distributed one")
    return None


def _validate_schedule(spec: Mapping[str, Any]) -> None:
    schedule = spec.get("schedule")
    if schedule is None:
        return
    if not isinstance(schedule, Mapping) or schedule.get("name") not in SCHEDULES:
        raise ModelSpecError(f"model spec: field 'schedule.name' must be one of {SCHEDULES}")
    if not spec.get("global_step"):
        raise ModelSpecError("model spec: field 'schedule' needs 'global_step', which it reads")
    if schedule["name"] == "exponential_decay":
        if set(schedule) != {"name", "decay_steps", "decay_rate", "staircase"}:
            raise ModelSpecError("model spec: field 'schedule' (exponential_decay) needs exactly "
                                 "decay_steps, decay_rate and staircase")
        if not isinstance(schedule["decay_steps"], int) or schedule["decay_steps"] < 1:
            raise ModelSpecError("model spec: field 'schedule.decay_steps' must be a positive integer")
    else:
        boundaries, scales = schedule.get("boundaries"), schedule.get("scales")
        if set(schedule) != {"name", "boundaries", "scales"} or not isinstance(boundaries, list) \
                or not isinstance(scales, list) or len(scales) != len(boundaries) + 1:
            raise ModelSpecError("model spec: field 'schedule' (piecewise_constant) needs boundaries "
                                 "and one more scale than boundaries")
        if boundaries != sorted(set(boundaries)) or any(not isinstance(b, int) for b in boundaries):
            raise ModelSpecError("model spec: field 'schedule.boundaries' must be increasing integers")


def global_step_dtype(spec: Mapping[str, Any]) -> str | None:
    """The dtype of the model's ``global_step``, or None without one."""
    value = spec.get("global_step")
    if not value:
        return None
    return "int64" if value is True else str(value)


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a model dtype name (``bfloat16`` is ml_dtypes', as TensorFlow's)."""
    if name == "bfloat16":
        return np.dtype(ml_dtypes.bfloat16)  # type: ignore[no-any-return]  # ml_dtypes has no stubs
    return np.dtype(name)


def feeds(spec: Mapping[str, Any], steps: int, batch: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Deterministic input batches, keyed by placeholder name (``x``, ``ids``, ``y``)."""
    rng = np.random.default_rng(seed)
    dtype, head = numpy_dtype(spec["dtype"]), numpy_dtype(head_dtype(spec))
    result = []
    for _ in range(steps):
        feed = {"x": rng.standard_normal((batch, spec["features"])).astype(dtype)}
        if spec.get("embedding"):
            feed["ids"] = rng.integers(0, spec["embedding"]["vocab"], size=batch).astype(np.int64)
        feed["y"] = rng.standard_normal((batch, 1)).astype(head)
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
    if spec.get("batch_norm"):
        # Keras's BatchNormalization keeps float32 parameters for low-precision inputs.
        bn = "float32" if spec.get("keras_layers") and dtype in LOW_PRECISION else dtype
        add("bn/gamma", [width], kind=bn)
        add("bn/beta", [width], kind=bn)
        add("bn/moving_mean", [width], trainable=False, kind=bn)
        add("bn/moving_variance", [width], trainable=False, kind=bn)
    conv = spec.get("conv")
    if conv:
        add("conv/kernel", [conv["kernel"], 1, 1, conv["filters"]])
        add("conv/bias", [conv["filters"]])
        width *= conv["filters"]
    if spec.get("embedding"):
        table = "emb/embeddings" if spec.get("keras_layers") else "emb"
        add(table, [spec["embedding"]["vocab"], spec["embedding"]["dim"]], sparse=not spec.get("tied"))
        width += spec["embedding"]["dim"]
    for i, units in enumerate(spec.get("hidden", [])):
        add(f"dense_{i}/kernel", [width, units])
        if spec.get("bias", True):
            add(f"dense_{i}/bias", [units])
        width = units
    if spec.get("control_flow"):
        add("flow/kernel", [width, width])
    head = head_dtype(spec)
    add("out/kernel", [width, 1], kind=head)
    if spec.get("scalar", False):
        add("scale", [], kind=head)
    if spec.get("frozen", False):
        add("frozen", [], trainable=False, kind=head)
    if spec.get("counter"):
        add("steps_seen", [], trainable=False, kind=spec["counter"])
    step_dtype = global_step_dtype(spec)
    if step_dtype:
        add("global_step", [], trainable=False, kind=step_dtype)
    optimizer = spec["optimizer"]["name"]
    for hyperparameter in KERAS_HYPERPARAMETER_VARIABLES.get(optimizer, ()):
        class_name = OPTIMIZERS[optimizer][0].split(".", 1)[1]
        add(f"{class_name}/{hyperparameter}", [], trainable=False, kind="float32")
    return result
