"""Saveable objects that present a distributed variable as its original self.

A :class:`LogicalSaveable` saves one original variable under its original checkpoint
key, with its logical value: the parts concatenated, or the master replica's mirror
after checking in the graph that every mirror has the same bytes. Restoring writes the
checkpoint's value into every part and every mirror.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.python.training.saving import saveable_object

from saver_impl.graph.storage import VariableStorage

_UINT_OF_SIZE = {1: tf.uint8, 2: tf.uint16, 4: tf.uint32, 8: tf.uint64}


def _same_bytes(a, b):
    """A boolean scalar: ``a`` and ``b`` have the same bit patterns everywhere."""
    if a.dtype.is_floating or a.dtype.is_complex:
        uint = _UINT_OF_SIZE[a.dtype.size if not a.dtype.is_complex else a.dtype.size // 2]
        a, b = tf.bitcast(a, uint), tf.bitcast(b, uint)
    return tf.reduce_all(tf.equal(a, b))


def task_cpu(device: str) -> str:
    """The CPU:0 device of the task that ``device`` belongs to."""
    spec = tf.DeviceSpec.from_string(device)
    return spec.replace(device_type="CPU", device_index=0).to_string()


def logical_save_value(storage: VariableStorage, device: str):
    """The value to save for ``storage``'s variable, assembled on ``device``."""
    with tf.device(device):
        if not storage.mirrored:
            return storage.assemble([storage.read_part(p.index) for p in storage.parts])
        checks = []
        masters = []
        for part in storage.parts:
            master = storage.read_part(part.index, 0)
            masters.append(master)
            for mirror in range(1, len(storage.handles[part.index])):
                other = storage.read_part(part.index, mirror)
                checks.append(
                    tf.debugging.Assert(
                        _same_bytes(master, other),
                        [
                            f"mirrors of variable {storage.name} differ: replica {mirror} "
                            f"(part {part.index}) is not bitwise equal to the master replica; "
                            "refusing to save one of them silently"
                        ],
                        name=f"check_mirrors/{storage.name}",
                    )
                )
        with tf.control_dependencies(checks):
            return tf.identity(storage.assemble(masters))


class LogicalSaveable(saveable_object.SaveableObject):
    """One original variable, saved and restored under its original key."""

    def __init__(self, key: str, storage: VariableStorage, reshape: bool = False):
        self.storage = storage
        self._reshape = reshape
        device = task_cpu(storage.devices[0][0])
        value = logical_save_value(storage, device)
        spec = saveable_object.SaveSpec(value, "", key, dtype=storage.dtype, device=device)
        super().__init__(value, [spec], key)

    def restore(self, restored_tensors, restored_shapes):
        (tensor,) = restored_tensors
        shape = list(self.storage.shape)
        if self._reshape:
            tensor = tf.reshape(tensor, shape)
        check = tf.debugging.assert_equal(
            tf.shape(tensor, out_type=tf.int64),
            tf.constant(shape, dtype=tf.int64, shape=[len(shape)]),
            message=(
                f"checkpoint key {self.name!r} has the wrong shape for variable "
                f"{self.storage.name!r}, whose shape is {tuple(shape)}"
            ),
        )
        with tf.control_dependencies([check]):
            tensor = tf.identity(tensor)
        return self.storage.assign_all(tensor)
