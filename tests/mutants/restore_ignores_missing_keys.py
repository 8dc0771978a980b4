"""Mutant: a restore that cannot find a key keeps the variables' initial values.

Realistic: a "warm start" restore that treats a missing key as nothing to restore (a
``NotFoundError`` swallowed), so a checkpoint of an older or smaller model silently
trains from initial values. TensorFlow's own Saver raises ``NotFoundError`` naming the
key. Caught by ``restore_fidelity`` (d).
"""

import tensorflow as tf

import saver_impl
from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface


class Saver(saver_impl.Saver):
    def restore(self, sess, save_path):
        try:
            return super().restore(sess, save_path)
        except tf.errors.NotFoundError:
            return None
