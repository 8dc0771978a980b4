"""Forward passes with control flow that reads variables train as the oracle does.

TensorFlow 2 builds ``tf.cond`` and ``tf.while_loop`` as functional ops (``If``,
``While``) whose functions take a variable's handle and read it inside; the copies on
the replicas read each variable's per-replica value instead (a concatenation of the
parameter servers' parts, or the local mirror). Each model trains a few steps under
PartitionedPS (the kernels split in parts) and AllReduce on two replicas; every
variable and optimizer slot must have the oracle's bytes, and plain TensorFlow's Saver
restores the checkpoint into the original graph. A ``tf.function`` called in the graph
(a ``StatefulPartitionedCall``) is the same case. A branch that writes a variable is
refused with an error naming the variable and the op.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from autodist_verify import model_graph
from autodist_verify.compare import assert_bitwise_equal
from autodist_verify.oracle import Oracle, TrainModel
from cluster_sim import ResourceSpec
from saver_impl import AutoDist, Saver
from saver_impl.errors import UnsupportedGraph
from saver_impl.strategy import AllReduce, PartitionedPS

TWO_NODES = ResourceSpec.local(nodes=2).to_dict()  # two replicas, one per node
STEPS = 3
BATCH = 5  # pieces of 3 and 2 examples
FEATURES, UNITS, VOCAB, IDS = 4, 3, 10, 2
BUILDERS = {"PartitionedPS": PartitionedPS, "AllReduce": AllReduce}


def feeds(model: str, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Each step's batch for ``model``; x's rows alternate in sign, so that the pieces of
    a step (and the steps) take different branches of a predicate on their sum."""
    rng = np.random.RandomState(seed)
    steps = []
    for step in range(STEPS):
        x = rng.rand(BATCH, FEATURES).astype(np.float32)
        x[(step % 2)::2] *= -1.5
        feed = {"x": x, "y": rng.rand(BATCH, UNITS).astype(np.float32)}
        if model == "cond_embedding":
            feed["ids"] = rng.randint(0, VOCAB, (BATCH, IDS)).astype(np.int32)
        steps.append(feed)
    return steps


def _inputs():
    x = tf.compat.v1.placeholder(tf.float32, [None, FEATURES], name="x")
    y = tf.compat.v1.placeholder(tf.float32, [None, UNITS], name="y")
    return x, y


def _train(loss, variables) -> TrainModel:
    grads_and_vars = list(zip(tf.gradients(loss, variables), variables))
    global_step = tf.compat.v1.train.get_or_create_global_step()
    train_op = tf.compat.v1.train.AdamOptimizer(0.05).apply_gradients(grads_and_vars, global_step)
    return TrainModel(loss=loss, train_op=train_op, grads_and_vars=grads_and_vars)


def _kernel(name: str, shape, seed: int):
    return tf.Variable(tf.random.stateless_uniform(shape, seed=[seed, 1], minval=-1.0), name=name)


def cond_dense() -> TrainModel:
    """``tf.cond`` on the sign of the piece's sum; both branches read the kernel."""
    x, y = _inputs()
    kernel = _kernel("kernel", [FEATURES, UNITS], 1)
    bias = tf.Variable(tf.zeros([UNITS]), name="bias")
    hidden = tf.cond(
        tf.reduce_sum(x) > 0.0,
        lambda: tf.matmul(x, kernel),
        lambda: tf.matmul(tf.square(x), kernel) * 0.5,
    )
    loss = tf.reduce_mean(tf.square(hidden + bias - y), name="loss")
    return _train(loss, [kernel, bias])


def while_loop() -> TrainModel:
    """Three iterations of ``tf.while_loop`` multiplying by a (partitioned) matrix and a scalar."""
    x, y = _inputs()
    kernel = _kernel("kernel", [FEATURES, UNITS], 2)
    mix = _kernel("mix", [UNITS, UNITS], 3)
    scale = tf.Variable(0.8, name="scale")
    _, hidden = tf.while_loop(
        lambda i, h: i < 3,
        lambda i, h: (i + 1, tf.matmul(h, mix) * scale),
        [tf.constant(0), tf.matmul(x, kernel)],
    )
    loss = tf.reduce_mean(tf.square(hidden - y), name="loss")
    return _train(loss, [kernel, mix, scale])


def cond_embedding() -> TrainModel:
    """An embedding lookup inside a ``tf.cond`` branch: a sparse gradient through the cond."""
    x, y = _inputs()
    ids = tf.compat.v1.placeholder(tf.int32, [None, IDS], name="ids")
    embedding = _kernel("embedding", [VOCAB, UNITS], 4)
    kernel = _kernel("kernel", [FEATURES, UNITS], 5)
    looked_up = tf.cond(
        tf.reduce_sum(x) > 0.0,
        lambda: tf.reduce_mean(tf.nn.embedding_lookup(embedding, ids), axis=1),
        lambda: tf.reduce_sum(tf.nn.embedding_lookup(embedding, ids), axis=1) * 0.25,
    )
    loss = tf.reduce_mean(tf.square(looked_up + tf.matmul(x, kernel) - y), name="loss")
    return _train(loss, [embedding, kernel])


def cond_in_while() -> TrainModel:
    """A ``tf.cond`` inside a ``tf.while_loop``'s body, its branch reading a variable."""
    x, y = _inputs()
    kernel = _kernel("kernel", [FEATURES, UNITS], 6)
    mix = _kernel("mix", [UNITS, UNITS], 7)

    def body(i, h):
        return i + 1, tf.cond(i > 0, lambda: tf.matmul(h, mix), lambda: h * 0.5)

    _, hidden = tf.while_loop(lambda i, h: i < 3, body, [tf.constant(0), tf.matmul(x, kernel)])
    loss = tf.reduce_mean(tf.square(hidden - y), name="loss")
    return _train(loss, [kernel, mix])


def function_call() -> TrainModel:
    """A ``tf.function`` called in the graph (a ``StatefulPartitionedCall``) reading the kernel."""
    x, y = _inputs()
    kernel = _kernel("kernel", [FEATURES, UNITS], 9)

    @tf.function
    def dense(inputs):
        return tf.matmul(inputs, kernel) * 0.5

    loss = tf.reduce_mean(tf.square(dense(x) - y), name="loss")
    return _train(loss, [kernel])


MODELS = {f.__name__: f for f in (cond_dense, while_loop, cond_embedding, cond_in_while, function_call)}


@pytest.fixture
def cluster(cluster_pool):
    return cluster_pool.get(TWO_NODES)


FUNCTIONAL = ("If", "StatelessIf", "While", "StatelessWhile", "StatefulPartitionedCall")


def _reads_a_handle_inside_control_flow(graph) -> bool:
    """Whether ``graph`` has a functional op taking a variable handle (what the tests are about)."""
    return any(
        op.type in FUNCTIONAL and any(t.dtype == tf.resource for t in op.inputs) for op in graph.get_operations()
    )


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_control_flow_reading_variables_trains_as_the_oracle_and_restores(cluster, tmp_path, model, builder):
    build, data = MODELS[model], feeds(model)
    # The predicate takes both values among the replicas' pieces of the steps.
    assert {bool(np.sum(piece) > 0) for feed in data for piece in np.array_split(feed["x"], 2)} == {True, False}
    with AutoDist(cluster=cluster, strategy_builder=BUILDERS[builder]()) as ad:
        with tf.Graph().as_default() as graph, ad.scope():
            trained = build()
            assert _reads_a_handle_inside_control_flow(graph)
            if model == "cond_embedding":  # the lookup's gradient stays sparse through the cond
                assert isinstance(trained.grads_and_vars[0][0], tf.IndexedSlices)
            saver = Saver()
            sess = ad.create_distributed_session()
            for feed in data:
                sess.run(trained.train_op, model_graph.feed_dict(graph, feed))
            state = sess.run({v.op.name: v for v in tf.compat.v1.global_variables()})
            prefix = saver.save(sess, str(tmp_path / "model"), global_step=STEPS)
        if builder == "PartitionedPS":
            assert ad.strategy.for_variable("kernel").partition is not None
    with Oracle(build, replicas=2) as oracle:
        for feed in data:
            oracle.step(feed)
        expected = oracle.variables()
    assert_bitwise_equal(expected, state, what=f"{model} under {builder} after {STEPS} steps")
    with Oracle(build) as plain:  # plain TensorFlow's Saver, in the original graph
        plain.restore(prefix)
        assert_bitwise_equal(state, plain.variables(), what="the checkpoint restored by tf.compat.v1.train.Saver")


def cond_with_assign() -> TrainModel:
    """A ``tf.cond`` branch that increments a counter: a write no replica can make."""
    x, y = _inputs()
    kernel = _kernel("kernel", [FEATURES, UNITS], 8)
    counter = tf.Variable(0.0, name="counter", trainable=False)
    hidden = tf.cond(
        tf.reduce_sum(x) > 0.0,
        lambda: tf.matmul(x, kernel) + counter.assign_add(1.0),
        lambda: tf.matmul(x, kernel),
    )
    loss = tf.reduce_mean(tf.square(hidden - y), name="loss")
    return _train(loss, [kernel])


def test_a_write_inside_a_cond_branch_is_refused_naming_the_variable_and_the_op(cluster):
    with AutoDist(cluster=cluster, strategy_builder=AllReduce()) as ad:
        with tf.Graph().as_default(), ad.scope():
            cond_with_assign()
            refusal = r"variable 'counter' is used by AssignAddVariableOp .* called by 'cond'"
            with pytest.raises(UnsupportedGraph, match=refusal):
                ad.create_distributed_session()
