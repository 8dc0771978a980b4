"""Mutant: the SavedModel holds the variables' initial values, not the trained ones.

Realistic: the builder runs the variables' initializer "to make sure every variable
has a value" before saving, as code written for fresh models does. Caught by
``saved_model`` (the loaded variables differ from the oracle's after k steps).
"""

import tensorflow as tf

import saver_impl
from saver_impl import AutoDist, Saver, strategy  # noqa: F401 - the interface


class SavedModelBuilder(saver_impl.SavedModelBuilder):
    def add_meta_graph_and_variables(self, sess, tags, *args, **kwargs):
        with sess.graph.as_default():
            sess.run(tf.compat.v1.global_variables_initializer())
        return super().add_meta_graph_and_variables(sess, tags, *args, **kwargs)
