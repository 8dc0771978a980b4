"""Distributed training on the simulated cluster equals the oracle, bit for bit.

Each case trains the model spec of :mod:`tests.specs` (a dense layer, an embedding lookup
with a sparse gradient, a trainable scalar, a non-trainable scalar, global_step; Adam)
with ``saver_impl.AutoDist`` under one strategy builder on one cluster of the session's
pool, and with the suite's oracle for the same number of replicas; every variable and
optimizer slot must have the same bytes, and every step the same loss. The session is
driven directly, not through the suite's harness, because the harness does not return
the losses a session computes.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from autodist_verify import model_graph, model_spec
from autodist_verify.compare import assert_bitwise_equal
from autodist_verify.oracle import Oracle
from cluster_sim import ResourceSpec
from saver_impl import AutoDist
from saver_impl.strategy import ALL_BUILDERS
from tests.specs import SPEC

STEPS = 3
BATCH = 12  # divisible by every replica count used here (1, 2, 3, 4)

CLUSTERS = {
    "1 node": dict(nodes=1),
    "2 nodes, 1 gpu each": dict(nodes=2, gpus_per_node=1),
    "3 nodes": dict(nodes=3),
    "2 nodes, 2 gpus each": dict(nodes=2, gpus_per_node=2),
}


@pytest.fixture(scope="module", params=list(CLUSTERS))
def cluster_spec(request) -> dict:
    """Module scope, so that the tests run cluster by cluster and the pool keeps each one
    running while its tests run."""
    return ResourceSpec.local(**CLUSTERS[request.param]).to_dict()


@pytest.fixture
def cluster(cluster_pool, cluster_spec):
    return cluster_pool.get(cluster_spec)


def train_distributed(cluster, builder, feeds):
    """Train with AutoDist; returns (all variables by name, losses, replica count)."""
    with AutoDist(cluster=cluster, strategy_builder=builder) as ad:
        with tf.Graph().as_default(), ad.scope():
            model = model_graph.build(SPEC)
            sess = ad.create_distributed_session()
            losses = [sess.run([model.loss, model.train_op], feed)[0] for feed in feeds]
            variables = tf.compat.v1.global_variables()
            state = sess.run({v.op.name: v for v in variables})
        return state, losses, len(ad.strategy.replicas)


def train_oracle(replicas, feeds):
    """The oracle's variables and per-step losses (the mean over the micro-batches)."""
    with Oracle(lambda: model_graph.build(SPEC), replicas=replicas) as oracle:
        losses = [oracle.step(feed) for feed in feeds]
        return oracle.variables(), losses


@pytest.mark.parametrize("builder", ALL_BUILDERS, ids=lambda b: b.__name__)
def test_every_builder_matches_the_oracle(cluster, builder):
    feeds = model_spec.feeds(SPEC, STEPS, BATCH, seed=0)
    state, losses, replicas = train_distributed(cluster, builder(), feeds)
    assert replicas == len(cluster.spec.replica_devices)
    expected, expected_losses = train_oracle(replicas, feeds)
    assert_bitwise_equal(expected, state, what=f"{builder.__name__} on {replicas} replicas")
    assert np.array(losses).tobytes() == np.array(expected_losses).tobytes()
