"""The Saver under real filesystem conditions, and AutoDist.close on real hosts.

* Relative paths: a node resolves a relative path in its own working directory, so the
  Saver resolves checkpoint prefixes on the client. The cluster here gives each node a
  private working directory (``private_scratch``), as separate hosts have.
* "Latest" is atomic: the state file names a checkpoint only once its data, index and
  MetaGraph are written. A save made to fail by a directory standing where one of its
  files goes raises TensorFlow's error and leaves the latest checkpoint, the retained
  ones and the directory's files as they were (no ``_temp``/``.tempstate`` litter).
* ``AutoDist.close()`` frees the variables on servers it did not start (``cluster-sim
  node`` on a non-loopback address of this machine stands for a real host), without
  aborting another program's session on the same cluster.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import tensorflow as tf

from autodist_verify import checkpoints, model_graph, model_spec
from cluster_sim import LocalCluster, ResourceSpec
from saver_impl import AutoDist, SavedModelBuilder, Saver
from saver_impl.strategy import ALL_BUILDERS, PS, AllReduce
from tests.cluster_helpers import free_port, read_until
from tests.specs import SGD_SPEC

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scratch_cluster():
    """2 nodes, 1 simulated gpu each, every node in its own working directory."""
    with LocalCluster(ResourceSpec.local(nodes=2, gpus_per_node=1), private_scratch=True) as running:
        yield running


def node_files(cluster) -> list[str]:
    """Every file under the nodes' working directories."""
    found = []
    for task in range(len(cluster.spec.nodes)):
        for root, _, files in os.walk(cluster.scratch_dir(task)):
            found += [os.path.join(root, name) for name in files]
    return found


def state(sess) -> dict[str, bytes]:
    """Every variable of the original graph, as raw bytes."""
    variables = tf.compat.v1.global_variables()
    return {v.op.name: np.asarray(value).tobytes() for v, value in zip(variables, sess.run(variables))}


# -- relative paths ---------------------------------------------------------------------


@pytest.mark.parametrize("sharded", [False, True], ids=["unsharded", "sharded"])
@pytest.mark.parametrize("builder", ALL_BUILDERS, ids=lambda b: b.__name__)
def test_a_relative_prefix_is_the_clients(scratch_cluster, tmp_path, monkeypatch, builder, sharded):
    """save(sess, "runs/a/model"): every file in the client's runs/a (none on the nodes),
    the state names it, a restore by the same relative path brings the values back.
    runs/a exists only on the client: a node resolving the path in its own directory
    failed with SaveV2's NotFoundError. A missing nested directory is TensorFlow's
    ValueError, as for a single-device save."""
    monkeypatch.chdir(tmp_path)
    directory = tmp_path / "runs" / "a"
    directory.mkdir(parents=True)
    with AutoDist(cluster=scratch_cluster, strategy_builder=builder()) as ad:
        with tf.Graph().as_default(), ad.scope():
            model = model_graph.build(SGD_SPEC)
            saver = Saver(sharded=sharded, save_relative_paths=True)
            sess = ad.create_distributed_session()
            sess.run(model.train_op, model_spec.feeds(SGD_SPEC, 1, 4, seed=0)[0])
            saved = saver.save(sess, "runs/a/model", global_step=1)
            before = state(sess)
            sess.run([v.initializer for v in tf.compat.v1.global_variables()])
            saver.restore(sess, "runs/a/model-1")
            after = state(sess)
            with pytest.raises(ValueError, match="Parent directory of .*runs/b/c/model doesn't exist"):
                saver.save(sess, "runs/b/c/model", global_step=2)
    assert saved == str(directory / "model-1")
    assert node_files(scratch_cluster) == []
    assert {p.name for p in directory.iterdir()} >= {"checkpoint", "model-1.index", "model-1.meta"}
    assert tf.train.latest_checkpoint("runs/a") == os.path.join("runs/a", "model-1")
    assert 'model_checkpoint_path: "model-1"' in (directory / "checkpoint").read_text()
    assert after == before


def test_a_relative_saved_model_export_is_the_clients(scratch_cluster, tmp_path, monkeypatch):
    """SavedModelBuilder("export"): variables and saved_model.pb together in the client's
    export/, which plain TensorFlow loads."""
    monkeypatch.chdir(tmp_path)
    with AutoDist(cluster=scratch_cluster, strategy_builder=PS()) as ad:
        with tf.Graph().as_default(), ad.scope():
            model_graph.build(SGD_SPEC)
            saver = Saver()
            sess = ad.create_distributed_session()
            expected = state(sess)
            builder = SavedModelBuilder("export")
            builder.add_meta_graph_and_variables(sess, ["train"], saver=saver)
            builder.save()
    assert node_files(scratch_cluster) == []
    with tf.Graph().as_default(), tf.compat.v1.Session() as plain:
        tf.compat.v1.saved_model.loader.load(plain, ["train"], "export")
        assert state(plain) == expected


# -- atomic "latest" --------------------------------------------------------------------


def litter(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if "_temp" in p.name or "tempstate" in p.name)


@pytest.fixture
def cluster(cluster_pool):
    return cluster_pool.get(ResourceSpec.local(nodes=2, gpus_per_node=1).to_dict())


@pytest.mark.parametrize("sharded", [False, True], ids=["unsharded", "sharded"])
@pytest.mark.parametrize("blocked", ["meta", "index", "data"])
@pytest.mark.parametrize("session_kind", ["distributed", "plain"])
def test_a_failed_save_leaves_latest_and_the_directory_as_they_were(
        cluster, tmp_path, session_kind, blocked, sharded):
    """A directory where the second save's .meta, .index or first data file goes: the
    save raises TensorFlow's error (no saver_impl code in it); latest, the retained
    checkpoints and the files are the first save's; nothing of the second is left."""
    shards = 2 if sharded and session_kind == "distributed" else 1
    blocker = {"meta": "model-2.meta", "index": "model-2.index",
               "data": f"model-2.data-00000-of-0000{shards}"}[blocked]
    prefix = str(tmp_path / "model")
    with AutoDist(cluster=cluster, strategy_builder=PS()) as ad:
        with tf.Graph().as_default(), ad.scope():
            model_graph.build(SGD_SPEC)
            saver = Saver(sharded=sharded, max_to_keep=1)
            if session_kind == "distributed":
                sess = ad.create_distributed_session()
            else:
                sess = tf.compat.v1.Session()
                sess.run(tf.compat.v1.global_variables_initializer())
            first = saver.save(sess, prefix, global_step=1)
            listing = sorted(p.name for p in tmp_path.iterdir())
            (tmp_path / blocker).mkdir()
            with pytest.raises(tf.errors.OpError) as failure:
                saver.save(sess, prefix, global_step=2)
            if session_kind == "plain":
                sess.close()
    assert "saver_impl" not in str(failure.value)
    assert tf.train.latest_checkpoint(str(tmp_path)) == first
    assert saver.last_checkpoints == [first]
    assert litter(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*listing, blocker])
    assert checkpoints.values(first)


def test_stale_litter_of_the_same_prefix_goes_at_the_next_save(cluster, tmp_path):
    """Staging files and directories an aborted save of model-2 left are removed by the
    next save of model-2; a file that merely starts alike stays."""
    stale = ["model-2_temp_0123456789abcdef.index.tempstate42",
             "model-2_temp_0123456789abcdef.data-00000-of-00001"]
    for name in stale:
        (tmp_path / name).write_bytes(b"stale")
    shards = tmp_path / "model-2_temp_fedcba9876543210_temp"
    shards.mkdir()
    (shards / "part-00000-of-00002.index").write_bytes(b"stale")
    (tmp_path / "model-2_temperature.txt").write_text("not a checkpoint's")
    with AutoDist(cluster=cluster, strategy_builder=AllReduce()) as ad:
        with tf.Graph().as_default(), ad.scope():
            model_graph.build(SGD_SPEC)
            saver = Saver()
            sess = ad.create_distributed_session()
            saved = saver.save(sess, str(tmp_path / "model"), global_step=2)
    assert litter(tmp_path) == ["model-2_temperature.txt"]
    assert tf.train.latest_checkpoint(str(tmp_path)) == saved


def test_errors_of_a_distributed_save_show_no_saver_impl_code(cluster, tmp_path):
    """A save refused in the graph (diverged mirrors) raises TensorFlow's error with the
    failing node named, not the traceback of where saver_impl built its ops."""
    with AutoDist(cluster=cluster, strategy_builder=AllReduce()) as ad:
        with tf.Graph().as_default(), ad.scope():
            model_graph.build(SGD_SPEC)
            saver = Saver()
            sess = ad.create_distributed_session()
            storage = sess.dist.storage["dense_0/kernel"]
            with sess.distributed_graph.as_default():
                poke = tf.raw_ops.AssignAddVariableOp(resource=storage.handles[0][1], value=tf.ones(storage.shape))
            sess.raw_session.run(poke)
            with pytest.raises(tf.errors.InvalidArgumentError) as failure:
                saver.save(sess, str(tmp_path / "model"))
    message = str(failure.value)
    assert "mirrors of variable dense_0/kernel differ" in message
    assert "saver_impl" not in message and "most recent call last" not in message
    assert litter(tmp_path) == [] and list(tmp_path.iterdir()) == []


# -- AutoDist.close on real hosts -------------------------------------------------------


def _this_hosts_address() -> str | None:
    """A non-loopback IPv4 address of this machine (AutoDist treats it as a real host)."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    return None


@pytest.fixture
def real_host(tmp_path):
    """One ``cluster-sim node`` serving a one-node spec on a non-loopback address."""
    address = _this_hosts_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    spec, port = tmp_path / "host.yml", free_port("")
    spec.write_text(f"nodes:\n  - address: {address}\n    cpus: [0]\n    chief: true\n")
    process = subprocess.Popen([sys.executable, "-m", "cluster_sim", "node", str(spec), "--address", address,
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        read_until(process.stdout, lambda seen: "serving at" in seen, 120)
        yield spec, port, f"grpc://{address}:{port}"
    finally:
        process.kill()
        process.wait(timeout=10)
        process.stdout.close()


def variable_probe(sess, target: str):
    """A function telling whether the first copy of ``dense_0/kernel`` of ``sess`` still
    exists on its node, asked from a session of its own on ``target``."""
    storage = sess.dist.storage["dense_0/kernel"]
    copy = storage.handles[0][0].op
    graph = tf.Graph()
    with graph.as_default(), tf.device(copy.device):
        handle = tf.raw_ops.VarHandleOp(dtype=storage.dtype, shape=storage.parts[0].shape,
                                        container=copy.get_attr("container"), shared_name=copy.get_attr("shared_name"))
        initialized = tf.raw_ops.VarIsInitializedOp(resource=handle)

    def exists() -> bool:
        with tf.compat.v1.Session(target, graph=graph) as later:
            return bool(later.run(initialized))

    return exists


def test_close_frees_the_variables_on_a_real_host(real_host):
    """After ad.close() (here after the program closed its session), a later session on
    the host finds none of the variables."""
    spec, port, target = real_host
    ad = AutoDist(resource_spec_file=str(spec), strategy_builder=PS(), port=port)
    with tf.Graph().as_default(), ad.scope():
        model_graph.build(SGD_SPEC)
        with ad.create_distributed_session() as sess:
            exists = variable_probe(sess, target)
    assert exists()
    ad.close()
    assert not exists()


def test_close_leaves_another_programs_session_running(cluster):
    """Two AutoDists on one cluster: closing the first frees its variables and leaves the
    second's session training (a container reset would abort it)."""
    feeds = model_spec.feeds(SGD_SPEC, 2, 4, seed=0)
    with AutoDist(cluster=cluster, strategy_builder=PS()) as second:
        with tf.Graph().as_default(), second.scope():
            model = model_graph.build(SGD_SPEC)
            running = second.create_distributed_session()
            running.run(model.train_op, feeds[0])
            first = AutoDist(cluster=cluster, strategy_builder=AllReduce())
            with tf.Graph().as_default(), first.scope():
                model_graph.build(SGD_SPEC)
                exists = variable_probe(first.create_distributed_session(), cluster.target)
            assert exists()
            first.close()
            assert not exists()
            running.run(model.train_op, feeds[1])
