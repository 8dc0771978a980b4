"""Mutant: a tied embedding's gradient comes from its lookup only.

Realistic: an implementation routes an embedding table's gradient through its lookup
(the sparse path) and drops what the other layer reading the same table contributes —
the tied weights of DeepSpeed#3824 and verl#7834, whose second use goes untrained. Here
``emb`` is also the output projection; ``tf.gradients`` sums both uses (an ``AddN`` of
the projection's dense gradient and the lookup's ``UnsortedSegmentSum``), and the mutant
keeps the lookup's term. Caught by ``save_fidelity`` (``emb`` differs from the oracle
after k steps) whenever a case ties the embedding.

The bug is planted in ``AutoDist(aggregation=...)`` through TensorFlow's public graph
API: each replica's gradient (or the full gradient a part was split from) is replaced
by the lookup's term of the ``AddN`` it is.
"""

import tensorflow as tf

import saver_impl
from saver_impl import SavedModelBuilder, Saver, strategy  # noqa: F401 - the interface


def lookup_term(gradient):
    """The lookup's term of a tied table's gradient (an AddN with an UnsortedSegmentSum), or None."""
    if gradient.op.type != "AddN":
        return None
    terms = [t for t in gradient.op.inputs if t.op.type == "UnsortedSegmentSum"]
    return terms[0] if len(terms) == 1 and len(gradient.op.inputs) > 1 else None


def without_other_uses(part):
    """``part`` recomputed from the lookup's term only, or None if it is not a tied gradient."""
    if part.op.type == "SplitV":  # a partitioned variable: the part of a split full gradient
        full, sizes, axis = part.op.inputs
        term = lookup_term(full)
        if term is None:
            return None
        return tf.split(term, sizes, axis=axis, num=len(part.op.outputs))[part.value_index]
    return lookup_term(part)


class LookupOnlyTiedGradient(saver_impl.GradientAggregation):
    def aggregate(self, per_replica, sparse):
        if not sparse:
            replaced = [without_other_uses(components[0]) for components in per_replica]
            if all(r is not None for r in replaced):
                per_replica = [[r] for r in replaced]
        return super().aggregate(per_replica, sparse)


class AutoDist(saver_impl.AutoDist):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, aggregation=LookupOnlyTiedGradient(), **kwargs)
