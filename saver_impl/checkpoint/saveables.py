"""Saveable objects built from checkpoint plan entries (:mod:`.plan`).

A :class:`PlannedSaveable` writes one :class:`~.plan.SaveEntry` (its sources' values,
after an in-graph check that every checked copy has the same bytes) and restores one
:class:`~.plan.RestoreEntry` (the value read, written into every target copy). Where
things happen is the plan's decision; this module only builds the ops.

TensorFlow's own restore of those saveables reads every key once, on one task, and
sends each target copy its bytes from there: a value mirrored on R tasks crosses the
network R times. :func:`local_restore` builds the other restore the Saver uses when
every task holding a copy sees the checkpoint: each task reads, from its own view of
the files, the keys it holds copies of and writes only its own copies.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import tensorflow as tf
from tensorflow.python.training.saving import saveable_object

from saver_impl.checkpoint.plan import CopyRef, RestoreEntry, SaveEntry, task_device
from saver_impl.checkpoint.planner import CheckpointPlanner
from saver_impl.graph.placement import VariableStorage


def _fingerprint(storage: VariableStorage, copy: CopyRef) -> Any:
    """A 64-bit farmhash of one copy's raw bytes, computed on the copy's own device.

    Hashing raw bytes compares bit patterns (NaN payloads and -0.0 count), and only
    the 8-byte fingerprint travels to the saving task, not the copy itself.
    """
    value = storage.read_part(copy.part, copy.copy)
    with tf.device(copy.device):
        return tf.raw_ops.Fingerprint(data=tf.reshape(value, [1, -1]), method="farmhash64")


def _mirror_checks(storage: VariableStorage, source: CopyRef, checks: list[CopyRef]) -> list[Any]:
    """In-graph checks that every copy of ``checks`` has the same bytes as ``source``
    (each fails naming the variable if not).

    Copies are compared by fingerprints of their bytes (a collision needs two different
    copies with the same 64-bit farmhash), so a save moves one copy, not R.
    """
    if not checks:
        return []
    expected = _fingerprint(storage, source)
    return [
        tf.debugging.Assert(
            tf.reduce_all(tf.equal(expected, _fingerprint(storage, other))),
            [
                f"mirrors of variable {storage.name} differ: replica {other.copy} "
                f"(part {other.part}) is not bitwise equal to replica {source.copy}, the one saved; "
                "refusing to save one of them silently"
            ],
            name=f"check_mirrors/{storage.name}",
        )
        for other in checks
    ]


class PlannedSaveable(saveable_object.SaveableObject):
    """One save entry and the restore entry of the same key and slice.

    Its spec's tensor is the value written, read only after the mirror checks passed.
    The same value without that order is :attr:`unchecked_value`, and the checks are
    :attr:`mirror_checks`: a save that runs both in one step, and keeps nothing of a
    step that fails, writes and checks at the same time
    (:class:`~.parallel_save.ParallelSave`).

    Args:
        save, restore: the paired entries (same key and slice spec).
        storage: every variable's copies in the distributed graph, by name.
        planner: transforms the value written and the value read.
        name: a name unique among the Saver's saveables.
    """

    def __init__(self, save: SaveEntry, restore: RestoreEntry, storage: Mapping[str, VariableStorage],
                 planner: CheckpointPlanner, name: str):
        self.entry = restore
        self.storage = storage[restore.variable]
        self.planner = planner
        source_storage = storage[save.variable]
        with tf.device(save.writer):
            self.mirror_checks = [
                check for source in save.sources
                for check in _mirror_checks(source_storage, source, [c for c in save.checks if c.part == source.part])
            ]
            values = [source_storage.read_part(source.part, source.copy) for source in save.sources]
            value = values[0] if len(values) == 1 else tf.concat(values, axis=save.axis)
            self.unchecked_value = planner.transform_save_value(save, value)
            if self.mirror_checks:
                with tf.control_dependencies(self.mirror_checks):
                    value = tf.identity(self.unchecked_value)
            else:
                value = self.unchecked_value
        spec = saveable_object.SaveSpec(value, save.slice_spec, save.key, dtype=value.dtype, device=save.writer)
        super().__init__(value, [spec], name)

    def restore(self, restored_tensors, restored_shapes):
        (tensor,) = restored_tensors
        return write_restored(self.entry, self.planner.transform_restored_value(self.entry, tensor), self.storage)


def write_restored(entry: RestoreEntry, tensor: Any, storage: VariableStorage) -> Any:
    """An op writing ``tensor``, read for ``entry``, into every target copy of the entry."""
    # The checkpoint's shapes were checked on the client (:mod:`.restorable`).
    if entry.reshape:
        tensor = tf.reshape(tensor, list(entry.shape))
    pieces = [tensor] if len(entry.parts) == 1 else tf.split(tensor, list(entry.sizes), axis=entry.axis)
    by_part = dict(zip(entry.parts, pieces))
    assigns = [storage.assign(target.part, target.copy, by_part[target.part]) for target in entry.targets]
    return tf.group(*assigns, name=f"restore/{storage.name}")


# A task reads its keys in batches of about this many bytes, one batch written before the
# next is read: a restore holds at most one batch (or one larger tensor) per task in
# memory besides the variables, and a batch is large enough that a read's per-op cost
# does not count.
READ_BATCH_BYTES = 32 << 20


def copy_tasks(saveables: Sequence[PlannedSaveable]) -> tuple[str, ...]:
    """The tasks (their CPU:0 devices) holding a copy that a restore of ``saveables`` writes."""
    return tuple(sorted({task_device(t.device) for s in saveables for t in s.entry.targets}))


def local_restore(saveables: Sequence[PlannedSaveable], prefix: Any) -> Any:
    """An op restoring every target copy of ``saveables`` from the checkpoint ``prefix``
    (a string tensor), read on the copy's own task: each task runs ``RestoreV2`` on its
    CPU:0 for the keys (and slices) it holds copies of, in batches of
    :data:`READ_BATCH_BYTES`, and writes the values into its own copies only.

    Every task must see the checkpoint at ``prefix`` as the client does (the Saver checks
    that first, :func:`~.visibility.sees_checkpoint`). A task's reads are those of
    TensorFlow's own restore restricted to its copies (the same keys, slices and
    dtypes, the same planner transform), so both restores write the
    same bytes.
    """
    by_task: dict[str, list[tuple[PlannedSaveable, RestoreEntry]]] = {}
    for saveable in saveables:
        targets: dict[str, list[CopyRef]] = {}
        for target in saveable.entry.targets:
            targets.setdefault(task_device(target.device), []).append(target)
        for task, local in targets.items():
            by_task.setdefault(task, []).append((saveable, dataclasses.replace(saveable.entry, targets=tuple(local))))
    writes = []
    for task, reads in sorted(by_task.items()):
        written: list[Any] = []
        for batch in _batches(reads):
            specs = [saveable.specs[0] for saveable, _ in batch]
            with tf.device(task), tf.control_dependencies(written):
                values = tf.raw_ops.RestoreV2(
                    prefix=prefix, tensor_names=[spec.name for spec in specs],
                    shape_and_slices=[spec.slice_spec for spec in specs], dtypes=[spec.dtype for spec in specs],
                    name="read_locally")
                written = [
                    write_restored(entry, saveable.planner.transform_restored_value(entry, value), saveable.storage)
                    for (saveable, entry), value in zip(batch, values)
                ]
            writes += written
    return tf.group(*writes, name="restore_locally")


def _batches(reads: list[tuple[PlannedSaveable, RestoreEntry]]) -> Iterator[list[tuple[PlannedSaveable, RestoreEntry]]]:
    """``reads`` in consecutive batches of about :data:`READ_BATCH_BYTES` each."""
    batch: list[tuple[PlannedSaveable, RestoreEntry]] = []
    size = 0
    for saveable, entry in reads:
        batch.append((saveable, entry))
        size += _bytes(entry)
        if size >= READ_BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _bytes(entry: RestoreEntry) -> int:
    return math.prod(entry.shape) * max(tf.as_dtype(entry.dtype).size, 1)  # strings count a byte each
