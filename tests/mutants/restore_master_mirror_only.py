"""Mutant: restore writes only the master replica's mirror of each mirrored part.

Realistic: the saver is given only the copy it saves from (the master mirror), so a
restore leaves the other replicas at their initial values and they compute their next
gradients from those (and the check that mirrors agree before a save is skipped).
Caught by ``restore_fidelity`` (through ``stored_copies()``) and by ``fine_tune``
(through training).
"""

import dataclasses

import saver_impl
from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface


class MasterCopiesOnly(saver_impl.CheckpointPlanner):
    def transform_save_plan(self, plan):
        return dataclasses.replace(plan, entries=tuple(dataclasses.replace(e, checks=()) for e in plan.entries))

    def transform_restore_plan(self, plan):
        entries = tuple(
            dataclasses.replace(e, targets=tuple(t for t in e.targets if t.copy == 0)) for e in plan.entries
        )
        return dataclasses.replace(plan, entries=entries)


class Saver(saver_impl.Saver):
    planner = MasterCopiesOnly()
