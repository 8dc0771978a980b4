"""Mutant: restore silently leaves ``global_step`` alone (it is in the checkpoint).

Realistic: the step counter is treated as the runtime's own bookkeeping, so a resumed
run counts from 0 again (schedules and summaries restart). Caught by
``restore_fidelity`` and ``fine_tune``.
"""

import dataclasses

import saver_impl
from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface


class GlobalStepNotRestored(saver_impl.CheckpointPlanner):
    def transform_restore_plan(self, plan):
        entries = tuple(
            dataclasses.replace(e, targets=()) if e.variable == "global_step" else e for e in plan.entries
        )
        return dataclasses.replace(plan, entries=entries)


class Saver(saver_impl.Saver):
    planner = GlobalStepNotRestored()
