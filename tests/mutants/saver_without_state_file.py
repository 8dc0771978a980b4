"""Mutant: ``Saver.save`` never updates the ``checkpoint`` state file.

Realistic: only the chief's checkpoint writer is wired up, not the bookkeeping, so
``tf.train.latest_checkpoint(dir)`` — the usual way to find what to resume from —
returns None (or an old checkpoint). Caught by ``save_fidelity``, which asks
``tf.train.latest_checkpoint`` for the checkpoint it just saved.
"""

import saver_impl
from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface


class Saver(saver_impl.Saver):
    def save(self, sess, save_path, global_step=None, latest_filename=None, meta_graph_suffix="meta",
             write_meta_graph=True, write_state=True, **kwargs):
        return super().save(sess, save_path, global_step, latest_filename, meta_graph_suffix,
                            write_meta_graph, write_state=False, **kwargs)
