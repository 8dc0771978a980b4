"""Mutant: restore silently leaves ``global_step`` alone (it is in the checkpoint).

Realistic: the step counter is treated as the runtime's own bookkeeping, so a resumed
run counts from 0 again (schedules and summaries restart). Caught by
``restore_fidelity`` and ``fine_tune``.
"""

import tensorflow as tf

from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface
from saver_impl.graph.storage import VariableStorage
from tests.mutants._faulty_storage import FaultyStorageSaver


class GlobalStepNotRestored(VariableStorage):
    def assign_all(self, full_value):
        if self.name == "global_step":
            return tf.no_op()
        return super().assign_all(full_value)


class Saver(FaultyStorageSaver):
    def faulty(self, storage):
        return GlobalStepNotRestored(**vars(storage))
