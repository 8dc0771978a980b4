"""Mutant: the checkpoint holds the slots of one optimizer only, when a train op has two.

Realistic: AutoDist-style systems capture "the" optimizer of a program; an
implementation that takes the slot names from the first variable that has slots
(``dense_0/kernel/Adam``, ``.../Adam_1``) drops every slot of another name
(``out/kernel/Adagrad`` of a second optimizer for the output layer), so a resumed run
restarts that optimizer's state (pytorch#143828, Megatron-LM PR#5835: several parameter
groups). Caught by ``save_fidelity`` (a missing key) when the two optimizers name their
slots differently.
"""

import saver_impl
from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface


def slot_name(key, keys):
    """The slot part of ``key`` ("Adam" of "dense_0/kernel/Adam") if it is a slot, else None."""
    primaries = [other for other in keys if key.startswith(f"{other}/")]
    return key[len(max(primaries, key=len)) + 1:] if primaries else None


class FirstOptimizerSlots(saver_impl.CheckpointPlanner):
    def checkpoint_keys(self, keys, layouts):
        slots = {key: slot_name(key, keys) for key in keys}
        first = next((key for key in keys if slot_name(key, keys)), None)
        if first is None:
            return keys
        primary = first[: -len(slots[first]) - 1]
        known = {slots[key] for key in keys if slots[key] and key.startswith(f"{primary}/")}
        return {key: name for key, name in keys.items() if slots[key] is None or slots[key] in known}


class Saver(saver_impl.Saver):
    planner = FirstOptimizerSlots()
