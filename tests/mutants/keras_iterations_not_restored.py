"""Mutant: restore leaves a Keras 2 optimizer's ``iterations`` (``Adam/iter``) alone.

Realistic: ``iterations`` looks like the runtime's own step count rather than state of
the user's graph, so a resumed run counts from 0 again and Keras Adam's bias correction
restarts, while every weight and slot is restored. Caught by ``restore_fidelity``
(``Adam/iter`` keeps the target's value) and ``fine_tune``, for any Keras optimizer.
"""

import dataclasses

import saver_impl
from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface


class IterationsNotRestored(saver_impl.CheckpointPlanner):
    def transform_restore_plan(self, plan):
        entries = tuple(
            dataclasses.replace(e, targets=()) if e.key.endswith("/iter") else e for e in plan.entries
        )
        return dataclasses.replace(plan, entries=entries)


class Saver(saver_impl.Saver):
    planner = IterationsNotRestored()
