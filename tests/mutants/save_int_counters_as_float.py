"""Mutant: integer variables (counters, ``global_step``) are written as float32.

Realistic: a saver that stores every variable as a floating-point tensor (tensorpack#148
and tensorflow#31070 are int32/int64 step counters mishandled across devices); restore
casts back, so the round trip through the same Saver looks fine while TensorFlow's own
Saver finds float32 where the original graph has an integer. Caught by ``save_fidelity``
(the dtype of the checkpoint's keys).
"""

import tensorflow as tf

import saver_impl
from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface


class FloatCounters(saver_impl.CheckpointPlanner):
    def transform_save_value(self, entry, value):
        if entry.dtype.startswith("int"):
            return tf.cast(value, tf.float32)
        return value

    def transform_restored_value(self, entry, value):
        return tf.cast(value, entry.dtype)


class Saver(saver_impl.Saver):
    planner = FloatCounters()
