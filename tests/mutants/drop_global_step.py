"""Mutant: the checkpoint leaves out ``global_step``.

Realistic: the step counter lives on the aux device as shared optimizer state and is
mistaken for the runtime's bookkeeping rather than a variable of the user's graph.
Caught by ``save_fidelity`` (missing key).
"""

import saver_impl
from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface


class WithoutGlobalStep(saver_impl.CheckpointPlanner):
    def checkpoint_keys(self, keys, layouts):
        return {key: name for key, name in keys.items() if key != "global_step"}


class Saver(saver_impl.Saver):
    planner = WithoutGlobalStep()
