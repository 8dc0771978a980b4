"""Mutant: the parts' stored copies are matched to the wrong slices of the variable.

Realistic: the copies are listed in another order than the slices (here reversed; e.g.
part names sorted as strings put ``part_10`` before ``part_2``). With parts of equal
size the checkpoint has the right keys and shapes, only the rows are swapped, and a
restore through the same Saver swaps them back, so a round trip through it trains on
correctly. Caught by ``save_fidelity`` (values after k steps).
"""

import dataclasses

from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface
from tests.mutants._faulty_storage import FaultyStorageSaver


class Saver(FaultyStorageSaver):
    def faulty(self, storage):
        return dataclasses.replace(storage, handles=storage.handles[::-1], devices=storage.devices[::-1])
