"""Shared by the mutants whose bug is in how the Saver sees a variable's parts and mirrors.

saver_impl's Saver builds its save and restore ops from each variable's
:class:`~saver_impl.graph.storage.VariableStorage`: which parts there are, the handles
and devices of each part's copies, and how a whole value is assembled from parts or
written to them. :class:`FaultyStorageSaver` hands the Saver ``faulty(storage)``
instead, and only while it builds those ops: training and ``stored_copies()`` still
use the real storage, and ``saver_impl`` itself is untouched.
"""

from __future__ import annotations

import saver_impl
from saver_impl.graph.storage import VariableStorage


class FaultyStorageSaver(saver_impl.Saver):
    """saver_impl's Saver, seeing every variable's storage through :meth:`faulty`."""

    def faulty(self, storage: VariableStorage) -> VariableStorage:
        """The storage as the buggy Saver sees it (each mutant says how)."""
        raise NotImplementedError

    def _bind(self, sess) -> None:
        dist = sess.dist
        real = dist.storage
        dist.storage = {name: self.faulty(storage) for name, storage in real.items()}
        try:
            super()._bind(sess)
        finally:
            dist.storage = real
