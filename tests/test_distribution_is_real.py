"""The training really runs across nodes, and bad input gives clear errors.

* a step's run metadata lists devices of at least two tasks;
* the apply ops of every variable run on the parameter-server task the strategy names;
* killing a parameter-server node makes the next step fail with a TensorFlow error
  (bounded by the operation timeout, no hang);
* with one replica the distributed session equals plain TensorFlow training directly
  (no oracle involved).

These tests are about saver_impl's own API (its strategy, its run metadata, its errors),
so they drive it directly; the model is the spec of
:mod:`tests.specs`, built with the suite's ``model_graph``.
"""

from __future__ import annotations

import pytest
import tensorflow as tf

from autodist_verify import model_graph, model_spec
from autodist_verify.compare import assert_bitwise_equal
from cluster_sim import LocalCluster, ResourceSpec
from saver_impl import AutoDist, AutoDistError
from saver_impl.strategy import PS, Partition, PartitionedPS, Strategy, VariableConfig
from tests.specs import SGD_SPEC, SPEC, plain_training

FULL_TRACE = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)


@pytest.fixture
def cluster(cluster_pool):
    return cluster_pool.get(ResourceSpec.local(nodes=2, gpus_per_node=1).to_dict())


def batches(steps: int, batch: int, seed: int = 0) -> list[dict]:
    return model_spec.feeds(SPEC, steps, batch, seed)


def _task_of(device: str) -> str:
    spec = tf.DeviceSpec.from_string(device)
    return f"/job:{spec.job}/task:{spec.task}"


def test_a_step_uses_devices_of_several_tasks_and_variables_live_where_the_strategy_says(cluster):
    with AutoDist(cluster=cluster, strategy_builder=PS()) as ad:
        with tf.Graph().as_default(), ad.scope():
            model = model_graph.build(SPEC)
            sess = ad.create_distributed_session()
            metadata = tf.compat.v1.RunMetadata()
            sess.run(model.train_op, batches(1, 4)[0], options=FULL_TRACE, run_metadata=metadata)
        tasks = {_task_of(d.device) for d in metadata.step_stats.dev_stats}
        assert len(tasks) >= 2, tasks
        ran_on = {
            node.node_name: dev.device
            for dev in metadata.step_stats.dev_stats
            for node in dev.node_stats
        }
        spec = cluster.spec
        for name, config in ad.strategy.variables.items():
            if name not in ad.graph_item.slices:
                continue
            expected_task = _task_of(spec.device(config.devices[0]).tf_name)
            update_ops = [n for n in ran_on if n.startswith(f"apply/{name}/part_0/copy_0/")
                          and ("Apply" in n or "Assign" in n or "Scatter" in n)]
            assert update_ops, f"no update op of {name} in the trace"
            for op_name in update_ops:
                assert _task_of(ran_on[op_name]) == expected_task, (op_name, ran_on[op_name])


def test_killing_a_parameter_server_fails_the_next_step_without_hanging():
    spec = ResourceSpec.local(nodes=2)
    with LocalCluster(spec, operation_timeout_s=10) as cluster:
        ps_node = spec.nodes[1]
        with AutoDist(cluster=cluster, strategy_builder=PS(), operation_timeout_s=10) as ad:
            with tf.Graph().as_default(), ad.scope():
                model = model_graph.build(SGD_SPEC)
                sess = ad.create_distributed_session()
                feed = batches(1, 4)[0]
                sess.run(model.train_op, feed)
                assert any(c.devices[0].startswith(ps_node.address) for c in ad.strategy.variables.values())
                cluster.kill(ps_node)
                with pytest.raises(tf.errors.OpError):
                    sess.run(model.train_op, feed)


def test_one_replica_equals_plain_tensorflow_training(cluster_pool):
    # A cluster of the suite's pool: its nodes run under the determinism settings that
    # plain_training uses (an embedded cluster runs under TensorFlow's defaults).
    feeds = batches(3, 6, seed=9)
    one_node = cluster_pool.get(ResourceSpec.local(nodes=1).to_dict())
    with AutoDist(cluster=one_node, strategy_builder=PartitionedPS()) as ad:
        with tf.Graph().as_default(), ad.scope():
            model = model_graph.build(SPEC)
            sess = ad.create_distributed_session()
            assert len(ad.strategy.replicas) == 1
            for feed in feeds:
                sess.run(model.train_op, feed)
            variables = tf.compat.v1.global_variables()
            distributed = sess.run({v.op.name: v for v in variables})
    assert_bitwise_equal(plain_training(SPEC, feeds), distributed, what="one-replica distributed training")


# -- clear errors -------------------------------------------------------------------

def _session_with(cluster, **autodist_kwargs):
    ad = AutoDist(cluster=cluster, **autodist_kwargs)
    with tf.Graph().as_default(), ad.scope():
        model = model_graph.build(SGD_SPEC)
        try:
            return ad, model, ad.create_distributed_session()
        except Exception:
            ad.close()
            raise


def _hand_strategy(cluster, **overrides):
    ps = cluster.spec.ps_devices[0].name
    replicas = [d.name for d in cluster.spec.replica_devices]
    variables = {v["name"]: VariableConfig("ps", (ps,)) for v in model_spec.variables(SGD_SPEC)}
    variables.update(overrides)
    return Strategy(replicas=tuple(replicas), aux_device=ps, variables=variables)


def test_strategy_naming_a_variable_the_graph_lacks(cluster):
    strategy = _hand_strategy(cluster, ghost=VariableConfig("ps", (cluster.spec.ps_devices[0].name,)))
    with pytest.raises(ValueError, match="ghost"):
        _session_with(cluster, strategy=strategy)


def test_more_partitions_than_the_dimension(cluster):
    ps = cluster.spec.ps_devices[0].name
    (kernel,) = [v for v in model_spec.variables(SGD_SPEC) if v["name"] == "dense_0/kernel"]
    rows = kernel["shape"][0]
    config = VariableConfig("ps", (ps,) * (rows + 1), Partition(axis=0, sizes=(1,) * rows + (0,)))
    with pytest.raises(ValueError, match=f"dense_0/kernel.*{rows + 1} parts"):
        _session_with(cluster, strategy=_hand_strategy(cluster, **{"dense_0/kernel": config}))


def test_batch_smaller_than_the_replica_count(cluster):
    ad, model, sess = _session_with(cluster, strategy_builder=PS())
    with ad:
        with pytest.raises(AutoDistError, match="'x': a batch of 1 cannot give each of the 2 replicas an example"):
            sess.run(model.train_op, batches(1, 1)[0])


def test_graph_without_optimizer_step(cluster):
    with AutoDist(cluster=cluster, strategy_builder=PS()) as ad:
        with tf.Graph().as_default(), ad.scope():
            tf.compat.v1.get_variable("w", [2], initializer=tf.zeros_initializer())
            with pytest.raises(AutoDistError, match="no optimizer step"):
                ad.create_distributed_session()


def test_resource_spec_with_no_replica(tmp_path):
    spec_file = tmp_path / "spec.yml"
    spec_file.write_text("nodes:\n  - address: 127.0.0.1\n    chief: true\n    cpus: []\n")
    with pytest.raises(Exception, match="replica|cpus"):
        AutoDist(str(spec_file), PS())
