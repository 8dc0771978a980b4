"""Gradient aggregation exactly as the equivalence contract says.

* dense: the sum of the replicas' gradients, added left to right in replica order,
  then divided by R;
* sparse (IndexedSlices): indices and values concatenated in replica order, then the
  values divided by R.

A partitioned variable's gradient is first split per part on each replica (a split is a
copy, and aggregation is elementwise, so the bytes are those of aggregating the full
gradient), then aggregated where the part's copy lives.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from saver_impl.graph.storage import VariableStorage

# A gradient as a list of tensors: [dense] or [values, indices] or [values, indices, dense_shape].
Components = list[Any]


def split_gradient(components: Components, sparse: bool, storage: VariableStorage) -> list[Components]:
    """The gradient components of each part of ``storage``'s variable."""
    if not storage.partitioned:
        return [components]
    parts = storage.parts
    axis = parts[0].axis
    sizes = [p.size for p in parts]
    if not sparse:
        return [[piece] for piece in tf.split(components[0], sizes, axis=axis)]
    values, indices = components[0], components[1]
    result = []
    if axis == 0:
        for part in parts:
            mask = tf.logical_and(indices >= part.offset, indices < part.offset + part.size)
            offset = tf.constant(part.offset, dtype=indices.dtype)
            result.append([tf.boolean_mask(values, mask), tf.boolean_mask(indices, mask) - offset])
    else:
        for piece in tf.split(values, sizes, axis=axis):
            result.append([piece, indices])
    if len(components) > 2:
        shape_dtype = components[2].dtype
        for part, comps in zip(parts, result):
            comps.append(tf.constant(part.shape, dtype=shape_dtype))
    return result


def aggregate(per_replica: list[Components], sparse: bool) -> Components:
    """Aggregate one gradient (or one part of it) over the replicas, in replica order."""
    replicas = len(per_replica)
    first = per_replica[0][0]
    divisor = tf.constant(replicas, dtype=first.dtype)
    if sparse:
        values = tf.concat([c[0] for c in per_replica], axis=0)
        indices = tf.concat([c[1] for c in per_replica], axis=0)
        return [tf.math.truediv(values, divisor), indices, *per_replica[0][2:]]
    total = first
    for components in per_replica[1:]:
        total = tf.math.add(total, components[0])
    return [tf.math.truediv(total, divisor)]
