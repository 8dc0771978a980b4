"""The distributed storage of one original variable.

A variable is split into *parts* along one axis (one part when unpartitioned); each part
is stored once on a parameter-server device (``ps``) or mirrored on every replica device
(``allreduce``). Optimizer slots share their variable's layout. Every part and mirror is
a resource variable of its own, created in the AutoDist instance's own resource
container so that several instances can share one cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf

from saver_impl.strategy import VariableConfig


@dataclass(frozen=True)
class PartLayout:
    """Where one part sits inside the full variable."""

    index: int
    axis: int
    offset: int
    size: int
    shape: tuple[int, ...]

    def slice_of(self, full_shape: tuple[int, ...]) -> tuple[slice, ...]:
        """The numpy index of this part in an array of the full shape."""
        index = [slice(None)] * len(full_shape)
        if full_shape:
            index[self.axis] = slice(self.offset, self.offset + self.size)
        return tuple(index)


def part_layouts(shape: tuple[int, ...], config: VariableConfig) -> list[PartLayout]:
    """The parts a variable of ``shape`` is split into under ``config``."""
    if config.partition is None:
        return [PartLayout(0, 0, 0, shape[0] if shape else 1, shape)]
    axis = config.partition.axis
    layouts = []
    for i, (offset, size) in enumerate(zip(config.partition.offsets, config.partition.sizes)):
        part_shape = shape[:axis] + (size,) + shape[axis + 1:]
        layouts.append(PartLayout(i, axis, offset, size, part_shape))
    return layouts


@dataclass
class VariableStorage:
    """All copies of one original variable in the distributed graph.

    ``handles[p][m]`` is the resource handle of mirror ``m`` of part ``p``;
    ``devices[p][m]`` its TensorFlow device. ``ps`` variables have one mirror per part.
    """

    name: str
    shape: tuple[int, ...]
    dtype: Any
    synchronizer: str
    parts: list[PartLayout]
    handles: list[list[Any]] = field(default_factory=list)
    devices: list[list[str]] = field(default_factory=list)

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

    def all_handles(self) -> list[Any]:
        return [h for mirrors in self.handles for h in mirrors]

    def read_part(self, part: int, mirror: int = 0) -> Any:
        """A read of one part's copy, placed with it."""
        with tf.device(self.devices[part][mirror]):
            return tf.raw_ops.ReadVariableOp(resource=self.handles[part][mirror], dtype=self.dtype)

    def assemble(self, part_values: list[Any]) -> Any:
        """The full value from the values of the parts (a concatenation: exact bytes)."""
        if not self.partitioned:
            return part_values[0]
        return tf.concat(part_values, axis=self.parts[0].axis)

    def split(self, full_value: Any) -> list[Any]:
        """The values of the parts from a full value."""
        if not self.partitioned:
            return [full_value]
        return tf.split(full_value, [p.size for p in self.parts], axis=self.parts[0].axis)

    def assign_all(self, full_value: Any) -> Any:
        """An op writing ``full_value`` into every part and every mirror."""
        assigns = []
        for part, value in zip(self.parts, self.split(full_value)):
            for handle, device in zip(self.handles[part.index], self.devices[part.index]):
                with tf.device(device):
                    assigns.append(tf.raw_ops.AssignVariableOp(resource=handle, value=value))
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
    storage = VariableStorage(name, shape, dtype, config.synchronizer, part_layouts(shape, config))
    for part, devices in zip(storage.parts, part_devices):
        row = []
        for mirror, device in enumerate(devices):
            suffix = f"part_{part.index}" if storage.partitioned else ""
            if storage.mirrored:
                suffix = f"{suffix}/replica_{mirror}".lstrip("/")
            op_name = f"{name}/{suffix}" if suffix else name
            with tf.device(device):
                row.append(
                    tf.raw_ops.VarHandleOp(
                        dtype=dtype,
                        shape=part.shape,
                        container=container,
                        shared_name=op_name,
                        name=op_name,
                    )
                )
        storage.handles.append(row)
        storage.devices.append(list(devices))
    return storage
