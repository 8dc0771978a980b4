"""Where the stored copies of one variable are, as plain data (no TensorFlow).

A variable is split into *parts* along one axis (one part when unpartitioned); each part
has one or more *copies*: one on a parameter server, or one mirror per replica. This is
what the checkpoint plan (:mod:`saver_impl.checkpoint.plan`) is computed from, and what a
distributed session reports in ``layouts``.
"""

from __future__ import annotations

from dataclasses import dataclass

from saver_impl.strategy import VariableConfig


@dataclass(frozen=True)
class StoredCopy:
    """One stored copy of a part: a resource variable of the distributed graph."""

    name: str  # its op name in the distributed graph, e.g. "w/part_0/replica_1"
    device: str  # its TensorFlow device, e.g. "/job:worker/task:1/device:GPU:0"


@dataclass(frozen=True)
class PartLayout:
    """Where one part sits inside the full variable, and its copies (copy 0 is the master)."""

    index: int
    axis: int
    offset: int
    size: int
    shape: tuple[int, ...]
    copies: tuple[StoredCopy, ...] = ()

    def slice_of(self, full_shape: tuple[int, ...]) -> tuple[slice, ...]:
        """The numpy index of this part in an array of the full shape."""
        index = [slice(None)] * len(full_shape)
        if full_shape:
            index[self.axis] = slice(self.offset, self.offset + self.size)
        return tuple(index)


@dataclass(frozen=True)
class VariableLayout:
    """The parts and copies of one original variable."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # a TensorFlow dtype name, e.g. "float32"
    parts: tuple[PartLayout, ...]

    @property
    def partitioned(self) -> bool:
        return len(self.parts) > 1


def part_geometry(shape: tuple[int, ...], config: VariableConfig) -> list[PartLayout]:
    """The parts (without copies) a variable of ``shape`` is split into under ``config``."""
    if config.partition is None:
        return [PartLayout(0, 0, 0, shape[0] if shape else 1, shape)]
    axis = config.partition.axis
    return [
        PartLayout(i, axis, offset, size, shape[:axis] + (size,) + shape[axis + 1:])
        for i, (offset, size) in enumerate(zip(config.partition.offsets, config.partition.sizes))
    ]
