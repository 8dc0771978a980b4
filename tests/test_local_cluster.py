"""LocalCluster with real node processes: devices, fault injection, reset and teardown.

Every cluster here is real: one OS process per node running a tf.distribute.Server,
reached over gRPC. Clusters are shared per module where tests leave them as they found
them (fault tests restart/resume in a ``finally``). The only timing assertions are the
"fails within a bound instead of hanging" ones, which the brief of fault injection
promises (the operation timeout of ``session_config``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest
import tensorflow as tf

from cluster_sim import ClusterError, LocalCluster, ResourceSpec, ports
from cluster_sim.ports import LOCK_DIR, reserve_port
from tests.cluster_helpers import gone, live_children, parent_of_a_cluster, step_on, wait_gone

tf.compat.v1.disable_eager_execution()

OPERATION_TIMEOUT_S = 5.0
# A failing step must end within the operation timeout plus this much (RPC set-up, the
# session's own bookkeeping); a hang would blow far past it.
MARGIN_S = 10.0
REPO = Path(__file__).resolve().parents[1]


# -- helpers ------------------------------------------------------------------------------


def _wait_for(condition, timeout=10.0):
    """Poll ``condition()`` until true or ``timeout`` seconds; return its last value.
    (Signals are delivered asynchronously: a killed or stopped multi-threaded process
    takes a few milliseconds to get there.)"""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def _status(pid):
    try:
        return psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return None


def run_step(cluster, devices, value=3.0):
    """``step_on`` the cluster's chief, with the cluster's session config."""
    return step_on(cluster.target, devices, cluster.session_config(), value)


def _variable_graph(device, name):
    """A graph with one shared resource variable on ``device`` (default container)."""
    graph = tf.Graph()
    with graph.as_default():
        with tf.device(device):
            var = tf.compat.v1.get_variable(name, shape=[], initializer=tf.compat.v1.zeros_initializer())
        value = tf.compat.v1.placeholder(tf.float32, [])
        assign = var.assign(value)
        uninitialized = tf.compat.v1.report_uninitialized_variables()
    return graph, var, value, assign, uninitialized


def set_variable(cluster, device, name, number):
    graph, var, value, assign, _ = _variable_graph(device, name)
    with tf.compat.v1.Session(cluster.target, graph=graph, config=cluster.session_config()) as sess:
        sess.run(var.initializer)
        sess.run(assign, {value: number})


def read_variable(cluster, device, name):
    """(names of uninitialized variables, the value or None) seen by a new session."""
    graph, var, _, _, uninitialized = _variable_graph(device, name)
    with tf.compat.v1.Session(cluster.target, graph=graph, config=cluster.session_config()) as sess:
        missing = [n.decode() for n in sess.run(uninitialized)]
        if missing:
            with pytest.raises(tf.errors.FailedPreconditionError):
                sess.run(var)
            return missing, None
        return missing, float(sess.run(var))


def _expect_bounded_failure(cluster, devices):
    """A step on ``devices`` raises a TensorFlow OpError, and does so within the bound."""
    began = time.monotonic()
    with pytest.raises(tf.errors.OpError) as caught:
        run_step(cluster, devices)
    elapsed = time.monotonic() - began
    assert elapsed < cluster.operation_timeout_s + MARGIN_S, f"the failing step took {elapsed:.1f} s"
    return caught.value


@pytest.fixture(scope="module")
def cluster():
    """3 nodes, 1 simulated gpu each: 6 devices over 3 processes."""
    with LocalCluster(ResourceSpec.local(nodes=3, gpus_per_node=1), operation_timeout_s=OPERATION_TIMEOUT_S) as running:
        yield running


@pytest.fixture(scope="module")
def scratch_cluster():
    """A second, 2-node cluster with private scratch directories."""
    with LocalCluster(ResourceSpec.local(nodes=2), private_scratch=True,
                      operation_timeout_s=OPERATION_TIMEOUT_S) as running:
        yield running


# -- a healthy cluster --------------------------------------------------------------------


def test_a_step_runs_on_every_device(cluster):
    """One op per device of all_devices really runs there: right values, and the trace
    lists all 6 devices (2 per task, 3 tasks)."""
    assert cluster.healthy
    expected = [f"/job:worker/task:{t}/device:CPU:{p}" for t in range(3) for p in range(2)]
    assert cluster.all_devices == expected
    values, ran = run_step(cluster, cluster.all_devices, value=5.0)
    assert values == [11.0] * 6
    assert set(expected) <= ran, sorted(ran)


def test_descriptions_are_consistent(cluster):
    """describe(), cluster_def, cluster_spec, tf_config(), target_of(), pid() and
    log_file() agree; each node process listens on its own address:port and its log
    says it is serving there."""
    description = cluster.describe()
    cluster_def = cluster.cluster_def
    addresses = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    workers = cluster_def["worker"]
    assert list(cluster_def) == ["worker"]
    assert [w.rsplit(":", 1)[0] for w in workers] == addresses
    assert description["cluster"] == cluster_def
    assert tf.train.ClusterSpec(cluster.cluster_spec).as_dict() == cluster_def
    assert cluster.get_local_address() == cluster.spec.chief.address
    assert description["target"] == cluster.target == f"grpc://{workers[0]}"
    assert len(description["nodes"]) == 3
    for task, (entry, address) in enumerate(zip(description["nodes"], addresses)):
        port = int(workers[task].rsplit(":", 1)[1])
        assert entry["address"] == address
        assert entry["task"] == task
        assert entry["chief"] is (task == 0)
        assert entry["target"] == cluster.target_of(task) == cluster.target_of(address) == f"grpc://{address}:{port}"
        assert entry["pid"] == cluster.pid(task)
        assert entry["devices"] == {
            f"{address}:CPU:0": f"/job:worker/task:{task}/device:CPU:0",
            f"{address}:GPU:0": f"/job:worker/task:{task}/device:CPU:1",
        }
        assert list(entry["devices"].values()) == cluster.devices(task)
        assert entry["scratch_dir"] is None and cluster.scratch_dir(task) is None
        assert cluster.tf_config(task) == {"cluster": cluster_def, "task": {"type": "worker", "index": task}}
        assert cluster.tf_config(address) == cluster.tf_config(task)

        log = cluster.log_file(task)
        assert entry["log_file"] == str(log)
        assert log.is_file()
        text = log.read_text()
        assert "serving" in text
        assert f"worker:{task} serving at grpc://{address}:{port}" in text

        # The node's own process listens on its port (TensorFlow binds the wildcard
        # address, so accept that as well as the node's address).
        listening = {
            (c.laddr.ip, c.laddr.port)
            for c in psutil.Process(cluster.pid(task)).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN
        }
        assert listening & {(address, port), ("0.0.0.0", port), ("::", port)}, listening
    assert len({cluster.pid(t) for t in range(3)}) == 3
    assert len({str(cluster.log_file(t)) for t in range(3)}) == 3


def test_session_config_carries_the_timeout(cluster):
    """session_config() sets the operation timeout in ms, and overrides apply."""
    assert cluster.session_config().operation_timeout_in_ms == int(OPERATION_TIMEOUT_S * 1000)
    assert cluster.session_config(operation_timeout_in_ms=1234).operation_timeout_in_ms == 1234


# -- faults -------------------------------------------------------------------------------


def test_kill_fails_the_next_step_quickly_and_restart_brings_the_node_back(cluster):
    """kill(node): the process is gone, its variables with it; a step touching it
    raises an OpError within the timeout bound; restart(node) gives a new process on
    the same address and port that a new session runs a step on."""
    victim = 2
    device = cluster.devices(victim)[0]
    set_variable(cluster, device, "kill_probe", 13.0)
    assert read_variable(cluster, device, "kill_probe") == ([], 13.0)
    old_pid, old_target = cluster.pid(victim), cluster.target_of(victim)
    try:
        cluster.kill(victim)
        assert not cluster.is_alive(victim)
        assert not cluster.healthy
        assert gone(old_pid)
        error = _expect_bounded_failure(cluster, cluster.devices(victim))
        assert isinstance(error, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                                  tf.errors.AbortedError)), repr(error)
    finally:
        if not cluster.is_alive(victim):
            cluster.restart(victim)
    assert cluster.healthy
    assert cluster.pid(victim) != old_pid
    assert cluster.target_of(victim) == old_target
    values, ran = run_step(cluster, cluster.devices(victim) + cluster.devices(0))
    assert values == [7.0] * 4
    assert set(cluster.devices(victim)) <= ran
    # The restarted process is fresh: the variable it held is gone.
    assert read_variable(cluster, device, "kill_probe") == (["kill_probe"], None)


def test_pause_fails_steps_within_the_timeout_and_resume_keeps_state(cluster):
    """pause(node): a step touching it raises an OpError within the bound instead of
    hanging; resume(node): a new session works and the node kept its variables."""
    victim = 1
    device = cluster.devices(victim)[1]
    set_variable(cluster, device, "pause_probe", 21.0)
    pid = cluster.pid(victim)
    try:
        cluster.pause(victim)
        assert _wait_for(lambda: _status(pid) == psutil.STATUS_STOPPED)
        assert not cluster.healthy
        error = _expect_bounded_failure(cluster, [device])
        assert isinstance(error, (tf.errors.DeadlineExceededError, tf.errors.UnavailableError)), repr(error)
    finally:
        cluster.resume(victim)
    assert cluster.healthy
    assert cluster.pid(victim) == pid
    assert _wait_for(lambda: _status(pid) not in (psutil.STATUS_STOPPED, None))
    values, ran = run_step(cluster, [device])
    assert values == [7.0] and device in ran
    assert read_variable(cluster, device, "pause_probe") == ([], 21.0)


def test_reset_clears_variables(cluster):
    """A variable set in one session is visible to a new session (shared), and gone
    (uninitialized, reading it fails) after reset()."""
    device = cluster.devices(2)[1]
    set_variable(cluster, device, "reset_probe", 42.0)
    assert read_variable(cluster, device, "reset_probe") == ([], 42.0)
    cluster.reset()
    assert read_variable(cluster, device, "reset_probe") == (["reset_probe"], None)
    # the cluster still works after a reset
    values, _ = run_step(cluster, cluster.all_devices)
    assert values == [7.0] * 6


def test_reset_refuses_a_dead_or_paused_node_without_hanging(cluster):
    """reset() with a node killed behind the cluster's back, or paused, raises
    ClusterError at once instead of blocking in TensorFlow's reset."""
    victim = 1
    try:
        os.kill(cluster.pid(victim), signal.SIGKILL)  # not through cluster.kill
        assert _wait_for(lambda: not cluster.is_alive(victim)), "the cluster did not notice the kill"
        assert not cluster.healthy
        began = time.monotonic()
        with pytest.raises(ClusterError, match="dead or paused"):
            cluster.reset()
        assert time.monotonic() - began < cluster.operation_timeout_s
        cluster.restart(victim)
        cluster.pause(victim)
        with pytest.raises(ClusterError, match="dead or paused"):
            cluster.reset()
    finally:
        if not cluster.is_alive(victim):
            cluster.restart(victim)
        cluster.resume(victim)
    cluster.reset()
    assert run_step(cluster, cluster.devices(victim))[0] == [7.0, 7.0]


def test_reset_of_a_hung_node_is_bounded(cluster):
    """A node stopped behind the cluster's back (it looks healthy) makes reset() raise
    ClusterError after the operation timeout instead of blocking for ever."""
    victim = 2
    pid = cluster.pid(victim)
    os.kill(pid, signal.SIGSTOP)
    try:
        assert cluster.healthy  # the cluster cannot tell
        began = time.monotonic()
        with pytest.raises(ClusterError, match="did not finish"):
            cluster.reset()
        assert time.monotonic() - began < cluster.operation_timeout_s + MARGIN_S
    finally:
        os.kill(pid, signal.SIGCONT)
        # The abandoned reset call completes once the node answers; wait for it so it
        # cannot clear containers in the middle of a later test.
        for thread in threading.enumerate():
            if thread.name == "cluster-reset":
                thread.join(30)
    assert not any(t.name == "cluster-reset" for t in threading.enumerate())
    assert run_step(cluster, cluster.all_devices)[0] == [7.0] * 6


# -- several clusters, scratch directories ------------------------------------------------


def test_two_clusters_at_once_get_distinct_ports_and_both_run(cluster, scratch_cluster):
    """Two live clusters sharing 127.0.0.1 and 127.0.0.2 use different ports, and each
    runs a step on all of its own devices."""
    first = dict(w.rsplit(":", 1) for w in cluster.cluster_def["worker"])
    second = dict(w.rsplit(":", 1) for w in scratch_cluster.cluster_def["worker"])
    assert set(second) == {"127.0.0.1", "127.0.0.2"}
    for address in second:
        assert first[address] != second[address]
    assert cluster.target != scratch_cluster.target
    for running in (cluster, scratch_cluster):
        values, ran = run_step(running, running.all_devices)
        assert values == [7.0] * len(running.all_devices)
        assert set(running.all_devices) <= ran


def test_private_scratch_gives_each_node_its_own_directory(scratch_cluster):
    """private_scratch=True: each node has a distinct existing directory, is running in
    it, and a relative path written by an op on one node lands in that node's directory
    only (nodes share no working directory)."""
    dirs = [scratch_cluster.scratch_dir(t) for t in range(2)]
    assert all(d is not None and d.is_dir() for d in dirs)
    assert dirs[0] != dirs[1]
    assert not dirs[0].is_relative_to(dirs[1]) and not dirs[1].is_relative_to(dirs[0])
    assert [n["scratch_dir"] for n in scratch_cluster.describe()["nodes"]] == [str(d) for d in dirs]
    for task in range(2):
        assert Path(psutil.Process(scratch_cluster.pid(task)).cwd()) == dirs[task].resolve()

    graph = tf.Graph()
    with graph.as_default():
        contents = tf.compat.v1.placeholder(tf.string, [])
        with tf.device(scratch_cluster.devices(1)[0]):
            write = tf.io.write_file("marker.txt", contents)
        with tf.compat.v1.Session(scratch_cluster.target, graph=graph,
                                  config=scratch_cluster.session_config()) as sess:
            sess.run(write, {contents: b"written by task 1"})
    assert (dirs[1] / "marker.txt").read_bytes() == b"written by task 1"
    assert not (dirs[0] / "marker.txt").exists()
    assert not (Path.cwd() / "marker.txt").exists()


# -- teardown -----------------------------------------------------------------------------


def test_close_stops_every_node_and_releases_ports_and_dirs():
    """close(): every node pid is gone, the temporary log and scratch directories are
    removed, and the ports' reservations can be taken again."""
    running = LocalCluster(ResourceSpec.local(nodes=2), private_scratch=True).start()
    pids = [running.pid(t) for t in range(2)]
    logs = [running.log_file(t) for t in range(2)]
    scratch = [running.scratch_dir(t) for t in range(2)]
    ports = [w.rsplit(":", 1) for w in running.cluster_def["worker"]]
    assert not any(gone(p) for p in pids)
    running.close()
    assert all(gone(p) for p in pids)
    assert not any(p.exists() for p in logs)
    assert not any(s.exists() for s in scratch)
    for _address, port in ports:
        fd = os.open(LOCK_DIR / f"{port}.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if still reserved
        finally:
            os.close(fd)
    running.close()  # idempotent
    with pytest.raises(ClusterError, match="closed"):
        running.start()


@pytest.mark.parametrize("cycles", [3, pytest.param(20, marks=pytest.mark.slow)])
def test_start_stop_cycles_leave_no_process(cycles):
    """Start/close cycles of a 1-node cluster: each node is gone after close, and this
    process has no more children at the end than at the start. (20 cycles opt-in.)"""
    me = psutil.Process()
    children_before = live_children(me)
    pids = []
    for _ in range(cycles):
        with LocalCluster(ResourceSpec.local(nodes=1)) as running:
            pid = running.pid(0)
            assert not gone(pid)
            pids.append(pid)
        assert gone(pid)
    assert len(set(pids)) == cycles
    leftover = live_children(me) - children_before
    assert not leftover, [psutil.Process(p).cmdline() for p in leftover if not gone(p)]


PARENT_SCRIPT = textwrap.dedent("""
    import json, time
    from cluster_sim import LocalCluster, ResourceSpec
    cluster = LocalCluster(ResourceSpec.local(nodes=2)).start()
    print(json.dumps([cluster.pid(0), cluster.pid(1)]), flush=True)
    time.sleep(600)
""")


def test_sigkill_of_the_parent_takes_the_nodes_down(tmp_path):
    """kill -9 of the process that started a cluster: its node processes die too
    (PR_SET_PDEATHSIG), within 10 s."""
    with parent_of_a_cluster(PARENT_SCRIPT, tmp_path, REPO) as (parent, pids):
        assert len(pids) == 2 and not any(gone(p) for p in pids)
        assert all(psutil.Process(p).ppid() == parent.pid for p in pids)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        assert wait_gone(pids, timeout=10), [p for p in pids if not gone(p)]


# -- ports ---------------------------------------------------------------------------------


def test_nodes_on_different_addresses_never_share_a_port(monkeypatch):
    """A TensorFlow server listens on every interface, so when the random draw gives two
    nodes of different addresses the same port, the second must get another one (this
    once made a 2-node start fail whenever the draws collided)."""
    real_randint = ports.random.randint
    draws = iter([26170, 26170])
    monkeypatch.setattr(ports.random, "randint", lambda a, b: next(draws, None) or real_randint(a, b))
    first = reserve_port("127.0.0.1")
    second = reserve_port("127.0.0.2")
    try:
        assert first.port != second.port
        assert (LOCK_DIR / f"{second.port}.lock").read_text() == "127.0.0.2"
    finally:
        first.release()
        second.release()


# -- a node that cannot start -------------------------------------------------------------

THIEF_ADDRESS = "127.0.0.77"  # used by no other test, so no other cluster's port is taken


class _PortThief:
    """Binds every port that a cluster reserves on THIEF_ADDRESS as soon as it is
    reserved, before the node's server (seconds away, importing TensorFlow) binds it:
    another program taking the port, the failure start()'s retries are for."""

    def __init__(self):
        self.sockets = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        for sock in self.sockets.values():
            sock.close()

    def _run(self):
        while not self._stop.is_set():
            for lock in LOCK_DIR.glob("*.lock"):
                if not lock.stem.isdigit():  # not a port reservation
                    continue
                port = int(lock.stem)
                if port in self.sockets or not self._reserved(lock) or not self._for_thief_address(lock):
                    continue
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.bind((THIEF_ADDRESS, port))
                    sock.listen()
                    self.sockets[port] = sock
                except OSError:
                    sock.close()
            time.sleep(0.005)

    @staticmethod
    def _for_thief_address(lock):
        """A reservation's lock file holds the address of the node it is for."""
        try:
            return lock.read_text() == THIEF_ADDRESS
        except OSError:
            return False

    @staticmethod
    def _reserved(lock):
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except OSError as err:
            return err.errno in (errno.EAGAIN, errno.EACCES)
        finally:
            os.close(fd)  # also drops the lock if we took it


def test_a_node_that_cannot_start_raises_cluster_error_with_its_log(tmp_path):
    """Node 1's port is taken before its server binds it, on every attempt: start()
    raises ClusterError naming node 1 and its address, quoting the server's error and
    the tail of the node's log; no node process is left behind."""
    spec = ResourceSpec.from_dict({"nodes": [
        {"address": "127.0.0.1", "chief": True},
        {"address": THIEF_ADDRESS},
    ]})
    running = LocalCluster(spec, log_dir=tmp_path / "logs")
    children_before = live_children(psutil.Process())
    with _PortThief() as thief:
        with pytest.raises(ClusterError) as caught:
            running.start()
    message = str(caught.value)
    log = tmp_path / "logs" / f"node1-{THIEF_ADDRESS}.log"
    assert len(thief.sockets) >= 3  # one stolen port per attempt
    assert message.startswith(f"node 1 ({THIEF_ADDRESS}) failed to start"), message
    assert "Could not start gRPC server" in message
    assert f"--- last lines of {log} ---" in message
    tail = message.split(f"--- last lines of {log} ---\n", 1)[1]
    assert tail.strip() and tail.strip().splitlines()[-1] in log.read_text()
    leftover = live_children(psutil.Process()) - children_before
    assert not leftover


def test_a_node_too_slow_to_start_raises_cluster_error(tmp_path):
    """startup_timeout_s shorter than a node's start: ClusterError naming the node and
    its log file, and the started processes are stopped."""
    running = LocalCluster(ResourceSpec.local(nodes=1), log_dir=tmp_path, startup_timeout_s=0.5)
    children_before = live_children(psutil.Process())
    with pytest.raises(ClusterError) as caught:
        running.start()
    message = str(caught.value)
    assert message.startswith("node 0 (127.0.0.1) did not start within"), message
    assert f"--- last lines of {tmp_path / 'node0-127.0.0.1.log'} ---" in message
    leftover = live_children(psutil.Process()) - children_before
    assert not leftover
