"""Mutant: restore writes only the master replica's mirror of each mirrored part.

Realistic: the saver is given only the copy it saves from (the master mirror), so a
restore leaves the other replicas at their initial values and they compute their next
gradients from those (and the check that mirrors agree before a save is skipped).
Caught by ``restore_fidelity`` (through ``stored_copies()``) and by ``fine_tune``
(through training).
"""

import dataclasses

from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface
from tests.mutants._faulty_storage import FaultyStorageSaver


class Saver(FaultyStorageSaver):
    def faulty(self, storage):
        return dataclasses.replace(
            storage,
            handles=[copies[:1] for copies in storage.handles],
            devices=[copies[:1] for copies in storage.devices],
        )
