"""Mutant: ``Saver.save`` writes the ``.meta`` file of the distributed graph.

Realistic: the saver exports the graph that ran, so ``tf.train.import_meta_graph`` on
the checkpoint brings ``/job:`` devices and replica copies into the user's process —
the very thing the design says an exported MetaGraph must not hold. No property
reads the ``.meta`` file that ``save`` writes, so none catches it.
"""

import saver_impl
from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface


class Saver(saver_impl.Saver):
    def exported_graph(self, sess):
        return sess.distributed_graph
