"""Mutant: the parts' stored copies are matched to the wrong slices of the variable.

Realistic: the copies are listed in another order than the slices (here reversed; e.g.
part names sorted as strings put ``part_10`` before ``part_2``). With parts of equal
size the checkpoint has the right keys and shapes, only the rows are swapped, and a
restore through the same Saver swaps them back, so a round trip through it trains on
correctly. Caught by ``save_fidelity`` (values after k steps).
"""

import dataclasses

import saver_impl
from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface


def copies_reversed(plan, fields):
    """``plan`` with the copy ``fields`` of each key's entries in reverse order."""
    by_key = {}
    for entry in plan.entries:
        by_key.setdefault(entry.key, []).append(entry)
    entries = []
    for group in by_key.values():
        for entry, other in zip(group, reversed(group)):
            entries.append(dataclasses.replace(entry, **{f: getattr(other, f) for f in fields}))
    return dataclasses.replace(plan, entries=tuple(entries))


class PartsReversed(saver_impl.CheckpointPlanner):
    def transform_save_plan(self, plan):
        return copies_reversed(plan, ("sources", "checks", "writer"))

    def transform_restore_plan(self, plan):
        return copies_reversed(plan, ("parts", "targets"))


class Saver(saver_impl.Saver):
    planner = PartsReversed()
