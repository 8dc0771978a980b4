"""Mutant: an implementation that declines embedding lookups (sparse gradients).

Realistic: a system that supports dense models only and says so with
``NotImplementedError``. The suite lets an implementation decline only the features it
marks optional (reference variables); a declined embedding is non-conformance. Caught
by every property; ``save_fidelity`` is the one checked.
"""

import tensorflow as tf

import saver_impl
from saver_impl import SavedModelBuilder, Saver, strategy  # noqa: F401 - the interface


class AutoDist(saver_impl.AutoDist):
    def create_distributed_session(self):
        if any(op.type == "ResourceGather" for op in tf.compat.v1.get_default_graph().get_operations()):
            raise NotImplementedError("embedding lookups (sparse gradients) are not supported")
        return super().create_distributed_session()
