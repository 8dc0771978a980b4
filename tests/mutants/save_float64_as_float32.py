"""Mutant: float64 variables saved as one whole tensor are written as float32.

Realistic: a "compact checkpoint" cast left on where the saver assembles a whole
variable (every unpartitioned one); restore casts back, so a round trip through the
same Saver looks fine but has lost precision. Caught by ``save_fidelity`` (the dtype of
the checkpoint's keys).
"""

import tensorflow as tf

from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface
from saver_impl.graph.storage import VariableStorage
from tests.mutants._faulty_storage import FaultyStorageSaver


class Float32Checkpoint(VariableStorage):
    def assemble(self, part_values):
        value = super().assemble(part_values)
        return tf.cast(value, tf.float32) if value.dtype == tf.float64 else value

    def split(self, full_value):
        return super().split(tf.cast(full_value, self.dtype))


class Saver(FaultyStorageSaver):
    def faulty(self, storage):
        return Float32Checkpoint(**vars(storage))
