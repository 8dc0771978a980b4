"""Bad checkpoints and bad save paths give clear errors; a failed save loses nothing.

Each broken checkpoint is derived from the values of the initialized original graph
(the model spec of :mod:`tests.specs`), written by plain TensorFlow, and is restored into
a distributed session: the error must name the variable or the file. The tests are about
saver_impl's own errors, so they drive it directly.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from autodist_verify import model_graph, model_spec
from autodist_verify.expectations import oracle_state
from autodist_verify.harness import copy_problems
from cluster_sim import ResourceSpec
from saver_impl import AutoDist, Saver
from saver_impl.strategy import PS, AllReduce, PartitionedPS
from tests.specs import SGD_SPEC, SPEC


@pytest.fixture
def cluster(cluster_pool):
    return cluster_pool.get(ResourceSpec.local(nodes=2, gpus_per_node=1).to_dict())


@pytest.fixture(scope="module")
def good_values():
    """The values of the initialized original graph (what TensorFlow's Saver would save)."""
    return oracle_state(SPEC, [])


def write_checkpoint(prefix: str, values: dict[str, np.ndarray]) -> str:
    """A checkpoint holding exactly ``values``, written by plain TensorFlow."""
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.get_variable(name, initializer=value) for name, value in values.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return saver.save(sess, prefix)


def restore_into_distributed(cluster, prefix, builder=PartitionedPS):
    with AutoDist(cluster=cluster, strategy_builder=builder()) as ad:
        with tf.Graph().as_default(), ad.scope():
            model_graph.build(SPEC)
            saver = Saver()
            sess = ad.create_distributed_session()
            saver.restore(sess, prefix)


def test_missing_variable_is_named(cluster, good_values, tmp_path):
    values = dict(good_values)
    del values["scale"]
    prefix = write_checkpoint(str(tmp_path / "missing"), values)
    with pytest.raises(tf.errors.NotFoundError, match="scale"):
        restore_into_distributed(cluster, prefix)


# Two ways a checkpoint cannot be read: the error TensorFlow raises, and its wording.
BREAKAGES = {
    "missing key": (tf.errors.NotFoundError, "Key out/kernel not found in checkpoint"),
    "wrong shape": (tf.errors.InvalidArgumentError, "key 'out/kernel' has the wrong shape"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
@pytest.mark.parametrize("sharded", [False, True])
def test_a_refused_restore_writes_nothing_on_any_task(cluster, good_values, tmp_path, sharded, breakage):
    """TensorFlow's single-device restore reads every key before it writes; a restore
    across tasks (here: variables on both nodes, one shard per task when sharded) must
    be refused as whole, not leave the tasks whose keys were there restored."""
    values = {name: value + 1 if value.dtype.kind == "f" else value for name, value in good_values.items()}
    if breakage == "missing key":
        del values["out/kernel"]
    else:
        values["out/kernel"] = np.zeros(values["out/kernel"].shape + (1,), values["out/kernel"].dtype)
    error, message = BREAKAGES[breakage]
    prefix = write_checkpoint(str(tmp_path / "broken"), values)
    with AutoDist(cluster=cluster, strategy_builder=PS()) as ad:
        with tf.Graph().as_default(), ad.scope():
            model_graph.build(SPEC)
            saver = Saver(sharded=sharded)
            sess = ad.create_distributed_session()
            variables = tf.compat.v1.global_variables()
            before = sess.run({v.op.name: v for v in variables})
            with pytest.raises(error, match=message):
                saver.restore(sess, prefix)
            after = sess.run({v.op.name: v for v in variables})
            copies_after = sess.stored_copies()
    assert {k: v.tobytes() for k, v in after.items()} == {k: v.tobytes() for k, v in before.items()}
    assert copy_problems("after the refused restore", copies_after, before) == []


def test_wrong_shape_is_named(cluster, good_values, tmp_path):
    values = dict(good_values)
    values["emb"] = np.zeros((7, 3), np.float32)
    prefix = write_checkpoint(str(tmp_path / "shape"), values)
    with pytest.raises(tf.errors.OpError, match="emb"):
        restore_into_distributed(cluster, prefix)


def test_wrong_dtype_is_named(cluster, good_values, tmp_path):
    values = dict(good_values)
    values["dense_0/bias"] = values["dense_0/bias"].astype(np.float64)
    prefix = write_checkpoint(str(tmp_path / "dtype"), values)
    with pytest.raises(tf.errors.OpError, match="dense_0/bias"):
        restore_into_distributed(cluster, prefix)


def test_truncated_data_file_is_an_error_naming_the_file(cluster, good_values, tmp_path):
    prefix = write_checkpoint(str(tmp_path / "truncated"), good_values)
    data = f"{prefix}.data-00000-of-00001"
    size = os.path.getsize(data)
    with open(data, "r+b") as handle:
        handle.truncate(size // 2)
    with pytest.raises(tf.errors.OpError, match="truncated"):
        restore_into_distributed(cluster, prefix)


def test_corrupted_index_file_is_an_error(cluster, good_values, tmp_path):
    prefix = write_checkpoint(str(tmp_path / "corrupt"), good_values)
    index = f"{prefix}.index"
    raw = bytearray(open(index, "rb").read())
    for i in range(len(raw) // 4, len(raw) // 2):
        raw[i] ^= 0xFF
    open(index, "wb").write(bytes(raw))
    with pytest.raises((tf.errors.OpError, ValueError), match="corrupt|checksum|Corrupted|index"):
        restore_into_distributed(cluster, prefix)


def test_save_into_missing_directory_names_it_and_keeps_the_latest(cluster, tmp_path):
    with AutoDist(cluster=cluster, strategy_builder=PartitionedPS()) as ad:
        with tf.Graph().as_default(), ad.scope():
            model = model_graph.build(SGD_SPEC)
            saver = Saver()
            sess = ad.create_distributed_session()
            good = saver.save(sess, str(tmp_path / "model"), global_step=1)
            sess.run(model.train_op, model_spec.feeds(SGD_SPEC, 1, 4, seed=0)[0])
            missing = tmp_path / "no" / "such" / "dir" / "model"
            with pytest.raises(ValueError, match="no/such/dir"):
                saver.save(sess, str(missing), global_step=2)
            not_a_directory = tmp_path / "a_file"
            not_a_directory.write_text("")
            with pytest.raises(ValueError, match="a_file"):
                saver.save(sess, str(not_a_directory / "model"), global_step=3)
    assert tf.train.latest_checkpoint(str(tmp_path)) == good
    assert saver.last_checkpoints == [good]


def test_diverged_mirrors_fail_the_save_loudly(cluster, tmp_path):
    with AutoDist(cluster=cluster, strategy_builder=AllReduce()) as ad:
        with tf.Graph().as_default(), ad.scope():
            model_graph.build(SGD_SPEC)
            saver = Saver()
            sess = ad.create_distributed_session()
            good = saver.save(sess, str(tmp_path / "model"), global_step=1)
            storage = sess.dist.storage["dense_0/kernel"]
            with sess.distributed_graph.as_default():
                poke = tf.raw_ops.AssignAddVariableOp(
                    resource=storage.handles[0][1], value=tf.ones(storage.shape)
                )
            sess.raw_session.run(poke)
            with pytest.raises(tf.errors.InvalidArgumentError, match="mirrors of variable dense_0/kernel differ"):
                saver.save(sess, str(tmp_path / "model"), global_step=2)
    assert tf.train.latest_checkpoint(str(tmp_path)) == good
    # the values were written beside the checks, in the same step: nothing of it is left
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith("model-2")]
