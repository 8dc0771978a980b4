"""What a restore into a distributed session checks on the client before it runs.

TensorFlow's single-device restore reads every key in one ``RestoreV2`` before it
writes anything, so a checkpoint it cannot read is refused whole. A distributed restore
reads on several tasks, and a task whose keys are fine could write its variables while
another task fails. Checking the checkpoint's index first keeps the refusal whole: every
key the restore reads must be there, with the dtype and the shape it is read as.

Checking on the client also keeps the restore's graph small: the index answers for
every key at once, where an in-graph check costs a few ops per key, in every restore
op the Saver builds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from saver_impl.checkpoint.plan import RestoreEntry


@dataclass(frozen=True)
class ExpectedKey:
    """What one read of a restore needs the checkpoint to hold under ``key``.

    ``shape`` is the whole tensor stored under the key: the variable's shape for a slice
    of it, else the entry's. With ``reshape`` (TensorFlow's ``Saver(reshape=True)``) any
    stored shape of as many elements is read.
    """

    key: str
    dtype: tf.DType
    shape: tuple[int, ...]
    reshape: bool
    what: str  # the read, as an error names it

    @classmethod
    def of(cls, entry: RestoreEntry, dtype: Any, variable_shape: tuple[int, ...]) -> ExpectedKey:
        """The expectation of a read of ``entry`` as ``dtype``, of a variable of ``variable_shape``."""
        if entry.slice_spec:
            what = f"part {entry.parts[0]} of variable {entry.variable!r}, whose shape is {variable_shape}"
            shape = variable_shape
        else:
            what = f"variable {entry.variable!r}, whose shape is {entry.shape}"
            shape = entry.shape
        return cls(entry.key, tf.as_dtype(dtype), tuple(shape), entry.reshape, what)


def check_restorable(save_path: str, expected: Sequence[ExpectedKey]) -> None:
    """Raise TensorFlow's own error for a checkpoint a restore cannot read, naming the
    key: a missing key (``NotFoundError``, with ``RestoreV2``'s wording), or a key of
    another dtype or shape than it is read as (``InvalidArgumentError``)."""
    reader = tf.compat.v1.train.NewCheckpointReader(save_path)
    dtypes = reader.get_variable_to_dtype_map()
    shapes = reader.get_variable_to_shape_map()
    for read in expected:
        if read.key not in dtypes:
            raise tf.errors.NotFoundError(None, None, f"Key {read.key} not found in checkpoint")
        if dtypes[read.key] != read.dtype:
            raise tf.errors.InvalidArgumentError(
                None, None, f"tensor_name = {read.key}; expected dtype {read.dtype.name} does not equal original "
                            f"dtype {dtypes[read.key].name}")
        stored = tuple(shapes[read.key])
        if read.reshape:
            fits = math.prod(stored) == math.prod(read.shape)
        else:
            fits = stored == read.shape
        if not fits:
            raise tf.errors.InvalidArgumentError(
                None, None, f"checkpoint key {read.key!r} has the wrong shape for {read.what}: the checkpoint "
                            f"holds shape {stored}")
