"""Programs written as AutoDist users write them train, save and restore under saver_impl.

Keras 2 layers (Conv2D, BatchNormalization, Dropout, Dense) and optimizers (``OptimizerV2``
and the newer ``Optimizer``), a tf.data iterator whose batch does not divide by the
replica count, a partitioned embedding under a Keras Adam, a float64 regression exported
as a SavedModel: the distributed step equals the oracle bit for bit (where the program is
inside the equivalence contract), the checkpoint holds exactly the values the distributed
session had, and a fresh process that never imports saver_impl restores it with plain
TensorFlow. The builders are in :mod:`tests.programs`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework.indexed_slices import IndexedSlicesValue

from autodist_verify import model_graph
from autodist_verify.compare import assert_bitwise_equal
from autodist_verify.oracle import Oracle, TrainModel
from autodist_verify.witness_files import load_result, save_steps
from cluster_sim import ResourceSpec
from saver_impl import AutoDist, AutoDistError, SavedModelBuilder, Saver
from saver_impl.strategy import AllReduce, PartitionedPS
from tests import programs

REPO_ROOT = Path(__file__).resolve().parents[1]
TWO_NODES = ResourceSpec.local(nodes=2).to_dict()  # two replicas, one per node
STEPS = 3


@pytest.fixture
def cluster(cluster_pool):
    return cluster_pool.get(TWO_NODES)


def session_state(sess) -> dict[str, np.ndarray]:
    """Every variable of the original graph as the distributed session reads it."""
    variables = tf.compat.v1.global_variables()
    return sess.run({v.op.name: v for v in variables})


def witness_restore(witness, checkpoint: str, tmp_path: Path) -> dict[str, np.ndarray]:
    """What plain TensorFlow, in a process without saver_impl, restores from ``checkpoint``."""
    out = tmp_path / "restored.npz"
    witness.run("restore", checkpoint=checkpoint, out=out)
    return load_result(out)["restored"]


def checkpoint_values(prefix: str) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(prefix)
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}


def train_distributed(cluster, builder, build, tmp_path: Path, feeds=None):
    """Train STEPS steps of ``build()`` under ``builder``; save; return (state, prefix)."""
    with AutoDist(cluster=cluster, strategy_builder=builder) as ad:
        with tf.Graph().as_default() as graph, ad.scope():
            model = build()
            saver = Saver()
            sess = ad.create_distributed_session()
            for step in range(STEPS):
                sess.run(model.train_op, model_graph.feed_dict(graph, feeds[step]) if feeds else None)
            state = session_state(sess)
            (tmp_path / "ckpt").mkdir(parents=True, exist_ok=True)
            prefix = saver.save(sess, str(tmp_path / "ckpt" / "model"), global_step=STEPS)
    return state, prefix


def oracle_state(build, replicas: int, feeds=None) -> dict[str, np.ndarray]:
    with Oracle(build, replicas=replicas) as oracle:
        for step in range(STEPS):
            oracle.step(feeds[step] if feeds else {})
        return oracle.variables()


BUILDERS = {"PartitionedPS": PartitionedPS, "AllReduce": AllReduce}


@pytest.mark.parametrize("optimizer", ["legacy", "keras"])
@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_keras_cnn_fed_by_tf_data_equals_the_oracle_and_restores_in_plain_tensorflow(
        cluster, witness, tmp_path, builder, optimizer):
    state, prefix = train_distributed(
        cluster, BUILDERS[builder](), lambda: programs.keras_cnn(optimizer), tmp_path)
    # Each step's element of 5 examples splits 3 + 2 over the two replicas; batch norm's
    # moving averages follow replica 0's piece; the Keras step is ordered as in a function.
    expected = oracle_state(lambda: programs.keras_cnn(optimizer, ordered_step=True), replicas=2)
    assert_bitwise_equal(expected, state, what=f"{builder}, Keras {optimizer} Adam, after {STEPS} steps")
    assert any("moving_mean" in name for name in state)
    assert_bitwise_equal(state, checkpoint_values(prefix), what="the checkpoint")
    assert_bitwise_equal(state, witness_restore(witness, prefix, tmp_path), what="plain TensorFlow's restore")


@pytest.mark.parametrize("builder", sorted(BUILDERS))
def test_keras_cnn_with_dropout_saves_what_the_session_had(cluster, witness, tmp_path, builder):
    """Dropout is outside the bit-exact contract (each replica draws its own mask), so
    there is no oracle here: the checkpoint must still be the session's state."""
    state, prefix = train_distributed(
        cluster, BUILDERS[builder](), lambda: programs.keras_cnn("keras", dropout=0.3), tmp_path)
    assert_bitwise_equal(state, checkpoint_values(prefix), what="the checkpoint")
    assert_bitwise_equal(state, witness_restore(witness, prefix, tmp_path), what="plain TensorFlow's restore")


def test_an_initializable_iterator_fed_by_placeholders_trains_as_a_one_shot_one(cluster, tmp_path):
    one_shot, _ = train_distributed(cluster, AllReduce(), programs.keras_cnn, tmp_path / "one_shot")
    with AutoDist(cluster=cluster, strategy_builder=AllReduce()) as ad:
        with tf.Graph().as_default() as graph, ad.scope():
            iterator = programs.image_iterator(initializable=True)
            model = programs.keras_cnn(iterator=iterator)
            sess = ad.create_distributed_session()
            data = {graph.get_tensor_by_name("images:0"): programs.IMAGES,
                    graph.get_tensor_by_name("labels:0"): programs.LABELS}
            sess.run(iterator.initializer, data)  # the whole arrays go to the one pipeline copy
            for _ in range(STEPS):
                sess.run(model.train_op)
            initializable = session_state(sess)
    assert_bitwise_equal(one_shot, initializable, what="training from an initializable iterator")


@pytest.mark.parametrize("optimizer", ["legacy", "keras"])
def test_checkpoint_keys_are_those_plain_tensorflow_writes_for_the_keras_program(cluster, tmp_path, optimizer):
    state, prefix = train_distributed(cluster, PartitionedPS(), lambda: programs.keras_cnn(optimizer), tmp_path)
    with tf.Graph().as_default():
        programs.keras_cnn(optimizer, ordered_step=True)
        plain = {v.op.name: (v.shape.as_list(), v.dtype.base_dtype.name) for v in tf.compat.v1.global_variables()}
    reader = tf.train.load_checkpoint(prefix)
    written = {
        key: (shape, reader.get_variable_to_dtype_map()[key].name)
        for key, shape in reader.get_variable_to_shape_map().items()
    }
    assert written == plain


def test_partitioned_embedding_with_keras_adam_equals_the_oracle(cluster, witness, tmp_path):
    feeds = programs.embedding_feeds(STEPS, batch=5, seed=3)  # 5 = 3 + 2 per step
    state, prefix = train_distributed(cluster, PartitionedPS(), programs.keras_adam_embedding, tmp_path, feeds)
    expected = oracle_state(lambda: programs.keras_adam_embedding(ordered_step=True), replicas=2, feeds=feeds)
    assert_bitwise_equal(expected, state, what="embedding under PartitionedPS with Keras Adam")
    assert_bitwise_equal(state, witness_restore(witness, prefix, tmp_path), what="plain TensorFlow's restore")


def test_a_sparse_gradient_is_fetched_as_indexed_slices(cluster):
    feed = programs.embedding_feeds(1, batch=5, seed=4)[0]
    with AutoDist(cluster=cluster, strategy_builder=PartitionedPS()) as ad:
        with tf.Graph().as_default() as graph, ad.scope():
            model = programs.keras_adam_embedding()
            sess = ad.create_distributed_session()
            gradient = sess.run(model.grads_and_vars[0][0], model_graph.feed_dict(graph, feed))
    assert isinstance(gradient, IndexedSlicesValue)
    # Each replica's gradient rows, concatenated in replica order: the ids of the batch.
    np.testing.assert_array_equal(gradient.indices, feed["ids"].reshape(-1))
    assert list(gradient.dense_shape) == [programs.VOCAB, programs.DIM]
    assert gradient.values.shape == (feed["ids"].size, programs.DIM)


def test_float64_regression_exports_a_saved_model_that_fine_tunes_in_plain_tensorflow(
        cluster, witness, tmp_path):
    from saver_impl.autodist import IS_AUTODIST_CHIEF

    feed = {"x": programs.REGRESSION_X}
    export_dir = tmp_path / "export"
    with AutoDist(cluster=cluster, strategy_builder=AllReduce()) as ad:
        with tf.Graph().as_default() as graph, ad.scope():
            model = programs.float64_regression()
            saver = Saver()
            sess = ad.create_distributed_session()
            for _ in range(STEPS):
                sess.run(model.train_op, {graph.get_tensor_by_name("x:0"): feed["x"]})
            state = session_state(sess)
            assert IS_AUTODIST_CHIEF  # one client drives every node: it is the chief
            signature = tf.compat.v1.saved_model.predict_signature_def(
                inputs={"x": graph.get_tensor_by_name("x:0")},
                outputs={"prediction": graph.get_tensor_by_name("prediction:0")},
            )
            builder = SavedModelBuilder(str(export_dir))
            builder.add_meta_graph_and_variables(
                sess, ["train"], signature_def_map={"serving": signature}, saver=saver, train_op=model.train_op)
            builder.save()
    expected = oracle_state(lambda: programs.float64_regression(ordered_step=True), replicas=2,
                            feeds=[feed] * STEPS)
    assert_bitwise_equal(expected, state, what="float64 regression under AllReduce")

    inputs, steps, out = tmp_path / "inputs.npz", tmp_path / "steps.npz", tmp_path / "result.npz"
    np.savez(inputs, x=feed["x"])
    save_steps(steps, [feed] * 2)
    witness.run("savedmodel", export_dir=export_dir, tag="train", signature="serving",
                inputs=inputs, feeds=steps, out=out)
    result = load_result(out)
    assert_bitwise_equal(state, result["restored"], what="the SavedModel's variables in plain TensorFlow")
    np.testing.assert_array_equal(result["outputs"]["prediction"], state["W"] * feed["x"] + state["b"])
    with Oracle(lambda: programs.float64_regression(ordered_step=True), replicas=1) as plain:
        plain.load(state)
        plain.step(feed)
        plain.step(feed)
        assert_bitwise_equal(plain.variables(), result["final"], what="fine-tuning the export in plain TensorFlow")


# -- programs outside the bit-exact contract still run ------------------------------

def test_an_unseeded_dropout_program_runs_on_an_embedded_cluster(tmp_path):
    """A user's program does not run under the suite's determinism settings: unseeded
    random ops (Dropout, random initializers) train on an embedded cluster."""
    program = textwrap.dedent(f"""
        import numpy as np
        import tensorflow as tf
        from saver_impl import AutoDist, Saver
        from saver_impl.strategy import PartitionedPS
        from cluster_sim import ResourceSpec

        tf.compat.v1.disable_eager_execution()
        ad = AutoDist(resource_spec=ResourceSpec.local(nodes=2), strategy_builder=PartitionedPS())
        with tf.Graph().as_default(), ad.scope():
            x = tf.compat.v1.placeholder(tf.float32, [None, 4])
            model = tf.keras.Sequential([tf.keras.layers.Dense(8), tf.keras.layers.Dropout(0.5),
                                         tf.keras.layers.Dense(1)])
            loss = tf.reduce_mean(tf.square(model(x, training=True)))
            variables = model.trainable_variables
            train_op = tf.keras.optimizers.legacy.SGD(0.1).apply_gradients(
                zip(tf.gradients(loss, variables), variables))
            saver = Saver()
            sess = ad.create_distributed_session()
            for _ in range(2):
                sess.run(train_op, {{x: np.ones([4, 4], np.float32)}})
            print("saved", saver.save(sess, {str(tmp_path / "model")!r}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TF_DETERMINISTIC_OPS"}
    completed = subprocess.run([sys.executable, "-c", program], cwd=REPO_ROOT, env=env,
                               capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "saved" in completed.stdout
    assert (tmp_path / "model.index").exists()


# -- bad input: one clear error each -------------------------------------------------

def test_keras_3_inside_the_scope_says_what_to_do():
    program = textwrap.dedent("""
        import tensorflow as tf
        from saver_impl import AutoDist
        from cluster_sim import ResourceSpec

        ad = AutoDist(resource_spec=ResourceSpec.local(nodes=1))
        with tf.Graph().as_default(), ad.scope():
            x = tf.compat.v1.placeholder(tf.float32, [None, 4])
            tf.keras.layers.Dense(2)(x)
    """)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    completed = subprocess.run([sys.executable, "-c", program], cwd=REPO_ROOT, env=env,
                               capture_output=True, text=True, timeout=180)
    assert completed.returncode != 0
    last_line = completed.stderr.strip().splitlines()[-1]
    assert "KerasVersionError" in last_line and "Dense is a Keras 3 layer" in last_line, last_line
    assert "TF_USE_LEGACY_KERAS=1" in last_line and "tf_keras" in last_line, last_line


def _create_session(build):
    ad = AutoDist(resource_spec=ResourceSpec.local(nodes=2), strategy_builder=PartitionedPS())
    try:
        with tf.Graph().as_default(), ad.scope():
            build()
            ad.create_distributed_session()
    finally:
        ad.close()


def test_an_input_pipeline_that_reads_a_variable_is_refused_by_name(cluster):
    with AutoDist(cluster=cluster, strategy_builder=PartitionedPS()) as ad:
        with tf.Graph().as_default(), ad.scope():
            offset = tf.Variable(1.0, name="offset")
            dataset = tf.data.Dataset.from_tensors(offset.read_value()).repeat()
            iterator = tf.compat.v1.data.make_initializable_iterator(dataset)
            w = tf.Variable(2.0, name="w")
            tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(tf.square(w * iterator.get_next()), var_list=[w])
            sess = ad.create_distributed_session()
            with pytest.raises(AutoDistError, match="input pipeline uses variable 'offset'"):
                sess.run(iterator.initializer)


def test_an_input_pipeline_that_runs_python_is_refused_by_name():
    def build():
        tf.compat.v1.set_random_seed(0)  # op determinism in this process wants it for iterators
        dataset = tf.data.Dataset.from_generator(lambda: iter([1.0, 2.0]), output_types=tf.float32).repeat()
        x = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
        w = tf.Variable(2.0, name="w")
        tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(tf.square(w * x), var_list=[w])

    with pytest.raises(AutoDistError, match="input pipeline op .* runs Python .*from_generator"):
        _create_session(build)


def test_an_optimizer_whose_slots_differ_from_their_variable_is_refused_by_name():
    def build():
        w = tf.Variable(tf.ones([3, 4]), name="w")
        loss = tf.reduce_sum(tf.square(w))
        optimizer = tf.keras.optimizers.Adafactor(0.1)
        optimizer.apply_gradients(zip(tf.gradients(loss, [w]), [w]))

    with pytest.raises(AutoDistError, match=r"slot '.*w.*' has shape \[?\(?3"):
        _create_session(build)


def test_autodist_function_feeds_numpy_arguments_as_batches(cluster):
    """``ad.function(step)``: numpy arguments become batch placeholders (5 rows: 3 + 2 per
    replica); the losses it returns step by step are the oracle's, bit for bit."""
    from saver_impl.autodist import get_default_autodist

    rng = np.random.RandomState(2)
    x, y = rng.rand(5, 3).astype(np.float32), rng.rand(5).astype(np.float32)

    def step(x, y):
        w = tf.compat.v1.get_variable("w", [3, 1], initializer=tf.compat.v1.ones_initializer())
        loss = tf.reduce_mean(tf.square(tf.matmul(x, w)[:, 0] - y))
        optimizer = tf.compat.v1.train.GradientDescentOptimizer(0.1)
        grads_and_vars = optimizer.compute_gradients(loss)
        return TrainModel(loss=loss, train_op=optimizer.apply_gradients(grads_and_vars),
                                   grads_and_vars=grads_and_vars)

    with AutoDist(cluster=cluster, strategy_builder=PartitionedPS()) as ad:
        assert get_default_autodist() is ad
        with tf.Graph().as_default(), ad.scope():
            def fetches(x, y):
                model = step(x, y)
                return model.loss, model.train_op

            train = ad.function(fetches)
            losses = [train(x, y)[0] for _ in range(STEPS)]
    assert get_default_autodist() is not ad

    def build():
        return step(tf.compat.v1.placeholder(tf.float32, [None, 3], name="x"),
                    tf.compat.v1.placeholder(tf.float32, [None], name="y"))

    with Oracle(build, replicas=2) as oracle:
        expected = [oracle.step({"x": x, "y": y}) for _ in range(STEPS)]
    assert [loss.tobytes() for loss in losses] == [np.asarray(e).tobytes() for e in expected]
