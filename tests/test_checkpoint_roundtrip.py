"""Checkpoints written from distributed sessions are the original graph's checkpoints.

* For every strategy builder on a 2-node cluster with simulated gpus: k distributed
  steps, save; the checkpoint equals the oracle after k steps and has exactly the keys,
  shapes and dtypes TensorFlow's Saver writes for the original graph; a fresh process
  without saver_impl restores it with plain TensorFlow and trains m more steps,
  bit-identically to the oracle after k+m steps.
* Across strategies and clusters: PartitionedPS on 2 nodes -> AllReduce on 3 nodes and
  the reverse; every part and mirror holds the checkpoint's bytes after restore, and
  training goes on bit-identically. A plain TensorFlow checkpoint restores too.
"""

from __future__ import annotations

import pytest
import tensorflow as tf

from autodist_verify.compare import assert_bitwise_equal
from cluster_sim import LocalCluster, ResourceSpec
from cluster_sim.determinism import session_config
from saver_impl.strategy import ALL_BUILDERS, AllReduce, PartitionedPS
from tests.models import batches, dense_embedding_model
from tests.training import assert_copies_hold, oracle_run, plain_tf_checkpoint, plain_tf_finetune, train

K, M, BATCH = 2, 2, 12


@pytest.fixture(scope="module")
def two_nodes(node_launcher):
    with LocalCluster(ResourceSpec.local(nodes=2, gpus_per_node=1), launcher=node_launcher) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def three_nodes(node_launcher):
    with LocalCluster(ResourceSpec.local(nodes=3), launcher=node_launcher) as cluster:
        yield cluster


def original_layout(directory) -> dict:
    """What tf.compat.v1.train.Saver writes for the original graph: key -> (shape, dtype)."""
    return checkpoint_contents(plain_tf_checkpoint(str(directory / "tensorflow_reference")))[0]


def checkpoint_contents(prefix):
    reader = tf.train.load_checkpoint(prefix)
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    values = {key: reader.get_tensor(key) for key in shapes}
    return {key: (shapes[key], dtypes[key]) for key in shapes}, values


@pytest.mark.parametrize("builder", ALL_BUILDERS, ids=lambda b: b.__name__)
def test_save_then_plain_tensorflow_finetune(two_nodes, witness, builder, tmp_path):
    first, later = batches(K, BATCH, seed=1), batches(M, BATCH, seed=2)
    run = train(two_nodes, builder(), first, save_dir=str(tmp_path))
    layout, values = checkpoint_contents(run.checkpoint)
    assert layout == original_layout(tmp_path)
    after_k = oracle_run([(run.replicas, first)])
    assert_bitwise_equal(after_k, values, what=f"checkpoint saved under {builder.__name__}")

    plain = plain_tf_finetune(witness, run.checkpoint, later, tmp_path)
    assert_bitwise_equal(after_k, plain["restored"], what="plain TensorFlow restore")
    after_k_plus_m = oracle_run([(run.replicas, first), (1, later)])
    assert_bitwise_equal(after_k_plus_m, plain["final"], what="plain TensorFlow fine-tune")


@pytest.mark.parametrize(
    "save_under, restore_under",
    [(("two_nodes", PartitionedPS), ("three_nodes", AllReduce)),
     (("three_nodes", AllReduce), ("two_nodes", PartitionedPS))],
    ids=["PartitionedPS@2->AllReduce@3", "AllReduce@3->PartitionedPS@2"],
)
def test_restore_under_another_strategy_and_cluster(request, save_under, restore_under, tmp_path):
    first, later = batches(K, BATCH, seed=3), batches(M, BATCH, seed=4)
    save_cluster = request.getfixturevalue(save_under[0])
    restore_cluster = request.getfixturevalue(restore_under[0])
    saved = train(save_cluster, save_under[1](), first, save_dir=str(tmp_path))
    _, values = checkpoint_contents(saved.checkpoint)

    resumed = train(restore_cluster, restore_under[1](), later, restore=saved.checkpoint)
    assert_bitwise_equal(values, resumed.restored, what="logical state after restore")
    assert_copies_hold(resumed.copies, values)
    expected = oracle_run([(saved.replicas, first), (resumed.replicas, later)])
    assert_bitwise_equal(expected, resumed.state, what="training after a cross-strategy restore")


def test_plain_tensorflow_checkpoint_restores_into_a_distributed_session(two_nodes, tmp_path):
    first, later = batches(K, BATCH, seed=5), batches(M, BATCH, seed=6)
    graph = tf.Graph()
    with graph.as_default():
        model = dense_embedding_model("adam")
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(config=session_config()) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            for feed in first:
                sess.run(model.train_op, {f"{k}:0": v for k, v in feed.items()})
            prefix = saver.save(sess, str(tmp_path / "plain"))
    _, values = checkpoint_contents(prefix)
    resumed = train(two_nodes, PartitionedPS(), later, restore=prefix)
    assert_copies_hold(resumed.copies, values)
    expected = oracle_run([(1, first), (resumed.replicas, later)])
    assert_bitwise_equal(expected, resumed.state, what="training after restoring a plain checkpoint")
