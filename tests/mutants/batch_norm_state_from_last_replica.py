"""Mutant: state updates that are not gradients read the last replica's forward pass.

Realistic: tensorflow/models#100 asks which tower's batch-norm moving averages a
multi-tower model keeps; an implementation that runs the update ops on whichever
replica's statistics it happens to hold (here the last one) trains the weights
correctly but stores moving averages of another micro-batch than the contract's
replica 0. Caught by ``save_fidelity`` (``bn/moving_mean`` differs from the oracle
after k steps) whenever a case has batch norm and two or more replicas.
"""

import saver_impl
from saver_impl import SavedModelBuilder, Saver, strategy  # noqa: F401 - the interface


class LastReplicaState(saver_impl.GradientAggregation):
    def state(self, per_replica):
        return per_replica[-1]


class AutoDist(saver_impl.AutoDist):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, aggregation=LastReplicaState(), **kwargs)
