"""The strategy data model: where every variable of a model lives, as plain data.

A strategy is JSON-serializable and can be written by hand::

    {
      "format": "autodist-verify/strategy/v1",
      "replicas": ["127.0.0.1:GPU:0", "127.0.0.2:CPU:0"],
      "aux_device": "127.0.0.1:CPU:0",
      "variables": {
        "dense/kernel": {"synchronizer": "ps", "devices": ["127.0.0.2:CPU:0"]},
        "emb": {"synchronizer": "ps", "partition": {"axis": 0, "sizes": [5, 5]},
                "devices": ["127.0.0.1:CPU:0", "127.0.0.2:CPU:0"]},
        "dense/bias": {"synchronizer": "allreduce"}
      }
    }

* ``replicas``: the replica devices in replica order; replica 0 is the master.
* ``aux_device``: a parameter-server device for optimizer state tied to no single
  variable (Adam's beta powers).
* per variable, ``synchronizer`` is ``ps`` (stored on parameter servers: ``devices``
  has one entry per part) or ``allreduce`` (mirrored on every replica, no ``devices``);
  an optional ``partition`` splits it along ``axis`` into parts of ``sizes``.
* only synchronous training is implemented: ``sync`` must be true and ``staleness`` 0.

Optimizer slots follow their variable; they never appear in a strategy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

FORMAT = "autodist-verify/strategy/v1"
SYNCHRONIZERS = ("ps", "allreduce")
_ITEMSIZE = {
    "bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "float16": 2, "bfloat16": 2,
    "int32": 4, "uint32": 4, "float32": 4, "int64": 8, "uint64": 8, "float64": 8,
    "complex64": 8, "complex128": 16,
}


class StrategyError(ValueError):
    """An invalid strategy; the message names the variable and the field."""


@dataclass(frozen=True)
class VariableInfo:
    """What a strategy builder knows about one model variable."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    trainable: bool = True
    sparse_grad: bool = False

    @property
    def nbytes(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count * _ITEMSIZE.get(self.dtype, 8)


@dataclass(frozen=True)
class Partition:
    """A split of a variable along ``axis`` into parts of ``sizes``."""

    axis: int
    sizes: tuple[int, ...]

    @property
    def offsets(self) -> tuple[int, ...]:
        """Start index of each part along the axis."""
        starts, position = [], 0
        for size in self.sizes:
            starts.append(position)
            position += size
        return tuple(starts)


@dataclass(frozen=True)
class VariableConfig:
    """Placement of one variable."""

    synchronizer: str
    devices: tuple[str, ...] = ()
    partition: Partition | None = None

    @property
    def num_parts(self) -> int:
        return len(self.partition.sizes) if self.partition else 1


@dataclass(frozen=True)
class Strategy:
    """Placement of every model variable on a cluster's devices."""

    replicas: tuple[str, ...]
    aux_device: str
    variables: Mapping[str, VariableConfig] = field(default_factory=dict)

    def for_variable(self, name: str) -> VariableConfig:
        try:
            return self.variables[name]
        except KeyError:
            raise StrategyError(f"strategy has no entry for variable {name!r}") from None

    # -- serialization ----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        variables = {}
        for name, config in self.variables.items():
            entry: dict[str, Any] = {"synchronizer": config.synchronizer}
            if config.partition:
                entry["partition"] = {"axis": config.partition.axis, "sizes": list(config.partition.sizes)}
            if config.synchronizer == "ps":
                entry["devices"] = list(config.devices)
            variables[name] = entry
        return {
            "format": FORMAT,
            "replicas": list(self.replicas),
            "aux_device": self.aux_device,
            "variables": variables,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> "Strategy":
        where = f"strategy {source}"
        _expect_keys(data, {"format", "replicas", "aux_device", "variables"}, where, required={"replicas", "aux_device", "variables"})
        if data.get("format", FORMAT) != FORMAT:
            raise StrategyError(f"{where}: field 'format' is {data['format']!r}, expected {FORMAT!r}")
        replicas = _string_list(data["replicas"], f"{where}: field 'replicas'")
        if not isinstance(data["aux_device"], str):
            raise StrategyError(f"{where}: field 'aux_device' must be a device name")
        if not isinstance(data["variables"], Mapping):
            raise StrategyError(f"{where}: field 'variables' must be a mapping of variable names")
        variables = {
            name: _config_from_dict(entry, f"{where}: variable {name!r}")
            for name, entry in data["variables"].items()
        }
        return cls(tuple(replicas), data["aux_device"], variables)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str, source: str = "<json>") -> "Strategy":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise StrategyError(f"strategy {source}: not valid JSON: {err}") from err
        if not isinstance(data, Mapping):
            raise StrategyError(f"strategy {source}: the top level must be a JSON object")
        return cls.from_dict(data, source)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Strategy":
        return cls.from_json(Path(path).read_text(), source=str(path))

    # -- validation -------------------------------------------------------------------

    def validate(
        self,
        variables: Sequence[VariableInfo],
        replica_devices: Sequence[str],
        ps_devices: Sequence[str],
    ) -> None:
        """Check this strategy against a model's variables and a cluster's devices."""
        if not self.replicas:
            raise StrategyError("strategy: field 'replicas' is empty: at least one replica is needed")
        for device in self.replicas:
            if device not in replica_devices:
                raise StrategyError(f"strategy: replica device {device!r} is not a replica device of the cluster")
        if self.aux_device not in ps_devices:
            raise StrategyError(f"strategy: field 'aux_device' {self.aux_device!r} is not a parameter-server device")
        by_name = {v.name: v for v in variables}
        for name in self.variables:
            if name not in by_name:
                raise StrategyError(f"strategy names variable {name!r}, which the graph does not have")
        for info in variables:
            if info.name not in self.variables:
                raise StrategyError(f"variable {info.name!r} of the graph has no entry in the strategy")
            _validate_config(info, self.variables[info.name], ps_devices)


def _expect_keys(data: Any, allowed: set[str], where: str, required: set[str] = frozenset()) -> None:
    if not isinstance(data, Mapping):
        raise StrategyError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise StrategyError(f"{where}: unknown field {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(data))
    if missing:
        raise StrategyError(f"{where}: missing field {missing[0]!r}")


def _string_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StrategyError(f"{where} must be a list of device names")
    return value


def _config_from_dict(entry: Any, where: str) -> VariableConfig:
    _expect_keys(entry, {"synchronizer", "devices", "partition", "sync", "staleness"}, where, required={"synchronizer"})
    if entry.get("sync", True) is not True or entry.get("staleness", 0) != 0:
        raise StrategyError(
            f"{where}: fields 'sync'/'staleness' ask for asynchronous training, which is outside "
            "the bit-exact contract and not implemented (use sync: true, staleness: 0)"
        )
    synchronizer = entry["synchronizer"]
    if synchronizer not in SYNCHRONIZERS:
        raise StrategyError(f"{where}: field 'synchronizer' is {synchronizer!r}; expected one of {SYNCHRONIZERS}")
    devices = tuple(_string_list(entry.get("devices", []), f"{where}: field 'devices'"))
    partition = None
    if "partition" in entry:
        spec = entry["partition"]
        _expect_keys(spec, {"axis", "sizes"}, f"{where}: field 'partition'", required={"axis", "sizes"})
        axis, sizes = spec["axis"], spec["sizes"]
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise StrategyError(f"{where}: field 'partition.axis' must be an integer")
        if not isinstance(sizes, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
            raise StrategyError(f"{where}: field 'partition.sizes' must be a list of integers")
        partition = Partition(axis, tuple(sizes))
    return VariableConfig(synchronizer, devices, partition)


def _validate_config(info: VariableInfo, config: VariableConfig, ps_devices: Sequence[str]) -> None:
    where = f"strategy: variable {info.name!r}"
    if config.synchronizer not in SYNCHRONIZERS:
        raise StrategyError(f"{where}: field 'synchronizer' is {config.synchronizer!r}; expected one of {SYNCHRONIZERS}")
    if config.synchronizer == "allreduce":
        if not info.trainable:
            raise StrategyError(
                f"{where}: field 'synchronizer' is 'allreduce' for a non-trainable variable; the "
                "train op may update such variables (global_step), so they must be 'ps'"
            )
        if config.devices:
            raise StrategyError(f"{where}: field 'devices' must be empty for 'allreduce' (mirrors go to every replica)")
    else:
        if len(config.devices) != config.num_parts:
            raise StrategyError(
                f"{where}: field 'devices' has {len(config.devices)} entries for {config.num_parts} part(s)"
            )
        for device in config.devices:
            if device not in ps_devices:
                raise StrategyError(f"{where}: field 'devices' names {device!r}, which is not a parameter-server device")
    if config.partition is None:
        return
    partition = config.partition
    if not info.shape:
        raise StrategyError(f"{where}: field 'partition' on a scalar variable")
    if not 0 <= partition.axis < len(info.shape):
        raise StrategyError(f"{where}: field 'partition.axis' {partition.axis} is outside the variable's rank {len(info.shape)}")
    dimension = info.shape[partition.axis]
    if len(partition.sizes) > dimension:
        raise StrategyError(
            f"{where}: field 'partition.sizes' asks for {len(partition.sizes)} parts of a dimension of {dimension}"
        )
    if any(size <= 0 for size in partition.sizes):
        raise StrategyError(f"{where}: field 'partition.sizes' {list(partition.sizes)} must all be positive")
    if sum(partition.sizes) != dimension:
        raise StrategyError(
            f"{where}: field 'partition.sizes' {list(partition.sizes)} sums to {sum(partition.sizes)}, not the dimension {dimension}"
        )
