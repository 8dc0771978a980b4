"""Aggregation across replicas: :class:`GradientAggregation`, by default exactly as the
equivalence contract says:

* dense: the sum of the replicas' gradients, added left to right in replica order,
  then divided by R;
* sparse (IndexedSlices): indices and values concatenated in replica order, then the
  values divided by R;
* state that is not a gradient (batch-norm statistics, a counter's increment, anything
  of the forward pass the train op reads): replica 0's value.

A partitioned variable's gradient is first split per part on each replica (a split is a
copy, and aggregation is elementwise, so the bytes are those of aggregating the full
gradient), then aggregated where the part's copy lives.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from saver_impl.graph.placement import VariableStorage

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
            # The rows of this part, in order; gathered explicitly because building
            # tf.boolean_mask costs about 10 ms of graph construction per call.
            rows = tf.reshape(tf.where(tf.logical_and(indices >= part.offset, indices < part.offset + part.size)), [-1])
            offset = tf.constant(part.offset, dtype=indices.dtype)
            result.append([tf.gather(values, rows), tf.gather(indices, rows) - offset])
    else:
        for piece in tf.split(values, sizes, axis=axis):
            result.append([piece, indices])
    if len(components) > 2:
        shape_dtype = components[2].dtype
        for part, comps in zip(parts, result):
            comps.append(tf.constant(part.shape, dtype=shape_dtype))
    return result


class GradientAggregation:
    """How the replicas' values are combined into the one step the train op applies.

    ``AutoDist(..., aggregation=...)`` takes an instance; the graph transformation calls
    :meth:`aggregate` once per gradient part and copy, where that copy lives, with the
    replicas' gradients in replica order, and :meth:`state` once per other value of the
    replicas' forward pass that the train op reads. Override :meth:`dense`,
    :meth:`sparse` or :meth:`state` to combine differently; the defaults are the
    equivalence contract's rules.
    """

    def dense(self, gradients: list[Any]) -> Any:
        """One dense gradient from the replicas': their sum, added left to right, divided by R."""
        total = gradients[0]
        for gradient in gradients[1:]:
            total = tf.math.add(total, gradient)
        return tf.math.truediv(total, tf.constant(len(gradients), dtype=total.dtype))

    def sparse(self, values: list[Any], indices: list[Any]) -> tuple[Any, Any]:
        """One IndexedSlices gradient from the replicas' ``(values, indices)``: both
        concatenated in replica order, the values divided by R."""
        divisor = tf.constant(len(values), dtype=values[0].dtype)
        return tf.math.truediv(tf.concat(values, axis=0), divisor), tf.concat(indices, axis=0)

    def state(self, per_replica: list[Any]) -> Any:
        """The value the train op reads of a forward-pass tensor that is not a gradient
        (a batch's moments for batch-norm moving averages...): replica 0's."""
        return per_replica[0]

    def aggregate(self, per_replica: list[Components], sparse: bool) -> Components:
        """The aggregated components from each replica's (what the transformation calls)."""
        if sparse:
            values, indices = self.sparse([c[0] for c in per_replica], [c[1] for c in per_replica])
            return [values, indices, *per_replica[0][2:]]
        return [self.dense([c[0] for c in per_replica])]
