"""Mutant: the SavedModel does not record the train op, so a loader cannot fine-tune.

Realistic: the builder is TensorFlow's own, which only exports what the user put in the
``saved_model_train_op`` collection. The ``saved_model`` property catches it: the
fresh plain-TensorFlow loader finds no train op.
"""

import tensorflow as tf

import saver_impl
from saver_impl import AutoDist, Saver, strategy  # noqa: F401 - the interface


class SavedModelBuilder(saver_impl.SavedModelBuilder):
    def add_meta_graph_and_variables(self, sess, tags, *args, **kwargs):
        # TensorFlow's builder, skipping the reference's registration of the train op.
        with sess.graph.as_default():
            return tf.compat.v1.saved_model.Builder.add_meta_graph_and_variables(self, sess, tags, *args, **kwargs)
