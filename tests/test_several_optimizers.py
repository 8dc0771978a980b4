"""Several optimizer steps grouped into one train op, as programs with parameter groups
(or a GAN's two optimizers) build them: each optimizer updates its own variables with
its own slots and state, the forward and backward pass is shared, and the distributed
step equals the oracle's bit for bit under partitioned, mirrored and plain PS storage.
The checkpoint holds the keys plain TensorFlow's Saver writes and restores in plain
TensorFlow. Also: one optimizer over float32 and float64 variables together, and a
variable given to two optimizers, refused by name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from autodist_verify import model_graph
from autodist_verify.compare import assert_bitwise_equal
from autodist_verify.oracle import Oracle, TrainModel
from autodist_verify.witness_files import load_result
from cluster_sim import ResourceSpec
from saver_impl import AutoDist, Saver
from saver_impl.errors import UnsupportedGraph
from saver_impl.strategy import PS, AllReduce, PartitionedPS

STEPS = 3
VOCAB, DIM, FEATURES, HIDDEN = 10, 3, 4, 5
BATCH = 5  # 3 + 2 over two replicas, 2 + 2 + 1 over three
v1 = tf.compat.v1


def feeds(seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.RandomState(seed)
    return [
        {"ids": rng.randint(0, VOCAB, (BATCH, 2)).astype(np.int32),
         "x": rng.rand(BATCH, FEATURES).astype(np.float32),
         "y": rng.rand(BATCH).astype(np.float32)}
        for _ in range(STEPS)
    ]


def _forward() -> tuple[tf.Tensor, list[tf.Variable], list[tf.Variable]]:
    """An embedding (sparse gradient) and two dense layers; returns the loss, the
    embedding's variables and the dense layers' variables."""
    ids = v1.placeholder(tf.int32, [None, 2], name="ids")
    x = v1.placeholder(tf.float32, [None, FEATURES], name="x")
    y = v1.placeholder(tf.float32, [None], name="y")
    table = v1.get_variable("embedding", [VOCAB, DIM], initializer=v1.random_uniform_initializer(seed=1))
    hidden_kernel = v1.get_variable("hidden/kernel", [FEATURES + DIM, HIDDEN],
                                    initializer=v1.glorot_uniform_initializer(seed=2))
    hidden_bias = v1.get_variable("hidden/bias", [HIDDEN], initializer=v1.constant_initializer(0.1))
    out_kernel = v1.get_variable("out/kernel", [HIDDEN, 1], initializer=v1.glorot_uniform_initializer(seed=3))
    features = tf.concat([x, tf.reduce_mean(tf.nn.embedding_lookup(table, ids), axis=1)], axis=1)
    hidden = tf.tanh(tf.matmul(features, hidden_kernel) + hidden_bias)
    loss = tf.reduce_mean(tf.square(tf.matmul(hidden, out_kernel)[:, 0] - y), name="loss")
    return loss, [table], [hidden_kernel, hidden_bias, out_kernel]


def two_optimizers(grouping: str = "group", dense_optimizer: str = "momentum") -> TrainModel:
    """Adam on the embedding, Momentum (or Keras 2's legacy SGD with momentum) on the
    dense layers; ``global_step`` and a counter count the steps.

    ``grouping``: ``"group"``: ``tf.group(dense_op, adam_op, counter_increment)``;
    ``"chained"``: the dense step built under ``tf.control_dependencies([adam_op])``.
    """
    loss, sparse_vars, dense_vars = _forward()
    global_step = v1.train.get_or_create_global_step()
    counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="counter")
    grads = tf.gradients(loss, sparse_vars + dense_vars)
    sparse_gv = list(zip(grads[:1], sparse_vars))
    dense_gv = list(zip(grads[1:], dense_vars))

    def dense_step():
        if dense_optimizer == "momentum":
            return v1.train.MomentumOptimizer(0.05, momentum=0.9).apply_gradients(dense_gv, global_step=global_step)
        return tf.keras.optimizers.legacy.SGD(0.05, momentum=0.9).apply_gradients(dense_gv)

    adam_op = v1.train.AdamOptimizer(0.02).apply_gradients(sparse_gv)
    if grouping == "group":
        train_op = tf.group(dense_step(), adam_op, counter.assign_add(1))
    else:
        with tf.control_dependencies([adam_op]):
            train_op = dense_step()
    return TrainModel(loss=loss, train_op=train_op, grads_and_vars=sparse_gv + dense_gv)


def mixed_dtypes() -> TrainModel:
    """One Adam over a float32 and a float64 variable (its beta powers are float32)."""
    x = v1.placeholder(tf.float32, [None, FEATURES], name="x")
    y = v1.placeholder(tf.float32, [None], name="y")
    w32 = v1.get_variable("w32", [FEATURES, 1], initializer=v1.glorot_uniform_initializer(seed=4))
    w64 = v1.get_variable("w64", [FEATURES, 1], tf.float64, initializer=v1.glorot_uniform_initializer(seed=5))
    wide = tf.matmul(tf.cast(x, tf.float64), w64)[:, 0]
    error = tf.matmul(x, w32)[:, 0] + tf.cast(wide, tf.float32) - y
    loss = tf.reduce_mean(tf.square(error), name="loss")
    grads_and_vars = list(zip(tf.gradients(loss, [w32, w64]), [w32, w64]))
    train_op = v1.train.AdamOptimizer(0.05).apply_gradients(grads_and_vars)
    return TrainModel(loss=loss, train_op=train_op, grads_and_vars=grads_and_vars)


SPECS = {replicas: ResourceSpec.local(nodes=replicas).to_dict() for replicas in (2, 3)}
BUILDERS = {"PartitionedPS": PartitionedPS, "AllReduce": AllReduce, "PS": PS}


def train_distributed(cluster, builder, build: Callable[[], TrainModel], steps: list[dict], tmp_path: Path,
                      fetch: Callable[[TrainModel], object] | None = None) -> tuple[dict, str, dict]:
    """Train ``build()``'s graph one step per feed (fetching ``fetch(model)``, default its
    train op), save with saver_impl's Saver; return every variable as the session reads
    it, the checkpoint prefix and the variables' layouts."""
    with AutoDist(cluster=cluster, strategy_builder=builder) as ad:
        with tf.Graph().as_default() as graph, ad.scope():
            model = build()
            saver = Saver()
            sess = ad.create_distributed_session()
            target = fetch(model) if fetch else model.train_op
            for feed in steps:
                sess.run(target, model_graph.feed_dict(graph, feed))
            state = sess.run({v.op.name: v for v in v1.global_variables()})
            prefix = saver.save(sess, str(tmp_path / "ckpt" / "model"), global_step=len(steps))
            layouts = sess.layouts
    return state, prefix, layouts


def oracle_state(build: Callable[[], TrainModel], replicas: int, steps: list[dict]) -> dict[str, np.ndarray]:
    with Oracle(build, replicas=replicas) as oracle:
        for feed in steps:
            oracle.step(feed)
        return oracle.variables()


def plain_keys(build: Callable[[], TrainModel]) -> dict[str, tuple[list[int], str]]:
    """The keys, shapes and dtypes plain TensorFlow's Saver writes for ``build()``'s graph."""
    with tf.Graph().as_default():
        build()
        return {v.op.name: (v.shape.as_list(), v.dtype.base_dtype.name) for v in v1.global_variables()}


def checkpoint_keys(prefix: str) -> dict[str, tuple[list[int], str]]:
    reader = tf.train.load_checkpoint(prefix)
    dtypes = reader.get_variable_to_dtype_map()
    return {key: (shape, dtypes[key].name) for key, shape in reader.get_variable_to_shape_map().items()}


def witness_restore(witness, prefix: str, tmp_path: Path) -> dict[str, np.ndarray]:
    """What plain TensorFlow, in a process without saver_impl, restores from ``prefix``."""
    out = tmp_path / "restored.npz"
    witness.run("restore", checkpoint=prefix, out=out)
    return load_result(out)["restored"]


@pytest.mark.parametrize(("builder", "replicas", "grouping", "dense_optimizer"), [
    ("PartitionedPS", 2, "group", "momentum"),
    ("AllReduce", 2, "group", "momentum"),
    ("PS", 3, "group", "momentum"),
    ("PartitionedPS", 3, "chained", "momentum"),
    ("AllReduce", 2, "group", "keras_legacy_sgd"),
])
def test_two_optimizers_in_one_train_op_equal_the_oracle_and_restore_in_plain_tensorflow(
        cluster_pool, witness, tmp_path, builder, replicas, grouping, dense_optimizer):
    def build():
        return two_optimizers(grouping, dense_optimizer)

    steps = feeds(seed=replicas)
    state, prefix, layouts = train_distributed(
        cluster_pool.get(SPECS[replicas]), BUILDERS[builder](), build, steps, tmp_path)
    # Slots follow their variable: split under PartitionedPS, mirrored under AllReduce.
    slot = "hidden/kernel/Momentum" if dense_optimizer == "momentum" else "SGD/hidden/kernel/momentum"
    for name in ("embedding/Adam", slot):
        assert layouts[name].partitioned == (builder == "PartitionedPS"), name
        assert len(layouts[name].parts[0].copies) == (replicas if builder == "AllReduce" else 1), name
    expected = oracle_state(build, replicas, steps)
    what = f"{builder} over {replicas} replicas, {dense_optimizer} and Adam ({grouping}), after {STEPS} steps"
    assert_bitwise_equal(expected, state, what=what)
    # Each optimizer's own state: Adam's slots and beta powers, the dense optimizer's slots.
    assert {"embedding/Adam", "embedding/Adam_1", "beta1_power", "beta2_power"} <= set(state)
    assert not any(name.startswith(("hidden", "out")) and "Adam" in name for name in state)
    if dense_optimizer == "momentum":
        assert state["global_step"] == STEPS
    if grouping == "group":
        assert state["counter"] == STEPS
    assert checkpoint_keys(prefix) == plain_keys(build)
    assert_bitwise_equal(state, witness_restore(witness, prefix, tmp_path), what="plain TensorFlow's restore")


def test_one_optimizers_op_fetched_alone_runs_that_optimizer_only(cluster_pool, tmp_path):
    """Fetching the Adam step's op (not the group) updates the embedding and Adam's
    state, as in plain TensorFlow, and leaves the dense layers as they were."""
    adam_op: dict[str, object] = {}

    def build():
        model = two_optimizers()
        group = model.train_op
        adam_op["op"] = next(op for op in group.control_inputs if op.name.startswith("Adam"))
        return model

    steps = feeds(seed=7)
    state, _, _ = train_distributed(cluster_pool.get(SPECS[2]), PartitionedPS(), build, steps, tmp_path,
                                 fetch=lambda model: adam_op["op"])

    def build_adam_only():
        model = build()
        sparse_gv = model.grads_and_vars[:1]
        return TrainModel(loss=model.loss, train_op=adam_op["op"], grads_and_vars=sparse_gv)

    expected = oracle_state(build_adam_only, 2, steps)
    assert_bitwise_equal(expected, state, what="the Adam step's op fetched alone")
    assert state["global_step"] == 0 and state["counter"] == 0


def test_a_group_built_after_the_session_is_its_train_op(cluster_pool, tmp_path):
    """``tf.group(momentum_op, adam_op, counter_increment)`` built after the session was
    created is copied then, and trains as the same group built before."""
    steps = feeds(seed=8)
    with AutoDist(cluster=cluster_pool.get(SPECS[2]), strategy_builder=PartitionedPS()) as ad:
        with tf.Graph().as_default() as graph, ad.scope():
            loss, sparse_vars, dense_vars = _forward()
            global_step = v1.train.get_or_create_global_step()
            counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="counter")
            grads = tf.gradients(loss, sparse_vars + dense_vars)
            momentum_op = v1.train.MomentumOptimizer(0.05, momentum=0.9).apply_gradients(
                list(zip(grads[1:], dense_vars)), global_step=global_step)
            adam_op = v1.train.AdamOptimizer(0.02).apply_gradients(list(zip(grads[:1], sparse_vars)))
            sess = ad.create_distributed_session()
            train_op = tf.group(momentum_op, adam_op, counter.assign_add(1))
            for feed in steps:
                sess.run(train_op, model_graph.feed_dict(graph, feed))
            state = sess.run({v.op.name: v for v in v1.global_variables()})
    assert_bitwise_equal(oracle_state(two_optimizers, 2, steps), state, what="a group built after the session")


def test_one_optimizer_over_float32_and_float64_variables_equals_the_oracle(cluster_pool, tmp_path):
    steps = [{k: v for k, v in feed.items() if k != "ids"} for feed in feeds(seed=9)]
    state, prefix, _ = train_distributed(cluster_pool.get(SPECS[2]), PartitionedPS(), mixed_dtypes, steps, tmp_path)
    assert_bitwise_equal(oracle_state(mixed_dtypes, 2, steps), state, what="Adam over float32 and float64")
    assert state["w64/Adam"].dtype == np.float64 and state["w32/Adam"].dtype == np.float32
    assert checkpoint_keys(prefix) == plain_keys(mixed_dtypes)


@pytest.mark.parametrize("second", ["adam", "same_optimizer"])
def test_a_variable_given_to_two_optimizers_is_refused_naming_both(cluster_pool, second):
    with AutoDist(cluster=cluster_pool.get(SPECS[2]), strategy_builder=PS()) as ad:
        with tf.Graph().as_default(), ad.scope():
            loss, _, dense_vars = _forward()
            gv = list(zip(tf.gradients(loss, dense_vars), dense_vars))
            momentum = v1.train.MomentumOptimizer(0.05, momentum=0.9)
            other = momentum if second == "same_optimizer" else v1.train.AdamOptimizer(0.02)
            tf.group(momentum.apply_gradients(gv), other.apply_gradients(gv[1:2]))
            which = ("MomentumOptimizer 'Momentum' twice" if second == "same_optimizer"
                     else "both MomentumOptimizer 'Momentum' and AdamOptimizer 'Adam'")
            with pytest.raises(UnsupportedGraph,
                               match=f"variable 'hidden/bias' is updated by two optimizer steps, by {which}"):
                ad.create_distributed_session()
