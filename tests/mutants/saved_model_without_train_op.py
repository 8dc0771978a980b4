"""Mutant: the SavedModel does not record the train op, so a loader cannot fine-tune.

Realistic: the builder is TensorFlow's own, which only exports what the user put in the
``saved_model_train_op`` collection. The ``saved_model`` property catches it: the
fresh plain-TensorFlow loader finds no train op.
"""

import saver_impl
from saver_impl import AutoDist, Saver, strategy  # noqa: F401 - the interface


class SavedModelBuilder(saver_impl.SavedModelBuilder):
    def exported_train_op(self, sess):
        return None
