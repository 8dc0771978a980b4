"""Mutant: every replica's gradients are clipped with the master replica's factor.

Realistic: ``tf.clip_by_global_norm``'s factor ``clip_norm / max(norm, clip_norm)`` is a
value of the forward and backward pass that is not a gradient, and an implementation
that shares such values from the master replica (as it must for batch-norm statistics)
applies replica 0's factor to all replicas' gradients — the cousin of a global norm
computed over one rank's shard only (pytorch#170862). The contract has each replica
clip its own gradients by their own global norm. Caught by ``save_fidelity`` whenever
clipping bites and the replicas' norms differ (two or more replicas).

The bug is planted in ``AutoDist(aggregation=...)``: before the contract's aggregation,
each replica's clipped gradient (found through TensorFlow's public graph API: the
``Mul`` of ``clip_by_global_norm`` it comes from) is rescaled to replica 0's factor.
"""

import tensorflow as tf

import saver_impl
from saver_impl import SavedModelBuilder, Saver, strategy  # noqa: F401 - the interface


def clip_factor(tensor):
    """The factor ``tf.clip_by_global_norm`` multiplied ``tensor``'s source by, or None."""
    frontier, seen = [tensor.op], set()
    while frontier:
        op = frontier.pop(0)
        if op.name in seen:
            continue
        seen.add(op.name)
        if op.type == "Mul" and "clip_by_global_norm/mul" in op.name:
            return op.inputs[1]
        frontier += [t.op for t in op.inputs]
    return None


class MasterReplicaClipFactor(saver_impl.GradientAggregation):
    def aggregate(self, per_replica, sparse):
        factors = [clip_factor(components[0]) for components in per_replica]
        if any(f is None for f in factors):
            return super().aggregate(per_replica, sparse)
        dtype = per_replica[0][0].dtype
        master = tf.cast(factors[0], dtype)
        rescaled = [[components[0] / tf.cast(factor, dtype) * master, *components[1:]]
                    for components, factor in zip(per_replica, factors)]
        return super().aggregate(rescaled, sparse)


class AutoDist(saver_impl.AutoDist):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, aggregation=MasterReplicaClipFactor(), **kwargs)
