"""Mutant: a partitioned variable is saved as its first partition only.

Realistic: the saver reads "the variable" through its first stored part, which is the
whole variable until a strategy partitions it. Caught by ``save_fidelity`` (the key has
the first part's shape).
"""

import dataclasses

from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface
from tests.mutants._faulty_storage import FaultyStorageSaver


class Saver(FaultyStorageSaver):
    def faulty(self, storage):
        return dataclasses.replace(
            storage, parts=storage.parts[:1], handles=storage.handles[:1], devices=storage.devices[:1])
