"""One conformance case as plain data: model, cluster, strategy, schedule — and its JSON file.

A case is what a property runs on and what a failing property writes as its
reproduction (``autodist-verify replay FILE`` runs it again)::

    {
      "format": "autodist-verify/case/v1",
      "model": {...},                       # see autodist_verify.model_spec
      "cluster": {"nodes": [...]},          # an AutoDist resource spec
      "strategy": {"builder": "PartitionedPS"}   # or {"custom": {...strategy JSON...}}
      "target": {"cluster": {...}, "strategy": {...}},  # the other setting restored into
      "schedule": {"k": 2, "m": 1, "batch": 6, "data_seed": 3, "sharded": false}
    }

``format`` is optional when reading (always written); a reproduction also names its
``property``. Any other top-level field, or any other ``schedule`` field, is an error.
``k``, ``m`` and ``data_seed`` are integers >= 0, ``batch`` an integer >= 1.
``sharded`` is the implementation Saver's ``sharded`` argument (optional, default
false). An optional ``saver_program`` is what the ``saver_api`` property runs: the
options both Savers are built with and a list of operations, each one of
``["train"]``, ``["save", WITH_STEP]``, ``["restore_latest"]``, ``["delete_oldest"]``::

    "saver_program": {"options": {"max_to_keep": 2, "pad_step_number": false,
                                  "save_relative_paths": false, "sharded": false,
                                  "keep_checkpoint_every_n_hours": 1e-07},  # optional
                      "operations": [["train"], ["save", true], ["restore_latest"]]}

An optional ``fault`` is what the ``crash_consistency`` property injects
(:mod:`autodist_verify.faults`): a node of ``cluster`` by task index (the chief is 0,
the other nodes follow in file order), a kind and a moment::

    "fault": {"node": 1, "kind": "kill", "moment": "save_data"}

``kind`` is ``kill`` or ``pause`` (moments ``step``, ``save_data``, ``restore``) or
``disk_full`` (``save_data``, and ``save_after_data`` for the chief's node only).

``batch`` is the global batch of every step: at least the replica count of both
settings; each replica gets its ``np.array_split`` piece (the equivalence contract).
Custom strategies use the suite's strategy JSON format (``autodist_verify.strategy_format``)
(AutoDist's per-variable synchronizer, partition and devices), which any implementation
under test receives through ``AutoDist(strategy=...)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autodist_verify import faults, model_spec
from autodist_verify.strategy_format import Strategy, StrategyError
from cluster_sim import ResourceSpec

FORMAT = "autodist-verify/case/v1"
SAVER_OPTIONS = {"max_to_keep": int, "pad_step_number": bool, "save_relative_paths": bool, "sharded": bool}
# Optional Saver options (absent: TensorFlow's default).
OPTIONAL_SAVER_OPTIONS = {"keep_checkpoint_every_n_hours": float}
SAVER_OPERATIONS = {"train": 0, "save": 1, "restore_latest": 0, "delete_oldest": 0}  # name: argument count
# Top-level fields: required ones, then optional ones ("property": the reproduction's property).
REQUIRED_FIELDS = ("model", "cluster", "strategy", "target", "schedule")
OPTIONAL_FIELDS = ("format", "property", "saver_program", "fault")
SCHEDULE_MINIMUM = {"k": 0, "m": 0, "batch": 1, "data_seed": 0}  # the integer fields of 'schedule'

# AutoDist's strategy builders, by the names of its API.
BUILDERS = ("PS", "PSLoadBalancing", "PartitionedPS", "UnevenPartitionedPS", "AllReduce", "PartitionedAR", "Parallax")


class CaseError(ValueError):
    """An invalid case file; the message names the file and the field."""


def _custom_layout_features(strategy: Mapping[str, Any], model: Mapping[str, Any]) -> list[str]:
    """Layout labels of a hand-made strategy's partitions (of ``model``'s variables)."""
    found = []
    for name, config in strategy.get("custom", {}).get("variables", {}).items():
        partition = config.get("partition")
        if not partition:
            continue
        if partition["axis"] != 0:
            found.append("partition along axis > 0")
            if model_spec.has_slots(model_spec.optimizer_of(model, name)):
                found.append("partition along axis > 0 of a variable with slots")
        if len(set(partition["sizes"])) > 1:
            found.append("uneven partition")
        devices = config.get("devices", [])
        if devices != sorted(devices):
            found.append("parts on tasks out of offset order")
    return found


def _unstable_kernel(model: Mapping[str, Any]) -> str | None:
    """The optimizer kernel of ``model`` that is not bit-stable across partition
    boundaries (measured on TensorFlow 2.21; see :meth:`Case.not_applicable`), or None."""
    variables = model_spec.variables(model)
    head = model.get("head_optimizer")
    updated_by = [(model["optimizer"], {v["dtype"] for v in variables
                                        if not (head and v["name"] in model_spec.HEAD_VARIABLES)})]
    if head:
        updated_by.append((head, {model_spec.head_dtype(model)}))
    for optimizer, dtypes in updated_by:
        if optimizer["name"] in ("adagrad", "proximal_adagrad", "adadelta") and "float32" in dtypes:
            return f"float32 {optimizer['name']}"
        if optimizer["name"] == "ftrl" and optimizer.get("learning_rate_power", -0.5) != -0.5:
            return f"ftrl (learning_rate_power {optimizer['learning_rate_power']})"
    return None


@dataclass(frozen=True)
class Setting:
    """A cluster and a strategy for it."""

    cluster: Mapping[str, Any]
    strategy: Mapping[str, Any]

    @property
    def label(self) -> str:
        """The strategy's column in the conformance matrix: the builder's name or ``custom``."""
        return str(self.strategy.get("builder", "custom"))

    @property
    def resource_spec(self) -> ResourceSpec:
        return ResourceSpec.from_dict(self.cluster, source="case cluster")

    @property
    def replicas(self) -> int:
        return len(self.resource_spec.replica_devices)


@dataclass(frozen=True)
class Case:
    """A model, the setting it trains in, the setting it is restored into, a schedule."""

    model: Mapping[str, Any]
    source: Setting
    target: Setting
    k: int
    m: int
    batch: int
    data_seed: int
    sharded: bool = False
    saver_program: Mapping[str, Any] | None = None
    fault: Mapping[str, Any] | None = None

    def feeds(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The k batches before the save and the m batches after it."""
        steps = model_spec.feeds(self.model, self.k + self.m, self.batch, self.data_seed)
        return steps[: self.k], steps[self.k:]

    @property
    def depends_on_layout(self) -> bool:
        """Whether :meth:`not_applicable` needs the layout: for the optimizers whose
        TensorFlow kernel is not bit-stable across partition boundaries."""
        return _unstable_kernel(self.model) is not None

    def not_applicable(self, setting: Setting, partitioned: Iterable[str] | None) -> str | None:
        """Why bit-identical training cannot hold for this case in ``setting``, given the
        variables the implementation reports it stored in more than one part
        (``partitioned``; None when it does not report its layout), or None.

        Measured on TensorFlow 2.21 (see README): some optimizer kernels compute with
        Eigen's vectorised path for full packets and a scalar path for the tail (float32
        Adagrad's, ProximalAdagrad's and Adadelta's ``rsqrt``, Ftrl's ``pow`` for a
        learning-rate power other than -0.5), so an update of a partitioned variable can differ by a
        few ULP from the same update of the whole variable. Nothing an implementation
        does can avoid that, so such cases are reported as not applicable. The layout
        is the one the implementation built, not one guessed from the strategy's name.
        """
        kernel = _unstable_kernel(self.model)
        if kernel is None:
            return None
        kernel = f"TensorFlow's {kernel} kernel is not bit-stable across partition boundaries"
        if partitioned is None:
            return (f"{kernel} ({setting.label}), and the implementation does not report its layout "
                    "(stored_copies()), so it is unknown whether a dense variable is partitioned")
        dense = {v["name"] for v in model_spec.variables(self.model) if v["trainable"] and not v["sparse_grad"]}
        if dense & set(partitioned):
            return f"a dense variable is partitioned ({setting.label}): {kernel}"
        return None

    def features(self) -> list[str]:
        """What the case exercises, as short labels (the matrix counts them): model
        features, and the layouts where distributed-checkpoint bugs hide."""
        model = self.model
        found = [f"{model['dtype']}", f"optimizer {model['optimizer']['name']}"]
        found += [label for key, label in (("embedding", "embedding"), ("tied", "tied embedding"),
                                          ("batch_norm", "batch norm"), ("clip_norm", "gradient clipping"),
                                          ("dropout", "dropout"), ("conv", "convolution"),
                                          ("keras_layers", "Keras layers"),
                                          ("reference_variables", "reference variables")) if model.get(key)]
        if model.get("head_optimizer"):
            found.append(f"second optimizer {model['head_optimizer']['name']} (output layer)")
        if model.get("control_flow"):
            found.append(f"control flow ({model['control_flow']})")
        if model.get("head_dtype") and model["head_dtype"] != model["dtype"]:
            found.append(f"mixed dtypes ({model['dtype']} body, {model['head_dtype']} head)")
        if model.get("counter"):
            found.append(f"{model['counter']} counter")
        step = model_spec.global_step_dtype(model)
        if step:
            found.append(f"{step} global_step")
        if model.get("schedule"):
            found.append(f"schedule {model['schedule']['name']}")
        if max(self.source.replicas, self.target.replicas) >= 3:
            found.append("3+ replicas")
        if self.batch % self.source.replicas or self.batch % self.target.replicas:
            found.append("uneven batch split")
        if self.sharded:
            found.append("sharded save")
        for setting in (self.source, self.target):
            found += _custom_layout_features(setting.strategy, model)
        if self.saver_program:
            found += _retention_features(self.saver_program)
        if self.fault:
            chief = "chief" if self.source.resource_spec.nodes[self.fault["node"]].chief else "non-chief"
            found.append(f"fault {self.fault['kind']} × {chief} × {faults.MOMENTS[self.fault['moment']]}")
        return sorted(set(found))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": dict(self.model),
            "cluster": dict(self.source.cluster),
            "strategy": dict(self.source.strategy),
            "target": {"cluster": dict(self.target.cluster), "strategy": dict(self.target.strategy)},
            "schedule": {"k": self.k, "m": self.m, "batch": self.batch, "data_seed": self.data_seed,
                         "sharded": self.sharded},
            **({"saver_program": dict(self.saver_program)} if self.saver_program is not None else {}),
            **({"fault": dict(self.fault)} if self.fault is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> Case:
        """Validate a case given as parsed JSON; :class:`CaseError` names ``source`` and the field."""
        _check_fields(data, source)
        model = data["model"]
        if not isinstance(model, Mapping):
            raise CaseError(f"{source}: field 'model' must be an object (a model spec), got {_kind(model)}")
        try:
            model_spec.validate(model)
        except model_spec.ModelSpecError as err:
            raise CaseError(f"{source}: {err}") from err
        schedule = _schedule(data["schedule"], source)
        target = data["target"]
        if not isinstance(target, Mapping) or set(target) != {"cluster", "strategy"}:
            raise CaseError(f"{source}: field 'target' must be an object with exactly 'cluster' and 'strategy', "
                            f"got {_kind(target)}")
        case = cls(
            model=model,
            source=_setting(data["cluster"], data["strategy"], source, "cluster", "strategy"),
            target=_setting(target["cluster"], target["strategy"], source, "target.cluster", "target.strategy"),
            k=schedule["k"], m=schedule["m"], batch=schedule["batch"], data_seed=schedule["data_seed"],
            sharded=schedule.get("sharded", False),
            saver_program=_saver_program(data.get("saver_program"), source),
            fault=_fault(data.get("fault"), source, len(data["cluster"]["nodes"])),
        )
        for setting in (case.source, case.target):
            if case.batch < setting.replicas:
                raise CaseError(
                    f"{source}: field 'schedule.batch' ({case.batch}) cannot give each of "
                    f"{setting.replicas} replicas an example"
                )
        return case

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Case:
        """Read and validate the case file at ``path``."""
        return load_reproduction(path)[0]


def load_reproduction(path: str | Path) -> tuple[Case, str | None]:
    """Read the case file at ``path``: the case, and the property it names (or None)."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as err:
        raise CaseError(f"{path}: cannot read the case: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise CaseError(f"{path}: not JSON (not UTF-8 text: {err.reason})") from err
    except json.JSONDecodeError as err:
        raise CaseError(f"{path}: not JSON (line {err.lineno}: {err.msg})") from err
    case = Case.from_dict(data, source=str(path))
    return case, data.get("property")


def _kind(value: Any) -> str:
    """The JSON type of ``value``, for messages."""
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return f"{'a string' if isinstance(value, str) else 'a number'} ({value!r})"


def _check_fields(data: Any, source: str) -> None:
    """The top level: an object with every required field, no unknown one, a known format."""
    if not isinstance(data, Mapping):
        raise CaseError(f"{source}: a case must be a JSON object, got {_kind(data)}")
    for key in REQUIRED_FIELDS:
        if key not in data:
            raise CaseError(f"{source}: missing field {key!r}")
    unknown = sorted(str(key) for key in set(data) - {*REQUIRED_FIELDS, *OPTIONAL_FIELDS})
    if unknown:
        raise CaseError(f"{source}: unknown field {unknown[0]!r} "
                        f"(allowed: {', '.join(REQUIRED_FIELDS + OPTIONAL_FIELDS)})")
    if data.get("format", FORMAT) != FORMAT:
        raise CaseError(f"{source}: field 'format' is {data['format']!r}, expected {FORMAT!r}")
    if not isinstance(data.get("property", ""), str):
        raise CaseError(f"{source}: field 'property' must be a property's name (a string), "
                        f"got {_kind(data['property'])}")


def _schedule(schedule: Any, source: str) -> Mapping[str, Any]:
    """The validated ``schedule`` field."""
    if not isinstance(schedule, Mapping):
        raise CaseError(f"{source}: field 'schedule' must be an object "
                        f"{{k, m, batch, data_seed[, sharded]}}, got {_kind(schedule)}")
    unknown = sorted(str(key) for key in set(schedule) - {*SCHEDULE_MINIMUM, "sharded"})
    if unknown:
        raise CaseError(f"{source}: unknown field 'schedule.{unknown[0]}' "
                        f"(allowed: {', '.join(SCHEDULE_MINIMUM)}, sharded)")
    for key, minimum in SCHEDULE_MINIMUM.items():
        value = schedule.get(key)
        # JSON true is not 1: a bool is refused although Python counts it as an int.
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise CaseError(f"{source}: field 'schedule.{key}' must be an integer >= {minimum}, "
                            f"got {_kind(value) if key in schedule else 'nothing'}")
    if not isinstance(schedule.get("sharded", False), bool):
        raise CaseError(f"{source}: field 'schedule.sharded' must be true or false")
    return schedule


def _retention_features(program: Mapping[str, Any]) -> list[str]:
    """Whether a Saver program saves more often than ``max_to_keep`` keeps, and keeps
    retired checkpoints by age."""
    saves = sum(operation[0] == "save" for operation in program["operations"])
    max_to_keep = program["options"]["max_to_keep"]
    if saves <= max_to_keep:
        return []
    found = [f"more saves than max_to_keep={max_to_keep}"]
    if program["options"].get("keep_checkpoint_every_n_hours"):
        found.append("retired checkpoints kept by keep_checkpoint_every_n_hours")
    return found


def _saver_program(program: Any, source: str) -> Mapping[str, Any] | None:
    """The validated ``saver_program`` field (or None when the case has none)."""
    if program is None:
        return None
    if not isinstance(program, Mapping) or set(program) != {"options", "operations"}:
        raise CaseError(f"{source}: field 'saver_program' must have exactly 'options' and 'operations'")
    options = program["options"]
    if not isinstance(options, Mapping) or not set(SAVER_OPTIONS) <= set(options) \
            or not set(options) <= {*SAVER_OPTIONS, *OPTIONAL_SAVER_OPTIONS}:
        raise CaseError(f"{source}: field 'saver_program.options' must have exactly {', '.join(SAVER_OPTIONS)} "
                        f"and optionally {', '.join(OPTIONAL_SAVER_OPTIONS)}")
    for key, kind in {**SAVER_OPTIONS, **OPTIONAL_SAVER_OPTIONS}.items():
        if key in options and type(options[key]) is not kind:
            raise CaseError(f"{source}: field 'saver_program.options.{key}' must be {kind.__name__}")
    operations = program["operations"]
    if not isinstance(operations, list):
        raise CaseError(f"{source}: field 'saver_program.operations' must be a list")
    for number, operation in enumerate(operations):
        where = f"{source}: field 'saver_program.operations[{number}]'"
        if (not isinstance(operation, list) or not operation or not isinstance(operation[0], str)
                or operation[0] not in SAVER_OPERATIONS):
            raise CaseError(f"{where} must be a list starting with one of {', '.join(SAVER_OPERATIONS)}")
        if len(operation) != 1 + SAVER_OPERATIONS[operation[0]]:
            raise CaseError(f"{where}: {operation[0]!r} takes {SAVER_OPERATIONS[operation[0]]} argument(s)")
        if operation[0] == "save" and not isinstance(operation[1], bool):
            raise CaseError(f"{where}: the argument of 'save' (with a global step) must be true or false")
    return program


def _fault(fault: Any, source: str, nodes: int) -> Mapping[str, Any] | None:
    """The validated ``fault`` field (or None when the case has none), for a cluster of
    ``nodes`` nodes (task 0 is the chief)."""
    if fault is None:
        return None
    if not isinstance(fault, Mapping) or set(fault) != {"node", "kind", "moment"}:
        raise CaseError(f"{source}: field 'fault' must be an object with exactly 'node', 'kind' and 'moment', "
                        f"got {_kind(fault)}")
    node, kind, moment = fault["node"], fault["kind"], fault["moment"]
    if not isinstance(node, int) or isinstance(node, bool) or not 0 <= node < nodes:
        raise CaseError(f"{source}: field 'fault.node' must be the task index of a node of 'cluster' "
                        f"(0, the chief, to {nodes - 1}), got {_kind(node)}")
    if kind not in faults.KINDS:
        raise CaseError(f"{source}: field 'fault.kind' must be one of {', '.join(faults.KINDS)}, got {_kind(kind)}")
    if moment not in faults.MOMENTS_OF[kind]:
        raise CaseError(f"{source}: field 'fault.moment' must be one of {', '.join(faults.MOMENTS_OF[kind])} "
                        f"for kind {kind!r}, got {_kind(moment)}")
    if moment in faults.CHIEF_ONLY and node != 0:
        raise CaseError(f"{source}: field 'fault.moment' {moment!r} is a fault of the chief's host, where the "
                        f"client writes the MetaGraph and the state file: 'fault.node' must be 0, got {node}")
    return fault


def _setting(cluster: Any, strategy: Any, source: str, cluster_field: str, strategy_field: str) -> Setting:
    """A validated setting; the fields are named as the file spells them (``target.cluster``)."""
    try:
        ResourceSpec.from_dict(cluster, source=f"{source}: field '{cluster_field}'")
    except ValueError as err:
        raise CaseError(str(err)) from err
    if not isinstance(strategy, Mapping) or len(strategy) != 1 or not ({"builder", "custom"} & set(strategy)):
        raise CaseError(f"{source}: field {strategy_field!r} must be {{builder: NAME}} or {{custom: STRATEGY}}")
    if "builder" in strategy and strategy["builder"] not in BUILDERS:
        raise CaseError(f"{source}: field '{strategy_field}.builder': unknown strategy builder "
                        f"{strategy['builder']!r} (known: {', '.join(BUILDERS)})")
    if "custom" in strategy:
        try:
            Strategy.from_dict(strategy["custom"], source=f"{source}: field '{strategy_field}.custom'")
        except StrategyError as err:
            raise CaseError(str(err)) from err
    return Setting(cluster=cluster, strategy=strategy)
