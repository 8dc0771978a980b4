"""Mutant: entries are keyed by the distributed graph's names (``w/part_0/replica_0``).

Realistic: the saver names each variable after its first stored copy, which is the
original name only for an unpartitioned variable on a parameter server. The
checkpoint then restores only into the same strategy. Caught by ``save_fidelity``
(unexpected and missing keys).
"""

import saver_impl
from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface


class FirstCopyNames(saver_impl.CheckpointPlanner):
    def checkpoint_keys(self, keys, layouts):
        return {layouts[name].parts[0].copies[0].name: name for name in keys.values()}


class Saver(saver_impl.Saver):
    planner = FirstCopyNames()
