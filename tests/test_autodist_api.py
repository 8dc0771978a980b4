"""AutoDist's public API beyond the builders' names: what a ported program imports.

* AutoDist's module paths (``saver_impl.strategy.ps_strategy``, ...,
  ``saver_impl.checkpoint.saved_model_builder``) are aliases of the real classes;
* ``RandomAxisPartitionAR`` splits each variable along the axis the documented rule picks
  (a CRC-32 of its name), the same on every run, and its strategies validate;
* ``sync``/``staleness`` are recorded at construction and refused when a strategy is built;
* resource specs keep AutoDist's per-node ``ssh_config``; ``ResourceSpec.gpu_devices``;
* ``saver_impl.const.ENV`` reads AutoDist's environment variables;
* ``SavedModelBuilder.add_meta_graph_and_variables(train_op=...)``.

Everything but the last test runs without a cluster; that one trains on the pool's
two-node cluster (the spec other tests use) and loads the export with plain TensorFlow.
"""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import yaml

import saver_impl
import saver_impl.strategy as strategy_module
from autodist_verify import model_graph, model_spec
from autodist_verify.compare import assert_bitwise_equal
from autodist_verify.expectations import oracle_state
from cluster_sim import ResourceSpec, SpecError
from saver_impl.strategy import (
    ALL_BUILDERS,
    PS,
    Parallax,
    Partition,
    PartitionedPS,
    PSLoadBalancing,
    RandomAxisPartitionAR,
    Strategy,
    StrategyError,
    UnevenPartitionedPS,
    VariableConfig,
    VariableInfo,
)
from tests.specs import SGD_SPEC

REPO_ROOT = Path(__file__).resolve().parents[1]
A, B = "127.0.0.1:CPU:0", "127.0.0.2:CPU:0"
G0, G1 = "127.0.0.1:GPU:0", "127.0.0.2:GPU:0"
CLUSTER = ([G0, G1], [A, B])  # (replica devices, ps devices)

# -- module aliases -----------------------------------------------------------------------

STRATEGY_ALIASES = {
    "ps_strategy": "PS",
    "ps_lb_strategy": "PSLoadBalancing",
    "partitioned_ps_strategy": "PartitionedPS",
    "uneven_partition_ps_strategy": "UnevenPartitionedPS",
    "all_reduce_strategy": "AllReduce",
    "partitioned_all_reduce_strategy": "PartitionedAR",
    "parallax_strategy": "Parallax",
    "random_axis_partition_all_reduce_strategy": "RandomAxisPartitionAR",
}


@pytest.mark.parametrize("module, name", sorted(STRATEGY_ALIASES.items()))
def test_autodist_strategy_module_paths_are_aliases(module, name):
    alias = importlib.import_module(f"saver_impl.strategy.{module}")
    cls = getattr(alias, name)
    assert cls is getattr(strategy_module, name)
    assert cls.__module__ == "saver_impl.strategy.builders"  # re-exported, not a copy
    assert alias.__all__ == [name]
    assert alias.__doc__ and len(alias.__doc__.strip().splitlines()) == 1


def test_autodist_checkpoint_module_paths_are_aliases():
    saved_model_builder = importlib.import_module("saver_impl.checkpoint.saved_model_builder")
    builder = importlib.import_module("saver_impl.checkpoint.builder")
    saver = importlib.import_module("saver_impl.checkpoint.saver")
    assert saved_model_builder.SavedModelBuilder is builder.SavedModelBuilder is saver_impl.SavedModelBuilder
    assert saver.Saver is saver_impl.Saver
    assert saved_model_builder.__doc__ and len(saved_model_builder.__doc__.strip().splitlines()) == 1


# -- RandomAxisPartitionAR ------------------------------------------------------------------

# The axes below follow from the documented rule: crc32(name) % len(candidates) among the
# axes of size > 1 (crc32 % 2: dense/kernel 1, w 0, b 1; % 3: v 2), sparse variables on
# axis 0. They are written out so a change of the rule shows, and recomputed below.
AXIS_CASES = [
    (VariableInfo("dense/kernel", (4, 3), "float32"), Partition(1, (2, 1))),
    (VariableInfo("w", (4, 3), "float32"), Partition(0, (2, 2))),
    (VariableInfo("v", (2, 6, 5), "float32"), Partition(2, (3, 2))),
    (VariableInfo("b", (3, 1, 4), "float64"), Partition(2, (2, 2))),  # candidates 0 and 2
    (VariableInfo("row", (1, 5), "float32"), Partition(1, (3, 2))),  # the only candidate
    (VariableInfo("emb", (10, 4), "float32", sparse_grad=True), Partition(0, (5, 5))),  # crc % 2 is 1
    (VariableInfo("col_emb", (1, 4), "float32", sparse_grad=True), None),  # sparse, dim 0 is 1
    (VariableInfo("one", (1, 1), "float32"), None),
    (VariableInfo("scale", (), "float32"), None),
]
AXIS_VARIABLES = [info for info, _ in AXIS_CASES] + [
    VariableInfo("bn/moving_mean", (3, 2), "float32", trainable=False),
    VariableInfo("global_step", (), "int64", trainable=False),
]


def test_random_axis_partition_ar_places_by_the_documented_axis():
    strategy = RandomAxisPartitionAR().build_for_devices(AXIS_VARIABLES, *CLUSTER)
    expected = {info.name: VariableConfig("allreduce", partition=partition) for info, partition in AXIS_CASES}
    expected["bn/moving_mean"] = VariableConfig("ps", (A,))
    expected["global_step"] = VariableConfig("ps", (A,))
    assert strategy == Strategy((G0, G1), A, expected)
    assert list(strategy.variables) == [info.name for info in AXIS_VARIABLES]


def test_random_axis_partition_ar_axis_is_the_crc32_rule():
    names = [f"layer_{i}/kernel" for i in range(40)]
    infos = [VariableInfo(name, (3, 4, 5), "float32") for name in names]
    strategy = RandomAxisPartitionAR().build_for_devices(infos, *CLUSTER)
    axes = [strategy.variables[name].partition.axis for name in names]
    assert axes == [zlib.crc32(name.encode("utf-8")) % 3 for name in names]
    assert set(axes) == {0, 1, 2}  # every axis is used, not always the first
    for name, axis in zip(names, axes):
        size = (3, 4, 5)[axis]
        assert strategy.variables[name].partition.sizes == ((size + 1) // 2, size // 2)
        assert RandomAxisPartitionAR.partition_axis(VariableInfo(name, (3, 4, 5), "float32")) == axis


def test_random_axis_partition_ar_output_validates_and_round_trips():
    for replicas, ps_devices in [([A], [A]), CLUSTER, ([G0, G1, B], [A, B])]:
        strategy = RandomAxisPartitionAR().build_for_devices(AXIS_VARIABLES, replicas, ps_devices)
        strategy.validate(AXIS_VARIABLES, replicas, ps_devices)
        assert Strategy.from_json(strategy.to_json()) == strategy


_BUILD_IN_A_NEW_PROCESS = """
import sys
from saver_impl.strategy import RandomAxisPartitionAR, VariableInfo
infos = [VariableInfo(f"layer_{i}/kernel", (3, 4, 5), "float32") for i in range(20)]
sys.stdout.write(RandomAxisPartitionAR().build_for_devices(infos, ["h:CPU:0"], ["h:CPU:0"]).to_json())
"""


def test_random_axis_partition_ar_is_the_same_in_every_process():
    """No dependence on Python's per-process string hash or on a random generator."""
    outputs = set()
    for seed in ("1", "2", "3"):
        done = subprocess.run(
            [sys.executable, "-c", _BUILD_IN_A_NEW_PROCESS], capture_output=True, text=True, cwd=REPO_ROOT,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}, check=True,
        )
        outputs.add(done.stdout)
    assert len(outputs) == 1
    (text,) = outputs
    infos = [VariableInfo(f"layer_{i}/kernel", (3, 4, 5), "float32") for i in range(20)]
    assert Strategy.from_dict(json.loads(text)) == RandomAxisPartitionAR().build_for_devices(
        infos, ["h:CPU:0"], ["h:CPU:0"]
    )


def test_random_axis_partition_ar_constructor_and_export():
    assert [(p.name, p.default) for p in inspect.signature(RandomAxisPartitionAR).parameters.values()] == [
        ("chunk_size", 128)
    ]
    assert RandomAxisPartitionAR(chunk_size=8).settings == {"chunk_size": 8}
    assert "RandomAxisPartitionAR" in strategy_module.__all__
    assert RandomAxisPartitionAR not in ALL_BUILDERS  # the conformance matrix's seven builders


# -- sync / staleness -----------------------------------------------------------------------

# A module-level table like an AutoDist program's: constructing it must not raise.
TABLE = [PS(), PS(staleness=3), PSLoadBalancing(sync=False), Parallax(staleness=1)]
ASYNC_MESSAGE = r"asynchronous training is outside the bit-exact contract and not implemented"


@pytest.mark.parametrize("builder", [PS, PSLoadBalancing, PartitionedPS, UnevenPartitionedPS, Parallax])
@pytest.mark.parametrize("kwargs", [dict(sync=False), dict(staleness=3), dict(sync=False, staleness=2)])
def test_asynchronous_settings_are_recorded_then_refused_at_build(builder, kwargs):
    instance = builder(**kwargs)
    assert {k: instance.settings[k] for k in kwargs} == kwargs
    variables = [VariableInfo("w", (4, 2), "float32")]
    with pytest.raises(StrategyError, match=ASYNC_MESSAGE) as caught:
        instance.build_for_devices(variables, *CLUSTER)
    assert str(caught.value).startswith(f"{builder.__name__}(")
    with pytest.raises(StrategyError, match=ASYNC_MESSAGE):
        instance.build(variables, ResourceSpec.local(nodes=2))


def test_the_synchronous_entries_of_a_table_still_build():
    variables = [VariableInfo("w", (4, 2), "float32")]
    assert TABLE[0].build_for_devices(variables, *CLUSTER).variables == {"w": VariableConfig("ps", (A,))}
    assert TABLE[1].settings["staleness"] == 3
    for builder in TABLE[1:]:
        with pytest.raises(StrategyError, match=ASYNC_MESSAGE):
            builder.build_for_devices(variables, *CLUSTER)


# -- resource specs: ssh_config, localhost, gpu_devices ----------------------------------

AUTODIST_MULTI_NODE = """\
nodes:
  - address: 127.0.0.1
    gpus: [0, 1]
    chief: true
    ssh_config: conf
  - address: 127.0.0.2
    gpus: [0, 1]
    ssh_config: conf
  - address: 127.0.0.3
    cpus: [0]
ssh:
  conf:
    username: 'ubuntu'
    key_file: '/home/ubuntu/.ssh/autodist.pem'
    python_venv: 'source /home/ubuntu/venvs/autodist/bin/activate'
    shared_envs:
      LD_LIBRARY_PATH: '/home/ubuntu/data'
"""


def _write(tmp_path, text):
    path = tmp_path / "spec.yml"
    path.write_text(text)
    return path


def test_ssh_config_is_kept_and_round_trips(tmp_path):
    spec = ResourceSpec.from_file(_write(tmp_path, AUTODIST_MULTI_NODE))
    assert [n.ssh_config for n in spec.nodes] == ["conf", "conf", None]
    assert spec.ssh["conf"]["username"] == "ubuntu"
    data = spec.to_dict()
    assert [n.get("ssh_config") for n in data["nodes"]] == ["conf", "conf", None]
    again = ResourceSpec.from_dict(yaml.safe_load(yaml.safe_dump(data)))
    assert again.nodes == spec.nodes and again.ssh == spec.ssh


def test_ssh_config_without_an_ssh_mapping_is_accepted():
    spec = ResourceSpec.from_dict({"nodes": [{"address": "127.0.0.1", "chief": True, "ssh_config": "anything"}]})
    assert spec.chief.ssh_config == "anything"


@pytest.mark.parametrize(
    "node, fragments",
    [
        ({"address": "127.0.0.2", "ssh_config": "other"}, ["'other'", "top-level 'ssh'", "'conf'"]),
        ({"address": "127.0.0.2", "ssh_config": 3}, ["non-empty string", "3"]),
        ({"address": "127.0.0.2", "ssh_config": ""}, ["non-empty string"]),
    ],
    ids=["unknown-name", "not-a-string", "empty"],
)
def test_bad_ssh_config_names_file_node_and_field(tmp_path, node, fragments):
    data = {"nodes": [{"address": "127.0.0.1", "chief": True, "ssh_config": "conf"}, node],
            "ssh": {"conf": {"username": "u"}}}
    path = _write(tmp_path, yaml.safe_dump(data))
    with pytest.raises(SpecError) as caught:
        ResourceSpec.from_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: node 1 (127.0.0.2): field 'ssh_config'"), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_autodist_localhost_spec_is_loopback_127_0_0_1(tmp_path):
    """AutoDist's own test spec (tests/checkpoint/resource_spec.yml) uses localhost."""
    text = "nodes:\n  - address: localhost\n    gpus: [0,1]\n    chief: true\n"
    spec = ResourceSpec.from_file(_write(tmp_path, text))
    assert spec.chief.address == "127.0.0.1"
    assert spec.cluster_def(15000) == {"worker": ["127.0.0.1:15000"]}
    assert [d.name for d in spec.replica_devices] == ["127.0.0.1:GPU:0", "127.0.0.1:GPU:1"]


def test_gpu_devices(tmp_path):
    spec = ResourceSpec.from_file(_write(tmp_path, AUTODIST_MULTI_NODE))
    pairs = spec.gpu_devices
    assert [name for name, _ in pairs] == ["127.0.0.1:GPU:0", "127.0.0.1:GPU:1", "127.0.0.2:GPU:0", "127.0.0.2:GPU:1"]
    for name, device in pairs:
        assert device is not None and device == spec.device(name) and device.kind == "GPU"
    assert [d for _, d in pairs] == [d for d in spec.replica_devices if d.kind == "GPU"]
    assert pairs[3][1].tf_name == "/job:worker/task:1/device:CPU:2"
    assert ResourceSpec.local(nodes=2).gpu_devices == []


# -- saver_impl.const.ENV -------------------------------------------------------------------

ENV_DEFAULTS = {
    "AUTODIST_WORKER": "", "AUTODIST_STRATEGY_ID": "", "AUTODIST_MIN_LOG_LEVEL": "INFO",
    "AUTODIST_IS_TESTING": False, "AUTODIST_DEBUG_REMOTE": False, "SYS_DATA_PATH": "", "SYS_RESOURCE_PATH": "",
}


def test_env_members_and_defaults(monkeypatch):
    from saver_impl.const import ENV

    assert [member.name for member in ENV] == list(ENV_DEFAULTS)  # no member merged into another
    for name in ENV_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    assert {member.name: member.val for member in ENV} == ENV_DEFAULTS
    assert {member.name: member.default for member in ENV} == ENV_DEFAULTS
    assert all(member.description for member in ENV)
    monkeypatch.setenv("AUTODIST_MIN_LOG_LEVEL", "")
    assert ENV.AUTODIST_MIN_LOG_LEVEL.val == "INFO"  # empty counts as unset, as in AutoDist


def test_env_values_are_read_when_asked(monkeypatch):
    from saver_impl.const import ENV

    monkeypatch.setenv("AUTODIST_WORKER", "10.0.0.2")
    monkeypatch.setenv("SYS_RESOURCE_PATH", "/data/spec.yml")
    assert ENV.AUTODIST_WORKER.val == "10.0.0.2"
    assert ENV.SYS_RESOURCE_PATH.val == "/data/spec.yml"
    for text, expected in [("True", True), ("true", False), ("1", False), ("False", False), ("", False)]:
        monkeypatch.setenv("AUTODIST_IS_TESTING", text)
        assert ENV.AUTODIST_IS_TESTING.val is expected, text


# -- SavedModelBuilder(train_op=...) ----------------------------------------------------------

TRAIN_OP_KEY = "saved_model_train_op"
TAG = "train"


def _plain_model(tf):
    """A tiny plain graph: (graph, captured-like train op, another op, saver)."""
    graph = tf.Graph()
    with graph.as_default():
        w = tf.compat.v1.get_variable("w", [2], initializer=tf.compat.v1.ones_initializer())
        loss = tf.reduce_sum(tf.square(w), name="loss")
        train = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss, name="train")
        other = tf.no_op(name="other_op")
        saver = saver_impl.Saver()
    return graph, train, other, loss, saver


def _train_op_names(tf, export_dir):
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        tf.compat.v1.saved_model.loader.load(sess, [TAG], str(export_dir))
        return [item.name for item in tf.compat.v1.get_collection(TRAIN_OP_KEY)]


def test_train_op_must_belong_to_the_session_graph(tmp_path):
    import tensorflow as tf
    graph, _, _, _, saver = _plain_model(tf)
    _, _, foreign, _, _ = _plain_model(tf)
    with tf.compat.v1.Session(graph=graph) as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        builder = saver_impl.SavedModelBuilder(str(tmp_path / "export"))
        with pytest.raises(saver_impl.AutoDistError, match=r"train_op 'other_op' belongs to another graph"):
            builder.add_meta_graph_and_variables(sess, [TAG], saver=saver, train_op=foreign)
        with pytest.raises(saver_impl.AutoDistError, match=r"train_op='train' is a str"):
            builder.add_meta_graph_and_variables(sess, [TAG], saver=saver, train_op="train")
        assert graph.get_collection(TRAIN_OP_KEY) == []  # nothing recorded by a refused call


def test_train_op_argument_overrides_exported_train_op_which_still_decides_otherwise(tmp_path):
    import tensorflow as tf
    calls = []

    class Builder(saver_impl.SavedModelBuilder):
        def exported_train_op(self, sess):
            calls.append(sess)
            return sess.graph.get_operation_by_name("train")

    exported = {}
    for case, argument in [("override", None), ("tensor", "loss"), ("op", "other_op")]:
        graph, _, _, _, saver = _plain_model(tf)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            train_op = None if argument is None else graph.as_graph_element(
                f"{argument}:0" if case == "tensor" else argument)
            builder = Builder(str(tmp_path / case))
            builder.add_meta_graph_and_variables(sess, [TAG], saver=saver, train_op=train_op)
            builder.save()
        exported[case] = _train_op_names(tf, tmp_path / case)
    assert exported == {"override": ["train"], "tensor": ["loss:0"], "op": ["other_op"]}
    assert len(calls) == 1  # exported_train_op is asked only when train_op is not given


def test_distributed_export_records_the_given_train_op(cluster_pool, tmp_path):
    """Train one step under RandomAxisPartitionAR (a split along axis 1 included), export
    with ``train_op=`` another op of the original graph, load with plain TensorFlow: the
    collection holds that op, and the variables are the oracle's."""
    import tensorflow as tf

    cluster = cluster_pool.get(ResourceSpec.local(nodes=2, gpus_per_node=1).to_dict())
    feeds = model_spec.feeds(SGD_SPEC, 1, 8, seed=5)
    export_dir = tmp_path / "export"
    with saver_impl.AutoDist(cluster=cluster, strategy_builder=RandomAxisPartitionAR()) as ad:
        with tf.Graph().as_default() as graph, ad.scope():
            model = model_graph.build(SGD_SPEC)
            fine_tune = tf.group(model.train_op, name="fine_tune_op")
            saver = saver_impl.Saver()
            sess = ad.create_distributed_session()
            for feed in feeds:
                sess.run(model.train_op, model_graph.feed_dict(graph, feed))
            assert ad.strategy.variables["dense_0/kernel"].partition == Partition(1, (2, 1))
            builder = saver_impl.SavedModelBuilder(str(export_dir))
            builder.add_meta_graph_and_variables(sess, [TAG], saver=saver, train_op=fine_tune)
            builder.save()
            replicas = len(ad.strategy.replicas)
    with tf.Graph().as_default(), tf.compat.v1.Session() as plain:
        tf.compat.v1.saved_model.loader.load(plain, [TAG], str(export_dir))
        assert [op.name for op in tf.compat.v1.get_collection(TRAIN_OP_KEY)] == ["fine_tune_op"]
        variables = tf.compat.v1.global_variables()
        loaded = {v.op.name: value for v, value in zip(variables, plain.run(variables))}
    assert replicas == 2
    assert_bitwise_equal(oracle_state(SGD_SPEC, [(replicas, feeds)]), loaded, what="the exported variables")
