"""Hypothesis strategies for conformance cases: models, clusters, strategies, schedules.

Everything generated is plain JSON-serializable data (see ``autodist_verify.case``), so
a failing example can be written to a file and replayed in any process. Examples
shrink toward small models, one node without gpus, the ``PS`` builder and one step.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from autodist_verify import faults, model_spec
from autodist_verify.case import BUILDERS, Case, Setting
from cluster_sim import ResourceSpec

MAX_NODES = 3
MAX_GPUS = 2

_OPTIMIZER_HYPERPARAMETERS = {
    "sgd": {},
    "momentum": {"momentum": st.sampled_from([0.5, 0.9]), "use_nesterov": st.booleans()},
    "adam": {"beta1": st.sampled_from([0.9, 0.5]), "beta2": st.sampled_from([0.999, 0.9]),
             "epsilon": st.sampled_from([1e-8, 1e-3])},
    "adagrad": {"initial_accumulator_value": st.sampled_from([0.1, 1.0])},
    "rmsprop": {"decay": st.sampled_from([0.9, 0.5]), "momentum": st.sampled_from([0.0, 0.5]),
                "epsilon": st.sampled_from([1e-10, 1e-3]), "centered": st.booleans()},
    "adadelta": {"rho": st.sampled_from([0.95, 0.5]), "epsilon": st.sampled_from([1e-8, 1e-3])},
    # learning_rate_power stays at -0.5: other powers go through a kernel that is not
    # bit-stable across partitions (README), which would make most draws not applicable.
    "ftrl": {"initial_accumulator_value": st.sampled_from([0.1, 1.0]),
             "l1_regularization_strength": st.sampled_from([0.0, 0.01]),
             "l2_regularization_strength": st.sampled_from([0.0, 0.01])},
    "proximal_adagrad": {"initial_accumulator_value": st.sampled_from([0.1, 1.0]),
                         "l1_regularization_strength": st.sampled_from([0.0, 0.01]),
                         "l2_regularization_strength": st.sampled_from([0.0, 0.01])},
    # Keras 2's OptimizerV2 (iterations, hyperparameter variables)
    "keras_sgd": {"momentum": st.sampled_from([0.0, 0.5]), "nesterov": st.booleans()},
    "keras_adam": {"beta_1": st.sampled_from([0.9, 0.5]), "epsilon": st.sampled_from([1e-7, 1e-3])},
    "keras_rmsprop": {"rho": st.sampled_from([0.9, 0.5]), "momentum": st.sampled_from([0.0, 0.5]),
                      "centered": st.booleans()},
}


@st.composite
def optimizers(draw, dtypes: set[str] | None = None) -> dict[str, Any]:
    """An optimizer with its hyperparameters, for variables of ``dtypes`` (float32 by default)."""
    dtypes = dtypes or {"float32"}
    names = [n for n in _OPTIMIZER_HYPERPARAMETERS if not (n == "proximal_adagrad" and dtypes != {"float32"})]
    if dtypes & set(model_spec.LOW_PRECISION):
        names = list(model_spec.LOW_PRECISION_OPTIMIZERS)
    name = draw(st.sampled_from(sorted(names, key=lambda n: n != "sgd")))
    spec = {"name": name, "learning_rate": draw(st.sampled_from([0.1, 0.01, 0.5]))}
    for key, values in _OPTIMIZER_HYPERPARAMETERS[name].items():
        spec[key] = draw(values)
    return spec


_SCHEDULES = st.one_of(
    st.fixed_dictionaries({"name": st.just("exponential_decay"), "decay_steps": st.integers(1, 3),
                           "decay_rate": st.sampled_from([0.5, 0.9]), "staircase": st.booleans()}),
    st.fixed_dictionaries({"name": st.just("piecewise_constant"), "boundaries": st.just([1, 3]),
                           "scales": st.sampled_from([[1.0, 0.5, 0.1], [0.5, 1.0, 2.0]])}),
)


@st.composite
def models(draw) -> dict[str, Any]:
    """A model spec: dense layers (tf.compat.v1 or Keras 2), optional embedding (maybe
    tied to the output), convolution, batch norm, scalar, non-trainable and integer
    variables, low-precision and mixed dtypes, clipping, a learning-rate schedule, dropout
    (outside the equivalence contract: the oracle comparisons are skipped).

    The optional features shrink away (to absent), toward the smallest model."""
    # Low precision limits the optimizer to SGD or Momentum: one draw in three, so the
    # other optimizers keep their share of the ci budget.
    dtype = draw(st.sampled_from(["float32", "float64", "float32", "float64", "float16", "bfloat16"]))
    # A head of another dtype (one draw in four): one optimizer over two dtypes.
    head = draw(st.sampled_from([None, None, None, "float32" if dtype != "float32" else "float64"]))
    spec: dict[str, Any] = {
        "dtype": dtype,
        "features": draw(st.integers(1, 4)),
        "hidden": draw(st.lists(st.integers(1, 4), max_size=2)),
        "bias": draw(st.booleans()),
        "embedding": draw(st.none() | st.fixed_dictionaries(
            {"vocab": st.integers(1, 8), "dim": st.integers(1, 3)})),
        "scalar": draw(st.booleans()),
        "frozen": draw(st.booleans()),
        "global_step": draw(st.sampled_from([False, True, "int32"])),
        "optimizer": draw(optimizers({dtype, head or dtype})),
        "seed": draw(st.integers(0, 1000)),
    }
    if head:
        spec["head_dtype"] = head
    if draw(st.booleans()):
        spec["batch_norm"] = True
    if draw(st.booleans()):
        spec["conv"] = {"filters": draw(st.integers(1, 2)), "kernel": draw(st.integers(1, 3))}
    if spec["embedding"] and draw(st.booleans()):
        spec["tied"] = True
    control_flow = draw(st.sampled_from([None, *model_spec.CONTROL_FLOW]))
    if control_flow:
        spec["control_flow"] = control_flow
    counter = draw(st.sampled_from([None, "int32", "int64"]))
    if counter:
        spec["counter"] = counter
    clip_norm = draw(st.sampled_from([None, 0.1, 1.0]))
    if clip_norm:
        spec["clip_norm"] = clip_norm
    keras = model_spec.is_keras_optimizer(spec["optimizer"])  # takes no schedule or reference variables
    if spec["global_step"] and not keras and draw(st.booleans()):
        spec["schedule"] = draw(_SCHEDULES)
    # Reference variables are optional for an implementation (n/a if it declines them).
    if draw(st.booleans()):
        spec["keras_layers"] = True
    elif not keras and draw(st.integers(0, 4)) == 4:
        spec["reference_variables"] = True
    # Dropout takes the oracle's comparisons out (fine_tune becomes n/a): one draw in four.
    if draw(st.integers(0, 3)) == 3:
        spec["dropout"] = {"rate": draw(st.sampled_from([0.25, 0.5])), "seed": draw(st.integers(0, 100))}
    # A second optimizer for the output layer, of the tf.compat.v1 kind: one draw in four.
    body_trains = any(v["trainable"] and v["name"] not in model_spec.HEAD_VARIABLES
                      for v in model_spec.variables(spec))
    if body_trains and draw(st.integers(0, 3)) == 3:
        head_optimizer = draw(optimizers({model_spec.head_dtype(spec)}))
        if not model_spec.is_keras_optimizer(head_optimizer):
            spec["head_optimizer"] = head_optimizer
    if len(model_spec.variable_dtypes(spec)) > 1:  # clip_by_global_norm takes gradients of one dtype
        spec.pop("clip_norm", None)
    model_spec.validate(spec)
    return spec


@st.composite
def clusters(draw) -> dict[str, Any]:
    """A resource spec of 1-3 loopback nodes with 0-2 simulated gpus each; the first is chief."""
    gpus = draw(st.lists(st.integers(0, MAX_GPUS), min_size=1, max_size=MAX_NODES))
    nodes = []
    for i, count in enumerate(gpus):
        node: dict[str, Any] = {"address": f"127.0.0.{i + 1}"}
        if count:
            node["gpus"] = list(range(count))
        if i == 0:
            node["chief"] = True
        nodes.append(node)
    return {"nodes": nodes}


@st.composite
def custom_strategies(draw, model: dict[str, Any], cluster: dict[str, Any]) -> dict[str, Any]:
    """A hand-made strategy: per variable a synchronizer, maybe a partition along any
    axis into any sizes, and parameter-server devices for each part."""
    spec = ResourceSpec.from_dict(cluster, source="generated cluster")
    ps_devices = [d.name for d in spec.ps_devices]
    variables = {}
    for variable in model_spec.variables(model):
        shape = variable["shape"]
        if not variable["trainable"]:  # the train op may update it: one copy, on a PS
            variables[variable["name"]] = {"synchronizer": "ps", "devices": [draw(st.sampled_from(ps_devices))]}
            continue
        config: dict[str, Any] = {"synchronizer": draw(st.sampled_from(["ps", "allreduce"]))}
        splittable = [axis for axis, size in enumerate(shape) if size >= 2]
        parts = 1
        # Partitioned three draws in four: partitions are where checkpoint bugs hide, and
        # this column is the only one whose partitions take any axis and any sizes.
        if splittable and draw(st.integers(0, 3)) > 0:
            # The last axis first: the builders partition along axis 0 already.
            axis = draw(st.sampled_from(splittable[::-1]))
            sizes = draw(_compositions(shape[axis]))
            config["partition"] = {"axis": axis, "sizes": sizes}
            parts = len(sizes)
        if config["synchronizer"] == "ps":
            config["devices"] = draw(st.lists(st.sampled_from(ps_devices), min_size=parts, max_size=parts))
        variables[variable["name"]] = config
    return {
        "replicas": [d.name for d in spec.replica_devices],
        "aux_device": draw(st.sampled_from(ps_devices)),
        "variables": variables,
    }


@st.composite
def _compositions(draw, total: int) -> list[int]:
    """Two or more positive sizes summing to ``total`` (>= 2)."""
    cuts = draw(st.sets(st.integers(1, total - 1), min_size=1, max_size=min(3, total - 1)))
    bounds = [0, *sorted(cuts), total]
    return [b - a for a, b in zip(bounds, bounds[1:])]


STRATEGY_LABELS = (*BUILDERS, "custom")

# Saves are half the operations, so that programs often save more checkpoints than
# max_to_keep keeps. sampled_from, not one_of: Hypothesis draws one_of's first branch
# far more often than the others (measured over 300 draws: 111 programs without a save).
_OPERATION_KINDS = ("train", "save", "save", "save", "restore_latest", "delete_oldest")


@st.composite
def _saver_operations(draw) -> list[Any]:
    kind = draw(st.sampled_from(_OPERATION_KINDS))
    return ["save", draw(st.booleans())] if kind == "save" else [kind]


@st.composite
def saver_programs(draw) -> dict[str, Any]:
    """Options for both Savers (``max_to_keep``, retention by age...) and up to 8
    operations (see ``autodist_verify.case``)."""
    options = {
        "max_to_keep": draw(st.sampled_from([1, 2, 5])),
        "pad_step_number": draw(st.booleans()),
        "save_relative_paths": draw(st.booleans()),
        "sharded": draw(st.booleans()),
    }
    # Besides TensorFlow's default (10000 hours: retire by max_to_keep only), an interval
    # so short (0.36 ms) that every checkpoint max_to_keep retires is kept on disk.
    keep_hours = draw(st.sampled_from([None, 1e-7]))
    if keep_hours:
        options["keep_checkpoint_every_n_hours"] = keep_hours
    # The length is drawn first: st.lists drawn after a large case comes out mostly
    # empty (measured: 16 of 32 ci examples), and the programs must save repeatedly.
    length = draw(st.integers(3, 8))
    return {"options": options, "operations": [draw(_saver_operations()) for _ in range(length)]}


@st.composite
def strategies_for(draw, model: dict[str, Any], cluster: dict[str, Any], label: str | None = None) -> dict[str, Any]:
    """An AutoDist builder by name, or a hand-made strategy (``label`` fixes which)."""
    choice = label or draw(st.sampled_from(STRATEGY_LABELS))
    if choice == "custom":
        return {"custom": draw(custom_strategies(model, cluster))}
    return {"builder": choice}


@st.composite
def training_settings(draw, model: dict[str, Any], label: str | None = None) -> Setting:
    cluster = draw(clusters())
    return Setting(cluster=cluster, strategy=draw(strategies_for(model, cluster, label)))


@st.composite
def cases(draw, label: str | None = None) -> Case:
    """A model, where it trains (with strategy ``label`` if given), where it is
    restored, a schedule of k and m steps, and whether the Saver is sharded.

    The global batch holds at least one example per replica of either setting and
    need not divide by either count: uneven splits follow the contract too.
    """
    model = draw(models())
    source = draw(training_settings(model, label))
    target = draw(training_settings(model))
    unit = math.lcm(source.replicas, target.replicas)
    return Case(
        model=model, source=source, target=target,
        k=draw(st.integers(1, 3)), m=draw(st.integers(1, 3)),
        batch=draw(st.integers(max(source.replicas, target.replicas), 2 * unit)),
        data_seed=draw(st.integers(0, 2**16)),
        sharded=draw(st.booleans()),
    )


@st.composite
def fault_schedules(draw, cluster: dict[str, Any], kind: str | None = None) -> dict[str, Any]:
    """A fault for ``crash_consistency`` (``autodist_verify.faults``): a node of
    ``cluster`` by task index (its nodes are in task order, the chief first), a kind
    (``kind`` if given) and a moment that kind can hit at that node."""
    kind = kind or draw(st.sampled_from(faults.KINDS))
    node = draw(st.integers(0, len(cluster["nodes"]) - 1))
    moments = [m for m in faults.MOMENTS_OF[kind] if node == 0 or m not in faults.CHIEF_ONLY]
    return {"node": node, "kind": kind, "moment": draw(st.sampled_from(moments))}


@st.composite
def crash_cases(draw, kind: str | None = None) -> Case:
    """A case of :func:`cases` with a fault (of ``kind`` if given) in its training setting,
    whose model the oracle follows bit for bit through any layout: no dropout, no TF1
    reference variables (an optional feature), no optimizer kernel that is unstable
    across partitions. Neither changes the model's variables, so the strategy stays valid."""
    case = draw(cases())
    model = {key: value for key, value in case.model.items() if key not in ("dropout", "reference_variables")}
    case = replace(case, model=model, target=case.source)  # the target setting is not used
    assume(not case.depends_on_layout)
    return replace(case, fault=draw(fault_schedules(dict(case.source.cluster), kind)))
