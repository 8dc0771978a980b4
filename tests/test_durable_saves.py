"""``Saver(durable=True)``: a save that returns only once its files are on the storage.

The syscalls are observed, not mocked: a child process saves from a distributed session
under ``strace`` (one trace file per thread), and the client's trace must show an fsync
of every staged file before its rename, of the directory after the renames, and of the
state file and the directory after the state file's rename; a default save, like
TensorFlow's, syncs nothing. The data files are written by the node processes, not the
client, so the client's fsyncs are what makes them durable. In-process tests check that
a durable save leaves the files and state of a default save, and the refusals.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saver_pb2

from autodist_verify import checkpoints
from cluster_sim import ResourceSpec
from saver_impl import AutoDist, Saver
from saver_impl.strategy import PS

REPO = Path(__file__).resolve().parents[1]

# Saves a default, a durable single-file and a durable sharded checkpoint from a 2-node
# PS session (variables on both nodes); a failed rename of a made-up path marks where
# each save begins in the trace.
CHILD = """
import json, os, sys
import psutil
from cluster_sim.determinism import apply_environment
apply_environment()
import tensorflow as tf
from cluster_sim import LocalCluster, ResourceSpec
from saver_impl import AutoDist, Saver
from saver_impl.strategy import PS

tf.compat.v1.disable_eager_execution()
root = sys.argv[1]
listing = {}
with LocalCluster(ResourceSpec.local(nodes=2)) as cluster, AutoDist(cluster=cluster, strategy_builder=PS()) as ad:
    with tf.Graph().as_default(), ad.scope():
        variables = [tf.compat.v1.get_variable(f"v{i}", [64, 16], initializer=tf.compat.v1.constant_initializer(i))
                     for i in range(4)]
        tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(tf.add_n([tf.reduce_sum(v) for v in variables]))
        savers = {"default": Saver(), "durable": Saver(durable=True),
                  "durable-sharded": Saver(durable=True, sharded=True)}
        sess = ad.create_distributed_session()
        for name, saver in savers.items():
            directory = os.path.join(root, name)
            os.mkdir(directory)
            try:
                os.rename(f"/nonexistent-MARK-{name}", "/nonexistent-MARK-end")
            except FileNotFoundError:
                pass
            saver.save(sess, os.path.join(directory, "model"))
            listing[name] = sorted(os.listdir(directory))
    node_threads = [t.id for i in range(2) for t in psutil.Process(cluster.pid(i)).threads()]
print(json.dumps({"pid": os.getpid(), "listing": listing, "node_threads": node_threads}))
"""

_CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+)")


def _strace_works() -> bool:
    if shutil.which("strace") is None:
        return False
    done = subprocess.run(["strace", "-qq", "-e", "trace=none", "true"], capture_output=True)
    return done.returncode == 0


def _client_calls(trace_prefix: Path, pid: int) -> dict[str, list[tuple[str, list[str]]]]:
    """The client's main-thread fsyncs and renames, per save (split at the markers):
    ``(syscall, [paths])``, a fsync's path decoded from its file descriptor."""
    sections: dict[str, list[tuple[str, list[str]]]] = {}
    current: list[tuple[str, list[str]]] = []
    for line in Path(f"{trace_prefix}.{pid}").read_text().splitlines():
        call = _CALL.match(line)
        if call is None:
            continue
        name, arguments, result = call.groups()
        marker = re.search(r'"/nonexistent-MARK-([\w-]+)"', arguments)
        if marker and marker.group(1) != "end":
            current = sections.setdefault(marker.group(1), [])
            continue
        if result != "0":
            continue
        if name == "fsync":
            current.append(("fsync", [re.search(r"<(.*)>", arguments).group(1)]))
        else:
            current.append(("rename", re.findall(r'"([^"]*)"', arguments)[-2:]))
    return sections


def _check_durable_order(calls: list[tuple[str, list[str]]], directory: str, files: list[str]) -> None:
    """Each staged file fsynced before its rename; the directory after the last one;
    then the state file's rename, its fsync and the directory's."""
    synced: set[str] = set()
    staged_renames = []
    for position, (name, paths) in enumerate(calls):
        if name == "fsync":
            synced.add(paths[0])
        elif "_temp_" in paths[0] and "_temp_" not in paths[1]:  # a commit (not TensorFlow's own .tmp rename)
            assert paths[0] in synced, f"{paths[0]} renamed to {paths[1]} before an fsync of it: {calls}"
            staged_renames.append(position)
    committed = sorted(Path(calls[p][1][1]).name for p in staged_renames)
    assert committed == sorted(f for f in files if f != "checkpoint"), (committed, files)
    after = calls[staged_renames[-1] + 1:]
    state = f"{directory}/checkpoint"
    assert [(n, p[-1]) for n, p in after] == [
        ("fsync", directory), ("rename", state), ("fsync", state), ("fsync", directory)], after


@pytest.mark.skipif(not _strace_works(), reason="needs strace, allowed to trace its children")
def test_a_durable_save_syncs_every_file_before_naming_it_and_the_state_after(tmp_path):
    trace = tmp_path / "trace" / "calls"
    trace.parent.mkdir()
    root = tmp_path / "checkpoints"
    root.mkdir()
    done = subprocess.run(
        ["strace", "-f", "-ff", "-qq", "-y", "--seccomp-bpf", "-o", str(trace),
         "-e", "trace=fsync,fdatasync,rename,renameat,renameat2", sys.executable, "-c", CHILD, str(root)],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    sections = _client_calls(trace, result["pid"])

    assert sections["default"] and all(name == "rename" for name, _ in sections["default"]), \
        f"a default save (TensorFlow's behaviour) syncs nothing: {sections['default']}"
    for name in ("durable", "durable-sharded"):
        _check_durable_order(sections[name], str(root / name), result["listing"][name])
    assert len([f for f in result["listing"]["durable-sharded"] if ".data-" in f]) == 2
    # The nodes wrote the data files the client synced: TensorFlow writes each shard to a
    # .tempstate name and renames it, and those renames are in the node processes' traces.
    node_traces = "".join(
        path.read_text() for path in trace.parent.iterdir()
        if int(path.name.rsplit(".", 1)[1]) in set(result["node_threads"]))
    for part in ("part-00000-of-00002", "part-00001-of-00002"):
        assert re.search(rf"durable-sharded/model_temp_\w+_temp/{part}\.data-00000-of-00001\.tempstate", node_traces)


@pytest.fixture
def cluster(cluster_pool):
    return cluster_pool.get(ResourceSpec.local(nodes=2).to_dict())


@pytest.mark.parametrize("sharded", [False, True], ids=["single-file", "sharded"])
def test_a_durable_save_leaves_the_files_and_state_of_a_default_save(cluster, tmp_path, sharded):
    """Same file names, byte-identical data and index, the same state file and
    MetaGraph (but for the Saver's own op names), a checkpoint a restore reads."""
    with AutoDist(cluster=cluster, strategy_builder=PS()) as ad:
        with tf.Graph().as_default(), ad.scope():
            variables = [tf.compat.v1.get_variable(f"v{i}", [32, 8],
                                                   initializer=tf.compat.v1.constant_initializer(i + 1))
                         for i in range(3)]
            tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(tf.add_n([tf.reduce_sum(v) for v in variables]))
            default, durable = Saver(sharded=sharded), Saver(sharded=sharded, durable=True)
            sess = ad.create_distributed_session()
            for name, saver in (("default", default), ("durable", durable)):
                (tmp_path / name).mkdir()
                assert saver.save(sess, str(tmp_path / name / "model"), global_step=3) == str(
                    tmp_path / name / "model-3")
            durable.restore(sess, str(tmp_path / "durable" / "model-3"))

    def files(name: str) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in (tmp_path / name).iterdir()}

    plain, synced = files("default"), files("durable")
    assert sorted(plain) == sorted(synced)
    for file_name in plain:
        if ".data-" in file_name or file_name.endswith(".index"):
            assert plain[file_name] == synced[file_name], file_name
    assert plain["checkpoint"].replace(b"/default/", b"/durable/") == synced["checkpoint"]
    metas = []
    for content in (plain["model-3.meta"], synced["model-3.meta"]):
        meta = meta_graph_pb2.MetaGraphDef.FromString(content)
        meta.ClearField("saver_def")
        metas.append(meta)
    assert metas[0] == metas[1]
    assert checkpoints.diff(str(tmp_path / "default" / "model-3"), str(tmp_path / "durable" / "model-3")) == []


def test_durable_refuses_the_v1_format_and_urls():
    with tf.Graph().as_default():
        tf.compat.v1.get_variable("v", [2], initializer=tf.compat.v1.zeros_initializer())
        with pytest.raises(ValueError, match="V2 format"):
            Saver(durable=True, write_version=saver_pb2.SaverDef.V1)
        saver = Saver(durable=True)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            with pytest.raises(ValueError, match="'gs://bucket/model' is a URL"):
                saver.save(sess, "gs://bucket/model")
