"""Mutant: ``Saver.save`` names the new checkpoint in the state file before writing its data.

Realistic: the bookkeeping goes first (so that a monitor sees a save in progress, or
because writing the small file first looked harmless), and a save that then fails — a
node gone during the data write — leaves ``tf.train.latest_checkpoint`` naming a
checkpoint that was never completed: a resumed run restores from nothing. Every save
that succeeds ends exactly as the reference's, so only a failing save shows it. Caught
by ``crash_consistency``.
"""

import os

import tensorflow as tf

import saver_impl
from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface


class Saver(saver_impl.Saver):
    def save(self, sess, save_path, global_step=None, latest_filename=None, meta_graph_suffix="meta",
             write_meta_graph=True, write_state=True, **kwargs):
        if write_state:
            if global_step is not None and not isinstance(global_step, int):
                global_step = tf.compat.v1.train.global_step(sess, global_step)
            prefix = os.path.abspath(save_path if global_step is None else f"{save_path}-{global_step}")
            tf.compat.v1.train.update_checkpoint_state(
                os.path.dirname(prefix), prefix, [*self.last_checkpoints, prefix],
                latest_filename=latest_filename)
        return super().save(sess, save_path, global_step, latest_filename, meta_graph_suffix,
                            write_meta_graph, write_state, **kwargs)
