"""Sharded checkpoints on hosts that share no filesystem (issue 13, item 2), rehearsed
on one machine without root.

Three ``cluster-sim node`` processes serve a spec of three loopback addresses, each on
its own port and in its own scratch directory (``--scratch-dir``: that host's disk).
The client runs in the chief's directory (it runs on the chief's host) and connects to
the running nodes (``AutoDist(..., real_hosts=True)``: no embedded cluster). The
checkpoint path goes through :func:`cluster_sim.private_view`, a link every process
resolves to its own working directory: one absolute path, a different directory on
each host, as with private disks mounted at the same place.

An unsharded save works there (written on the chief's host, where the client is) and
plain TensorFlow restores it; a sharded save, whose shards the other hosts would write
on their own disks, is refused before anything is written, with one error naming those
hosts; so is a sharded restore. On a directory all hosts share, the same sharded save
works. Without the check, the sharded save failed after writing (``NotFoundError ...
_temp`` on another host, or, with the directory present on every disk,
``MergeV2Checkpoints ... did not exist``) and left ``_temp`` directories on the hosts'
disks; the restore failed with TensorFlow's "a Variable name or other graph key that is
missing" (``RestoreV2 ... NotFoundError`` on another host).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import tensorflow as tf

from autodist_verify import model_graph, model_spec
from cluster_sim import LocalCluster, ResourceSpec, private_view
from saver_impl import AutoDist, Saver
from saver_impl.errors import AutoDistError
from saver_impl.strategy import PartitionedPS
from tests.cluster_helpers import live_children, read_until
from tests.specs import SGD_SPEC

tf.compat.v1.disable_eager_execution()

REPO = Path(__file__).resolve().parents[1]
ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
START_TIMEOUT_S = 120  # generous bound for a node start on a loaded 2-core machine
OTHER_HOSTS = "host 127.0.0.2 (/job:worker/task:1) and host 127.0.0.3 (/job:worker/task:2)"


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:  # held together, so the ports are distinct
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Hosts:
    """The running nodes: the spec, the chief's target, each host's disk, the private view."""

    def __init__(self, spec: Path, target: str, disks: list[Path], view: Path):
        self.spec, self.target, self.disks, self.view = spec, target, disks, view

    def listing(self, name: str) -> list[set[str]]:
        """Each host's ``name`` on its disk, and every file and directory in it."""
        return [{str(p.relative_to(disk)) for p in disk.glob(f"{name}*")}
                | {str(p.relative_to(disk)) for p in disk.glob(f"{name}/**/*")} for disk in self.disks]


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """Three nodes, each ``cluster-sim node SPEC --address A --scratch-dir DISK``."""
    root = tmp_path_factory.mktemp("hosts")
    ports = _free_ports(len(ADDRESSES))
    spec = root / "spec.yml"
    spec.write_text("nodes:\n" + "".join(
        f"  - {{address: {address}, port: {port}, cpus: [0]{', chief: true' if task == 0 else ''}}}\n"
        for task, (address, port) in enumerate(zip(ADDRESSES, ports))))
    disks = [root / f"disk-{address}" for address in ADDRESSES]
    processes: list[subprocess.Popen] = []
    try:
        for address, disk in zip(ADDRESSES, disks):
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "cluster_sim", "node", str(spec), "--address", address,
                 "--scratch-dir", str(disk)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO))
        for process in processes:
            read_until(process.stdout, lambda seen: "serving at" in seen, START_TIMEOUT_S)
        yield Hosts(spec, f"grpc://{ADDRESSES[0]}:{ports[0]}", disks, private_view(root / "view"))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
            process.stdout.close()


@pytest.fixture
def on_the_chief(hosts, monkeypatch):
    """The client runs on the chief's host: its working directory is the chief's disk."""
    monkeypatch.chdir(hosts.disks[0])


def state(sess) -> dict[str, bytes]:
    """Every variable of the original graph, as raw bytes."""
    variables = tf.compat.v1.global_variables()
    return {v.op.name: np.asarray(value).tobytes() for v, value in zip(variables, sess.run(variables))}


def plain_restore(prefix: str) -> dict[str, bytes]:
    """The checkpoint restored by TensorFlow's own Saver into the original graph, alone."""
    with tf.Graph().as_default():
        model_graph.build(SGD_SPEC)
        with tf.compat.v1.Session() as plain:
            tf.compat.v1.train.Saver().restore(plain, prefix)
            return state(plain)


def train(ad: AutoDist):
    """Build the model in ``ad.scope()`` (call inside a graph), train three steps; the session."""
    with ad.scope():
        model = model_graph.build(SGD_SPEC)
        sess = ad.create_distributed_session()
    for feed in model_spec.feeds(SGD_SPEC, 3, 6, seed=0):
        sess.run(model.train_op, feed)
    return sess


def test_each_host_sees_its_own_disk_under_the_view(hosts, on_the_chief):
    """The simulation itself: a file each task writes through the view lands on its own
    host's disk (nodes in their --scratch-dir), and the client's view is the chief's."""
    graph = tf.Graph()
    with graph.as_default():
        path = tf.compat.v1.placeholder(tf.string, [])  # fed: nothing is folded on the chief
        writes = []
        for task in range(len(ADDRESSES)):
            with tf.device(f"/job:worker/task:{task}/device:CPU:0"):
                writes.append(tf.io.write_file(tf.strings.join([path, f"-{task}"]), f"task {task}"))
        with tf.compat.v1.Session(hosts.target, graph=graph) as sess:
            sess.run(writes, {path: str(hosts.view / "marker")})
    try:
        assert [sorted(names) for names in hosts.listing("marker")] == [["marker-0"], ["marker-1"], ["marker-2"]]
        assert (hosts.view / "marker-0").read_text() == "task 0"
        assert not (hosts.view / "marker-1").exists()
    finally:
        for task, disk in enumerate(hosts.disks):
            (disk / f"marker-{task}").unlink(missing_ok=True)


@pytest.mark.parametrize("on_every_disk", [False, True], ids=["dir-on-chief-only", "dir-on-every-disk"])
def test_unsharded_save_works_and_sharded_is_refused_up_front(hosts, on_the_chief, on_every_disk):
    """Training across the three running nodes (no embedded cluster); the unsharded save
    lands on the chief's disk and plain TensorFlow restores it; the sharded save to the
    same directory raises one CheckpointNotShared (a FailedPreconditionError) naming the
    two other hosts, saying what to do, and writes nothing on any disk; a sharded
    restore of the unsharded checkpoint is refused the same way and restores nothing.

    ``dir-on-every-disk``: each host has its own ``ckpt`` directory (the issue's
    ``MergeV2Checkpoints ... did not exist`` case); else only the chief's disk has one
    (``NotFoundError ... _temp``)."""
    name = f"ckpt-{on_every_disk}"
    for disk in hosts.disks if on_every_disk else hosts.disks[:1]:
        (disk / name).mkdir()
    directory = hosts.view / name
    children = live_children(psutil.Process())
    with tf.Graph().as_default(), AutoDist(resource_spec_file=str(hosts.spec), strategy_builder=PartitionedPS(),
                                           real_hosts=True) as ad:
        sess = train(ad)
        assert ad.cluster is None and sess.sess_str == hosts.target
        assert live_children(psutil.Process()) == children  # no embedded cluster was started
        trained = state(sess)
        saved = Saver().save(sess, str(directory / "model"), global_step=3)
        listing = hosts.listing(name)
        with pytest.raises(tf.errors.FailedPreconditionError) as refused:
            Saver(sharded=True).save(sess, str(directory / "sharded"), global_step=3)
        assert hosts.listing(name) == listing
        with pytest.raises(tf.errors.FailedPreconditionError) as refused_restore:
            Saver(sharded=True).restore(sess, saved)
        assert state(sess) == trained and hosts.listing(name) == listing
    assert saved == str(directory / "model-3")
    assert f"{name}/model-3.index" in listing[0]
    assert listing[1:] == ([{name}] * 2 if on_every_disk else [set(), set()])
    assert plain_restore(saved) == trained
    assert tf.train.latest_checkpoint(str(directory)) == saved
    for error, what in ((refused.value, f"cannot save to {directory}: "),
                        (refused_restore.value, f"cannot restore {saved}: ")):
        assert type(error).__name__ == "CheckpointNotShared"
        message = str(error)
        assert f"Saver(sharded=True) {what}{OTHER_HOSTS} would" in message
        assert "host 127.0.0.1" not in message
        assert "/job:worker/task:1: NotFoundError, /job:worker/task:2: NotFoundError" in message
        assert "filesystem shared by the client and those hosts" in message
        assert "Saver(sharded=False)" in message


def test_a_refusal_is_not_remembered_and_a_shared_directory_saves_sharded(hosts, on_the_chief, tmp_path):
    """The same sharded save path, refused while it leads each host to its own disk,
    goes ahead once it leads all of them to one directory (the link is moved there):
    every host writes its shard, plain TensorFlow restores the checkpoint, and a sharded
    restore brings the values back on the three hosts."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (hosts.disks[0] / "models").mkdir()
    link = tmp_path / "ckpt"
    link.symlink_to(hosts.view / "models")
    with tf.Graph().as_default(), AutoDist(resource_spec_file=str(hosts.spec), strategy_builder=PartitionedPS(),
                                           real_hosts=True) as ad:
        sess = train(ad)
        trained = state(sess)
        saver = Saver(sharded=True)
        with pytest.raises(tf.errors.FailedPreconditionError, match="not see the directory the client sees"):
            saver.save(sess, str(link / "model"), global_step=3)
        link.unlink()
        link.symlink_to(shared)
        saved = saver.save(sess, str(link / "model"), global_step=3)
        sess.run([v.initializer for v in tf.compat.v1.global_variables()])
        assert state(sess) != trained
        saver.restore(sess, saved)
        assert state(sess) == trained
    assert sorted(p.name for p in shared.iterdir() if ".data-" in p.name) == [
        f"model-3.data-0000{shard}-of-00003" for shard in range(3)]
    assert plain_restore(saved) == trained
    assert hosts.listing("models") == [{"models"}, set(), set()]


def reader_tasks(sess) -> set[str]:
    """The tasks on which the distributed graph reads checkpoints (its RestoreV2 ops); None
    for TensorFlow's own restore op, placed on no task (it runs on the session's master)."""
    return {tf.DeviceSpec.from_string(op.device).task for op in sess.distributed_graph.get_operations()
            if op.type == "RestoreV2" and op.device}


@pytest.mark.parametrize("on_every_disk", [False, True], ids=["on-the-chief", "on-every-disk"])
def test_an_unsharded_restore_reads_on_the_hosts_that_see_the_checkpoint(hosts, on_the_chief, on_every_disk):
    """An unsharded checkpoint on the chief's disk only is read on the chief (as
    TensorFlow's restore reads it); copied to the same path on every host's disk, each
    host reads the values of the copies it holds. Either way every variable gets the
    saved values back."""
    name = f"restore-{on_every_disk}"
    (hosts.disks[0] / name).mkdir()
    directory = hosts.view / name
    with tf.Graph().as_default(), AutoDist(resource_spec_file=str(hosts.spec), strategy_builder=PartitionedPS(),
                                           real_hosts=True) as ad:
        sess = train(ad)
        trained = state(sess)
        saver = Saver()
        saved = saver.save(sess, str(directory / "model"), global_step=3)
        if on_every_disk:
            for disk in hosts.disks[1:]:
                shutil.copytree(hosts.disks[0] / name, disk / name)
        sess.run([v.initializer for v in tf.compat.v1.global_variables()])
        assert state(sess) != trained
        saver.restore(sess, saved)
        assert state(sess) == trained
        readers = reader_tasks(sess)
    # PartitionedPS puts variables on all three tasks: each reads where it sees the files.
    assert readers == ({None, 0, 1, 2} if on_every_disk else {None})


def test_real_hosts_and_a_given_cluster_are_refused_together():
    """real_hosts=True connects to running servers; with cluster= it is a contradiction."""
    spec = ResourceSpec.local(nodes=1)
    with pytest.raises(AutoDistError, match=r"either cluster= .* or real_hosts=True, not both"):
        AutoDist(resource_spec=spec, cluster=LocalCluster(spec), real_hosts=True)
