"""Mutant: the Saver ignores ``keep_checkpoint_every_n_hours``.

Realistic: a Saver that reimplements retention from ``max_to_keep`` alone deletes the
checkpoints TensorFlow keeps by age, so a long run loses the snapshots its user meant
to keep. Caught by ``saver_api``: after the first retirement the directory holds fewer
files than TensorFlow's Saver leaves.
"""

import saver_impl
from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface


class Saver(saver_impl.Saver):
    def __init__(self, *args, keep_checkpoint_every_n_hours=10000.0, **kwargs):
        super().__init__(*args, **kwargs)
