"""Mutant: a partitioned variable is saved as its first partition only.

Realistic: the saver reads "the variable" through its first stored part, which is the
whole variable until a strategy partitions it. Caught by ``save_fidelity`` (the key has
the first part's shape).
"""

import dataclasses

import saver_impl
from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface


def first_entry_as_whole(plan):
    """Each key's first entry only, as the whole key (no slice)."""
    first = {}
    for entry in plan.entries:
        first.setdefault(entry.key, dataclasses.replace(entry, slice_spec=""))
    return dataclasses.replace(plan, entries=tuple(first.values()))


class FirstPartOnly(saver_impl.CheckpointPlanner):
    def transform_save_plan(self, plan):
        return first_entry_as_whole(plan)

    def transform_restore_plan(self, plan):
        return first_entry_as_whole(plan)


class Saver(saver_impl.Saver):
    planner = FirstPartOnly()
