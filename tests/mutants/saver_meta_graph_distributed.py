"""Mutant: ``Saver.save`` writes the ``.meta`` file of the distributed graph.

Realistic: the saver exports the graph that ran, so ``tf.train.import_meta_graph`` on
the checkpoint brings ``/job:`` devices and replica copies into the user's process —
the very thing the design says an exported MetaGraph must not hold. No property
reads the ``.meta`` file that ``save`` writes, so none catches it.
"""

import tensorflow as tf

import saver_impl
from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface


class Saver(saver_impl.Saver):
    def save(self, sess, save_path, global_step=None, latest_filename=None, meta_graph_suffix="meta",
             write_meta_graph=True, **kwargs):
        path = super().save(sess, save_path, global_step, latest_filename, meta_graph_suffix,
                            write_meta_graph=False, **kwargs)
        if write_meta_graph:
            tf.compat.v1.train.export_meta_graph(f"{path}.{meta_graph_suffix}", graph=sess.distributed_graph)
        return path
