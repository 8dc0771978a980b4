"""Mutant: entries are keyed by the distributed graph's names (``w/part_0/replica_0``).

Realistic: the saver names each variable after its first stored copy, which is the
original name only for an unpartitioned variable on a parameter server. The
checkpoint then restores only into the same strategy. Caught by ``save_fidelity``
(unexpected and missing keys).
"""

import saver_impl
from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface


class Saver(saver_impl.Saver):
    def _bind(self, sess):
        self._storage = sess.dist.storage
        super()._bind(sess)

    def _checkpoint_keys(self, original_graph):
        names = super()._checkpoint_keys(original_graph).values()
        return {self._storage[name].handles[0][0].op.name: name for name in names}
