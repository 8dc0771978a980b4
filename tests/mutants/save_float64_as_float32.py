"""Mutant: float64 variables saved as one whole tensor are written as float32.

Realistic: a "compact checkpoint" cast left on where the saver assembles a whole
variable (every unpartitioned one); restore casts back, so a round trip through the
same Saver looks fine but has lost precision. Caught by ``save_fidelity`` (the dtype of
the checkpoint's keys).
"""

import tensorflow as tf

import saver_impl
from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface


class Float32Checkpoint(saver_impl.CheckpointPlanner):
    def transform_save_value(self, entry, value):
        if entry.dtype == "float64" and not entry.slice_spec:
            return tf.cast(value, tf.float32)
        return value

    def transform_restored_value(self, entry, value):
        return tf.cast(value, entry.dtype)


class Saver(saver_impl.Saver):
    planner = Float32Checkpoint()
