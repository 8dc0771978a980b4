"""Saveable objects that present a distributed variable as its original self.

A :class:`LogicalSaveable` saves one original variable under its original checkpoint
key, with its logical value: its parts as slices of the full tensor (as TensorFlow saves
a partitioned variable), and of mirrors the master replica's copy after checking in the
graph that every mirror has the same bytes. Restoring writes the checkpoint's value into
every part and every mirror.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.python.training.saving import saveable_object

from saver_impl.graph.storage import VariableStorage


def _fingerprint(storage: VariableStorage, part: int, mirror: int):
    """A 64-bit farmhash of one copy's raw bytes, computed on the copy's own device.

    Hashing raw bytes compares bit patterns (NaN payloads and -0.0 count), and only
    the 8-byte fingerprint travels to the saving task, not the copy itself.
    """
    value = storage.read_part(part, mirror)
    with tf.device(storage.devices[part][mirror]):
        return tf.raw_ops.Fingerprint(data=tf.reshape(value, [1, -1]), method="farmhash64")


def task_cpu(device: str) -> str:
    """The CPU:0 device of the task that ``device`` belongs to."""
    spec = tf.DeviceSpec.from_string(device)
    return spec.replace(device_type="CPU", device_index=0).to_string()


def _master_value(storage: VariableStorage, part: int):
    """Part ``part``'s value to save: its only copy, or its master mirror after an in-graph
    check that every mirror has the same bytes (the save fails naming the variable if not).

    Mirrors are compared by fingerprints of their bytes (a collision needs two different
    copies with the same 64-bit farmhash), so a save moves one copy, not R.
    """
    master = storage.read_part(part, 0)
    if len(storage.handles[part]) == 1:
        return master
    expected = _fingerprint(storage, part, 0)
    checks = []
    for mirror in range(1, len(storage.handles[part])):
        checks.append(
            tf.debugging.Assert(
                tf.reduce_all(tf.equal(expected, _fingerprint(storage, part, mirror))),
                [
                    f"mirrors of variable {storage.name} differ: replica {mirror} "
                    f"(part {part}) is not bitwise equal to the master replica; "
                    "refusing to save one of them silently"
                ],
                name=f"check_mirrors/{storage.name}",
            )
        )
    with tf.control_dependencies(checks):
        return tf.identity(master)


def logical_save_value(storage: VariableStorage, device: str):
    """The full value to save for ``storage``'s variable, assembled on ``device``."""
    with tf.device(device):
        return storage.assemble([_master_value(storage, p.index) for p in storage.parts])


def _slice_spec(key: str, storage: VariableStorage, part) -> str:
    """TensorFlow's slice spec of one part: "full shape  offset,length:..." per axis."""
    offsets = [0] * len(storage.shape)
    offsets[part.axis] = part.offset
    return tf.Variable.SaveSliceInfo(key, list(storage.shape), offsets, list(part.shape)).spec


def _checked(tensor, shape: list[int], message: str):
    """``tensor``, after an in-graph check that it has ``shape``."""
    check = tf.debugging.assert_equal(
        tf.shape(tensor, out_type=tf.int64),
        tf.constant(shape, dtype=tf.int64, shape=[len(shape)]),
        message=message,
    )
    with tf.control_dependencies([check]):
        return tf.identity(tensor)


def saveables_for(key: str, storage: VariableStorage, reshape: bool = False) -> list[saveable_object.SaveableObject]:
    """The saveable objects of one original variable under checkpoint key ``key``.

    An unpartitioned variable is one :class:`LogicalSaveable`. A partitioned one is one
    :class:`PartSaveable` per part, each saved as a slice of the full tensor on its own
    task, as TensorFlow saves a partitioned variable: the checkpoint holds the key once
    with the full shape (readers and plain TensorFlow's Saver see the full tensor), no
    task ever holds the whole variable, and a sharded save writes each part in its
    task's shard. ``reshape=True`` restores need the whole tensor: one LogicalSaveable.
    """
    if storage.partitioned and not reshape:
        return [PartSaveable(key, storage, part) for part in storage.parts]
    return [LogicalSaveable(key, storage, reshape)]


class LogicalSaveable(saveable_object.SaveableObject):
    """One original variable as one tensor (its parts concatenated on the first part's task)."""

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
        message = (f"checkpoint key {self.name!r} has the wrong shape for variable "
                   f"{self.storage.name!r}, whose shape is {tuple(shape)}")
        return self.storage.assign_all(_checked(tensor, shape, message))


class PartSaveable(saveable_object.SaveableObject):
    """One part of a partitioned variable, as a slice of the original key."""

    def __init__(self, key: str, storage: VariableStorage, part):
        self.storage = storage
        self.part = part
        device = task_cpu(storage.devices[part.index][0])
        with tf.device(device):
            value = _master_value(storage, part.index)
        spec = saveable_object.SaveSpec(value, _slice_spec(key, storage, part), key, dtype=storage.dtype, device=device)
        # The spec carries the checkpoint key; the saveable's own name only has to be
        # unique, since TensorFlow's Saver keys its saveables by that name.
        super().__init__(value, [spec], f"{key}/part_{part.index}")
        self.key = key

    def restore(self, restored_tensors, restored_shapes):
        (tensor,) = restored_tensors
        shape = list(self.part.shape)
        message = (f"checkpoint key {self.key!r} has the wrong shape for part {self.part.index} of variable "
                   f"{self.storage.name!r}, whose shape is {tuple(self.storage.shape)}")
        tensor = _checked(tensor, shape, message)
        assigns = []
        for handle, device in zip(self.storage.handles[self.part.index], self.storage.devices[self.part.index]):
            with tf.device(device):
                assigns.append(tf.raw_ops.AssignVariableOp(resource=handle, value=tensor))
        return tf.group(*assigns, name=f"assign_part_{self.part.index}/{self.storage.name}")
