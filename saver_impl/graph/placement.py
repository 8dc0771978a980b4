"""Where the copies of one original variable live in the distributed graph: its placement
as resource variables.

A variable is split into *parts* along one axis (one part when unpartitioned); each part
is stored once on a parameter-server device (``ps``) or mirrored on every replica device
(``allreduce``). Optimizer slots share their variable's layout. Every part and mirror is
a resource variable of its own, created in the AutoDist instance's own resource
container so that several instances can share one cluster. :attr:`VariableStorage.layout`
describes the same thing as plain data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf

from saver_impl.graph.layout import PartLayout, StoredCopy, VariableLayout, part_geometry
from saver_impl.strategy import VariableConfig


@dataclass
class VariableStorage:
    """All copies of one original variable in the distributed graph.

    ``parts[p].copies[m]`` describes mirror ``m`` of part ``p`` and ``handles[p][m]`` is
    its resource handle. ``ps`` variables have one mirror per part.
    """

    name: str
    shape: tuple[int, ...]
    dtype: Any
    synchronizer: str
    parts: list[PartLayout]
    handles: list[list[Any]] = field(default_factory=list)

    @property
    def devices(self) -> list[list[str]]:
        """``devices[p][m]``: the TensorFlow device of mirror ``m`` of part ``p``."""
        return [[copy.device for copy in part.copies] for part in self.parts]

    @property
    def layout(self) -> VariableLayout:
        """The parts and copies as plain data."""
        return VariableLayout(self.name, tuple(self.shape), self.dtype.name, tuple(self.parts))

    @property
    def partitioned(self) -> bool:
        return len(self.parts) > 1

    @property
    def mirrored(self) -> bool:
        return self.synchronizer == "allreduce"

    @property
    def single(self) -> bool:
        """One part, one copy: the only layout shared optimizer ops may use."""
        return not self.partitioned and not self.mirrored

    def read_part(self, part: int, mirror: int = 0) -> Any:
        """A read of one part's copy, placed with it."""
        with tf.device(self.devices[part][mirror]):
            return tf.raw_ops.ReadVariableOp(resource=self.handles[part][mirror], dtype=self.dtype)

    def assign(self, part: int, mirror: int, value: Any) -> Any:
        """An op writing ``value`` into one part's copy, placed with it."""
        with tf.device(self.devices[part][mirror]):
            return tf.raw_ops.AssignVariableOp(resource=self.handles[part][mirror], value=value)

    def assemble(self, part_values: list[Any]) -> Any:
        """The full value from the values of the parts (a concatenation: exact bytes)."""
        if not self.partitioned:
            return part_values[0]
        return tf.concat(part_values, axis=self.parts[0].axis)

    def assign_all(self, full_value: Any) -> Any:
        """An op writing ``full_value`` into every part and every mirror."""
        values = [full_value]
        if self.partitioned:
            values = tf.split(full_value, [p.size for p in self.parts], axis=self.parts[0].axis)
        assigns = [
            self.assign(part.index, mirror, value)
            for part, value in zip(self.parts, values)
            for mirror in range(len(part.copies))
        ]
        return tf.group(*assigns, name=f"assign_all/{self.name}")


def create_storage(
    name: str,
    shape: tuple[int, ...],
    dtype: Any,
    config: VariableConfig,
    part_devices: list[list[str]],
    container: str,
) -> VariableStorage:
    """Create the resource variables of every part and mirror of one variable.

    ``part_devices[p]`` lists the TensorFlow devices of part ``p``'s copies.
    """
    geometry = part_geometry(shape, config)
    storage = VariableStorage(name, shape, dtype, config.synchronizer, [])
    for part, devices in zip(geometry, part_devices):
        handles, copies = [], []
        for mirror, device in enumerate(devices):
            suffix = f"part_{part.index}" if len(geometry) > 1 else ""
            if config.synchronizer == "allreduce":
                suffix = f"{suffix}/replica_{mirror}".lstrip("/")
            op_name = f"{name}/{suffix}" if suffix else name
            with tf.device(device):
                handle = tf.raw_ops.VarHandleOp(
                    dtype=dtype, shape=part.shape, container=container, shared_name=op_name, name=op_name
                )
            handles.append(handle)
            copies.append(StoredCopy(handle.op.name, device))
        storage.handles.append(handles)
        storage.parts.append(dataclasses.replace(part, copies=tuple(copies)))
    return storage
