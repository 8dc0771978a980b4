"""Mutant: the checkpoint leaves out the optimizer's slot variables (``w/Adam``, ...).

Realistic: a filter meant to hide a variable's distributed parts (``w/part_0``) skips
every variable named under another variable, which is exactly where TensorFlow names
the slots. A restored run then restarts Adam's moments from zero. Caught by
``save_fidelity`` (missing keys).
"""

import saver_impl
from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface


class WithoutNestedNames(saver_impl.CheckpointPlanner):
    def checkpoint_keys(self, keys, layouts):
        return {key: name for key, name in keys.items() if not any(key.startswith(f"{other}/") for other in keys)}


class Saver(saver_impl.Saver):
    planner = WithoutNestedNames()
