"""Mutant: slots of a variable partitioned along axis 1 or later are saved as if split on axis 0.

Realistic: tensorflow#19457 and #5813 are slots that do not follow their variable's
partitioning. This saver handles the variables themselves right, but joins a slot's
parts along axis 0 (the usual partition axis) and reshapes the result to the slot's
shape, so the bytes land in the wrong order; its restore undoes the same reshape, so a
round trip through this Saver looks fine. TensorFlow's reader sees a scrambled slot.
(Parts of unequal sizes cannot even be joined: its save then raises.)
Caught by ``save_fidelity`` whenever an optimizer with slots trains a variable
partitioned along an axis other than 0 (a hand-made strategy).
"""

import dataclasses

import tensorflow as tf

import saver_impl
from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface


def full_shape(spec):
    """The whole variable's shape from a TensorFlow slice spec ("4 4 0,4:2,2")."""
    return tuple(int(d) for d in spec.split(" ")[:-1])


def is_slot(variable, variables):
    return any(variable.startswith(f"{other}/") for other in variables if other != variable)


def joined(entries, variables, make):
    """Each slot's slice entries along an axis > 0 replaced by one whole entry from ``make``."""
    result, done = [], set()
    for entry in entries:
        if not (entry.slice_spec and entry.axis > 0 and is_slot(entry.variable, variables)):
            result.append(entry)
        elif entry.key not in done:
            done.add(entry.key)
            result.append(make([e for e in entries if e.key == entry.key]))
    return tuple(result)


class SlotsJoinedOnAxis0(saver_impl.CheckpointPlanner):
    def transform_save_plan(self, plan):
        variables = {e.variable for e in plan.entries}
        return dataclasses.replace(plan, entries=joined(plan.entries, variables, lambda parts: dataclasses.replace(
            parts[0], shape=full_shape(parts[0].slice_spec), slice_spec="", axis=0,
            sources=tuple(s for p in parts for s in p.sources), checks=tuple(c for p in parts for c in p.checks))))

    def transform_restore_plan(self, plan):
        variables = {e.variable for e in plan.entries}

        def whole(parts):
            # The parts stacked along axis 0: the shape this restore reshapes the value to.
            rows = tuple(p.shape[0] for p in parts)
            return dataclasses.replace(
                parts[0], shape=(sum(rows), *parts[0].shape[1:]), slice_spec="", reshape=True, axis=0,
                parts=tuple(i for p in parts for i in p.parts), sizes=rows,
                targets=tuple(t for p in parts for t in p.targets))

        return dataclasses.replace(plan, entries=joined(plan.entries, variables, whole))

    def transform_save_value(self, entry, value):
        if not entry.slice_spec and len(entry.sources) > 1 and entry.axis == 0:
            return tf.reshape(value, list(entry.shape))
        return value


class Saver(saver_impl.Saver):
    planner = SlotsJoinedOnAxis0()
