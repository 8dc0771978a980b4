"""The strategy format of the conformance suite: where every variable of a model lives,
as plain data.

The suite owns this format: it generates hand-made strategies in it, stores them in
cases, and hands them to an implementation as ``AutoDist(strategy=Strategy)``. The
reference implementation's builders produce it too (``saver_impl.strategy``).

A strategy is JSON-serializable and can be written by hand::

    {
      "format": "autodist-verify/strategy/v1",
      "replicas": ["127.0.0.1:GPU:0", "127.0.0.1:GPU:1", "127.0.0.2:CPU:0"],
      "aux_device": "127.0.0.1:CPU:0",
      "variables": {
        "dense/kernel": {"synchronizer": "ps", "devices": ["127.0.0.2:CPU:0"]},
        "emb": {"synchronizer": "ps", "partition": {"axis": 0, "sizes": [5, 5]},
                "devices": ["127.0.0.1:CPU:0", "127.0.0.2:CPU:0"]},
        "dense/bias": {"synchronizer": "allreduce"},
        "w2": {"synchronizer": "allreduce", "partition": {"axis": 0, "sizes": [2, 2]}}
      }
    }

* ``format``: optional when reading; always written.
* ``replicas``: the replica devices in replica order; replica 0 is the master.
* ``aux_device``: a parameter-server device for optimizer state tied to no single
  variable (Adam's beta powers).
* per variable, ``synchronizer`` is ``ps`` (stored on parameter-server devices:
  ``devices`` has one entry per part, or one entry when unpartitioned) or ``allreduce``
  (a mirror on every replica device, no ``devices``); an optional ``partition`` splits
  the variable along ``axis`` into parts of ``sizes``, each part placed per the
  synchronizer.
* per variable, optional ``sync`` (default true) and ``staleness`` (default 0): only
  synchronous training is implemented, anything else is refused.

Optimizer slots follow their variable and never appear in a strategy.

Reading (:meth:`Strategy.from_dict`) checks structure and types; :meth:`Strategy.validate`
checks the strategy against a model's variables and a cluster's devices.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "autodist-verify/strategy/v1"
SYNCHRONIZERS = ("ps", "allreduce")

_ITEMSIZE = {
    "bool": 1, "int8": 1, "uint8": 1, "qint8": 1, "quint8": 1,
    "int16": 2, "uint16": 2, "float16": 2, "bfloat16": 2, "half": 2,
    "int32": 4, "uint32": 4, "float32": 4, "float": 4, "qint32": 4,
    "int64": 8, "uint64": 8, "float64": 8, "double": 8, "complex64": 8,
    "complex128": 16,
}
_ASYNC_MESSAGE = (
    "asynchronous PS is outside this implementation: only synchronous training "
    "(sync true, staleness 0) is bit-exact and implemented"
)


class StrategyError(ValueError):
    """An invalid strategy or strategy request; the message names the variable and field."""


@dataclass(frozen=True)
class VariableInfo:
    """What a strategy builder knows about one model variable.

    Attributes:
        name: the variable's name without ``:0``, e.g. ``"dense/kernel"``.
        shape: its static shape.
        dtype: a numpy/TensorFlow dtype name, e.g. ``"float32"``.
        trainable: whether the train op applies a gradient to it.
        sparse_grad: whether its gradient is an ``IndexedSlices`` (embedding lookups).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    trainable: bool = True
    sparse_grad: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def nbytes(self) -> int:
        """The variable's size in bytes: element count times item size."""
        try:
            itemsize = _ITEMSIZE[self.dtype]
        except KeyError:
            raise StrategyError(
                f"variable {self.name!r}: field 'dtype' {self.dtype!r} has no known item size"
            ) from None
        count = 1
        for dim in self.shape:
            count *= dim
        return count * itemsize


@dataclass(frozen=True)
class Partition:
    """A split of a variable along ``axis`` into consecutive parts of ``sizes``."""

    axis: int
    sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(self.sizes))

    @property
    def offsets(self) -> tuple[int, ...]:
        """The start index of each part along the axis."""
        starts, position = [], 0
        for size in self.sizes:
            starts.append(position)
            position += size
        return tuple(starts)


@dataclass(frozen=True)
class VariableConfig:
    """The placement of one variable.

    Attributes:
        synchronizer: ``"ps"`` or ``"allreduce"``.
        devices: for ``ps``, one parameter-server device per part; empty for ``allreduce``.
        partition: how the variable is split, or ``None``.
        sync, staleness: kept so that a hand-written asynchronous request is refused
            by :meth:`Strategy.validate` rather than silently ignored.
    """

    synchronizer: str
    devices: tuple[str, ...] = ()
    partition: Partition | None = None
    sync: bool = True
    staleness: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "devices", tuple(self.devices))

    @property
    def num_parts(self) -> int:
        """The number of parts: the partition's, or 1."""
        return len(self.partition.sizes) if self.partition is not None else 1


@dataclass(frozen=True)
class Strategy:
    """The placement of every model variable on a cluster's devices.

    Attributes:
        replicas: replica devices in replica order; replica 0 is the master.
        aux_device: the parameter-server device for optimizer state of no single variable.
        variables: variable name -> placement.
    """

    replicas: tuple[str, ...]
    aux_device: str
    variables: Mapping[str, VariableConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "replicas", tuple(self.replicas))
        object.__setattr__(self, "variables", dict(self.variables))

    def for_variable(self, name: str) -> VariableConfig:
        """The placement of variable ``name``; ``StrategyError`` if it has none."""
        try:
            return self.variables[name]
        except KeyError:
            raise StrategyError(f"strategy: field 'variables' has no entry for variable {name!r}") from None

    # -- serialization ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The strategy as JSON-ready data (see the module docstring for the format)."""
        return {
            "format": FORMAT,
            "replicas": list(self.replicas),
            "aux_device": self.aux_device,
            "variables": {name: _config_to_dict(c) for name, c in self.variables.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> Strategy:
        """Read a strategy from parsed JSON; ``StrategyError`` names the bad field's path."""
        where = f"strategy {source}"
        _check_keys(data, where, allowed={"format", "replicas", "aux_device", "variables"},
                    required={"replicas", "aux_device", "variables"})
        if data.get("format", FORMAT) != FORMAT:
            raise StrategyError(f"{where}: field 'format' is {data['format']!r}, expected {FORMAT!r}")
        replicas = _device_list(data["replicas"], f"{where}: field 'replicas'")
        if not isinstance(data["aux_device"], str):
            raise StrategyError(f"{where}: field 'aux_device' must be a device name (a string)")
        entries = data["variables"]
        if not isinstance(entries, Mapping):
            raise StrategyError(f"{where}: field 'variables' must map variable names to placements")
        variables = {}
        for name, entry in entries.items():
            if not isinstance(name, str) or not name:
                raise StrategyError(f"{where}: field 'variables' has key {name!r}; keys must be variable names")
            variables[name] = _config_from_dict(entry, f"{where}: variable {name!r}")
        return cls(replicas, data["aux_device"], variables)

    def to_json(self) -> str:
        """The strategy as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str, source: str = "<json>") -> Strategy:
        """Read a strategy from JSON text."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise StrategyError(f"strategy {source}: not valid JSON: {err}") from err
        return cls.from_dict(data, source)

    def save(self, path: str | Path) -> None:
        """Write the strategy to ``path`` as JSON."""
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Strategy:
        """Read a strategy from the JSON file at ``path``."""
        return cls.from_json(Path(path).read_text(), source=str(path))

    # -- validation -------------------------------------------------------------------

    def validate(
        self,
        variables: Sequence[VariableInfo],
        replica_devices: Sequence[str],
        ps_devices: Sequence[str],
    ) -> None:
        """Check this strategy against a model's variables and a cluster's devices.

        Args:
            variables: every model variable of the graph (not optimizer slots).
            replica_devices: the cluster's replica devices (logical names).
            ps_devices: the cluster's parameter-server devices (logical names).

        Raises:
            StrategyError: naming the variable (if any) and the field at fault.
        """
        _validate_devices(self, replica_devices, ps_devices)
        _validate_variable_set(self, variables)
        for info in variables:
            _validate_config(info, self.variables[info.name], ps_devices)


# -- reading --------------------------------------------------------------------------


def _check_keys(data: Any, where: str, allowed: set[str], required: set[str]) -> None:
    if not isinstance(data, Mapping):
        raise StrategyError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(str(k) for k in set(data) - allowed)
    if unknown:
        raise StrategyError(f"{where}: unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(data))
    if missing:
        raise StrategyError(f"{where}: missing field {missing[0]!r}")


def _device_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StrategyError(f"{where} must be a list of device names (strings)")
    return tuple(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not 1


def _config_from_dict(entry: Any, where: str) -> VariableConfig:
    _check_keys(entry, where, allowed={"synchronizer", "devices", "partition", "sync", "staleness"},
                required={"synchronizer"})
    if not isinstance(entry["synchronizer"], str):
        raise StrategyError(f"{where}: field 'synchronizer' must be a string, one of {SYNCHRONIZERS}")
    sync, staleness = entry.get("sync", True), entry.get("staleness", 0)
    if not isinstance(sync, bool):
        raise StrategyError(f"{where}: field 'sync' must be true or false")
    if not _is_int(staleness):
        raise StrategyError(f"{where}: field 'staleness' must be an integer")
    _check_synchronous(where, sync, staleness)
    devices = _device_list(entry.get("devices", []), f"{where}: field 'devices'")
    partition = None
    if "partition" in entry:
        spec = entry["partition"]
        _check_keys(spec, f"{where}: field 'partition'", allowed={"axis", "sizes"}, required={"axis", "sizes"})
        if not _is_int(spec["axis"]):
            raise StrategyError(f"{where}: field 'partition.axis' must be an integer")
        sizes = spec["sizes"]
        if not isinstance(sizes, list) or not all(_is_int(s) for s in sizes):
            raise StrategyError(f"{where}: field 'partition.sizes' must be a list of integers")
        partition = Partition(spec["axis"], tuple(sizes))
    return VariableConfig(entry["synchronizer"], devices, partition, sync, staleness)


def _config_to_dict(config: VariableConfig) -> dict[str, Any]:
    entry: dict[str, Any] = {"synchronizer": config.synchronizer}
    if config.partition is not None:
        entry["partition"] = {"axis": config.partition.axis, "sizes": list(config.partition.sizes)}
    # Written whenever present, even where invalid, so that a round trip is faithful.
    if config.synchronizer == "ps" or config.devices:
        entry["devices"] = list(config.devices)
    if config.sync is not True:
        entry["sync"] = config.sync
    if config.staleness != 0:
        entry["staleness"] = config.staleness
    return entry


# -- validation -----------------------------------------------------------------------


def _check_synchronous(where: str, sync: Any, staleness: Any) -> None:
    if sync is not True or staleness != 0:
        raise StrategyError(f"{where}: fields 'sync'={sync!r}/'staleness'={staleness!r}: {_ASYNC_MESSAGE}")


def _validate_devices(strategy: Strategy, replica_devices: Sequence[str], ps_devices: Sequence[str]) -> None:
    if not strategy.replicas:
        raise StrategyError("strategy: field 'replicas' is empty; at least one replica device is needed")
    seen = set()
    for device in strategy.replicas:
        if device not in replica_devices:
            raise StrategyError(
                f"strategy: field 'replicas' names {device!r}, which is not a replica device of the "
                f"cluster ({', '.join(replica_devices)})"
            )
        if device in seen:
            raise StrategyError(f"strategy: field 'replicas' names {device!r} twice")
        seen.add(device)
    if strategy.aux_device not in ps_devices:
        raise StrategyError(
            f"strategy: field 'aux_device' is {strategy.aux_device!r}, which is not a "
            f"parameter-server device of the cluster ({', '.join(ps_devices)})"
        )


def _validate_variable_set(strategy: Strategy, variables: Sequence[VariableInfo]) -> None:
    names: set[str] = set()
    for info in variables:
        if info.name in names:
            raise StrategyError(f"variable {info.name!r} appears twice in the graph's variable list")
        names.add(info.name)
    for name in strategy.variables:
        if name not in names:
            raise StrategyError(
                f"strategy: field 'variables' has an entry for variable {name!r}, which the graph does not have"
            )
    for info in variables:
        if info.name not in strategy.variables:
            raise StrategyError(f"strategy: field 'variables' has no entry for graph variable {info.name!r}")


def _validate_config(info: VariableInfo, config: VariableConfig, ps_devices: Sequence[str]) -> None:
    where = f"strategy: variable {info.name!r}"
    _check_synchronous(where, config.sync, config.staleness)
    if config.synchronizer not in SYNCHRONIZERS:
        raise StrategyError(
            f"{where}: field 'synchronizer' is {config.synchronizer!r}; expected one of {SYNCHRONIZERS}"
        )
    if config.partition is not None:
        _validate_partition(info, config.partition, where)
    if config.synchronizer == "allreduce":
        if not info.trainable:
            raise StrategyError(
                f"{where}: field 'synchronizer' is 'allreduce' for a non-trainable variable; the train "
                "op may update such a variable itself (e.g. global_step's increment), which would "
                "happen once per mirror, so non-trainable variables must use 'ps'"
            )
        if config.devices:
            raise StrategyError(
                f"{where}: field 'devices' must be absent for 'allreduce' (a mirror goes to every replica)"
            )
        return
    if len(config.devices) != config.num_parts:
        raise StrategyError(
            f"{where}: field 'devices' has {len(config.devices)} entries for {config.num_parts} "
            "part(s); 'ps' needs exactly one parameter-server device per part"
        )
    for device in config.devices:
        if device not in ps_devices:
            raise StrategyError(
                f"{where}: field 'devices' names {device!r}, which is not a parameter-server device "
                f"of the cluster ({', '.join(ps_devices)})"
            )


def _validate_partition(info: VariableInfo, partition: Partition, where: str) -> None:
    if not info.shape:
        raise StrategyError(f"{where}: field 'partition' is set on a scalar variable; scalars cannot be split")
    rank = len(info.shape)
    if not 0 <= partition.axis < rank:
        raise StrategyError(
            f"{where}: field 'partition.axis' is {partition.axis}, outside the variable's axes 0..{rank - 1}"
        )
    dimension = info.shape[partition.axis]
    sizes = list(partition.sizes)
    if len(sizes) > dimension:
        raise StrategyError(
            f"{where}: field 'partition.sizes' asks for {len(sizes)} parts of axis "
            f"{partition.axis}, which has only {dimension} entries"
        )
    if not sizes or any(size <= 0 for size in sizes):
        raise StrategyError(f"{where}: field 'partition.sizes' {sizes} must be a non-empty list of positive sizes")
    if sum(sizes) != dimension:
        raise StrategyError(
            f"{where}: field 'partition.sizes' {sizes} sums to {sum(sizes)}, not to the size "
            f"{dimension} of axis {partition.axis}"
        )
