"""Mutant: the SavedModel's MetaGraph is the distributed graph, not the original one.

Realistic: the builder serializes the graph that actually ran, with its ``/job:``
devices, replica copies and partitions. Caught by ``saved_model`` (plain TensorFlow
cannot even load it).
"""

import saver_impl
from saver_impl import AutoDist, Saver, strategy  # noqa: F401 - the interface


class SavedModelBuilder(saver_impl.SavedModelBuilder):
    def exported_graph(self, sess):
        return sess.distributed_graph
