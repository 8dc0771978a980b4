"""Hosts and exits (issue 13, items 4 and 5): missing nodes named in seconds, prompt exits,
no orphaned command, no temporary directory left behind.

* Creating a session on servers of which some are not there fails within the documented
  bound (a TCP connection each, then an op each through the chief: 5 s), naming them;
  TensorFlow alone waits for the operation timeout and says ``Deadline Exceeded``.
* A step whose chief node was killed fails within about 1.5 s naming the chief, where
  TensorFlow waits for the operation timeout (the client's calls to the chief's master
  wait for it and are retried until the deadline).
* A program that never calls ``ad.close()`` exits in seconds even when a node of its
  embedded cluster is dead or paused (closing its session through them would wait for
  the operation timeout).
* ``cluster-sim run`` passes SIGTERM on to its command and waits for it; SIGKILL of the
  run kills the command too; neither leaves a process behind.
* Interrupted runs leave no ``cluster_sim-*`` or ``autodist-verify-*`` directory in the
  temporary directory: SIGTERM removes them; after SIGKILL the next start removes them.

Every process is started on loopback addresses only and killed in a ``finally``. The
temporary directory of the processes that matter here is the test's own ``$TMPDIR``, so
other programs' directories on this machine do not count. Timings are printed (``-s``).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import tensorflow as tf

from autodist_verify import model_graph, model_spec
from cluster_sim import ResourceSpec
from cluster_sim.ports import reserve_port
from saver_impl import AutoDist
from saver_impl.strategy import PS
from tests.cluster_helpers import gone, live_children, wait_gone
from tests.specs import SGD_SPEC
from tests.test_conformance_cli import case_file

tf.compat.v1.disable_eager_execution()

REPO = Path(__file__).resolve().parents[1]
# The documented bounds (saver_impl/autodist.py, cluster_sim/reachability.py), and a margin for
# a loaded two-core machine; every operation timeout below is far above bound + margin.
SESSION_CHECK_BOUND_S = 5.0
CHIEF_BOUND_S = 1.5
MARGIN_S = 5.0
EXIT_BOUND_S = 10.0  # "a few seconds": about 1 s measured on an idle machine, 3 s under load
OPERATION_TIMEOUT_S = 30.0
START_TIMEOUT_S = 120.0


def _wait_for_port(host: str, port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        time.sleep(0.2)
    raise AssertionError(f"no server at {host}:{port} after {START_TIMEOUT_S:g} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def served_nodes(tmp_path: Path, addresses: list[str],
                 serve: list[str]) -> Iterator[tuple[Path, dict[str, subprocess.Popen]]]:
    """A spec of ``addresses`` (the first the chief), each with a port of its own, and a
    ``cluster-sim node`` serving each address of ``serve``; yields the spec's path and
    the server processes by address."""
    reservations = [reserve_port(address) for address in addresses]  # no cluster takes them meanwhile
    spec = tmp_path / "hosts.yml"
    lines = ["nodes:"]
    for i, (address, reservation) in enumerate(zip(addresses, reservations)):
        lines.append(f"  - {{address: {address}, port: {reservation.port}{', chief: true' if i == 0 else ''}}}")
    spec.write_text("\n".join(lines) + "\n")
    processes: dict[str, subprocess.Popen] = {}
    try:
        for address, reservation in zip(addresses, reservations):
            if address in serve:
                log = tmp_path / f"node-{address}.log"
                processes[address] = subprocess.Popen(
                    [sys.executable, "-m", "cluster_sim", "node", str(spec), "--address", address],
                    cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
                _wait_for_port(address, reservation.port, processes[address], log)
        yield spec, processes
    finally:
        for process in processes.values():
            process.kill()  # works on a stopped process too
            process.wait(timeout=10)
        for reservation in reservations:
            reservation.release()


# -- session creation -----------------------------------------------------------------------

SCENARIOS = {  # addresses of the spec, those served, those paused, those the error must name
    "a-worker-down": (["127.0.0.1", "127.0.0.2", "127.0.0.3"], ["127.0.0.1", "127.0.0.2"], [], ["127.0.0.3"]),
    "all-down": (["127.0.0.1", "127.0.0.2", "127.0.0.3"], [], [], ["127.0.0.1", "127.0.0.2", "127.0.0.3"]),
    "a-worker-paused": (["127.0.0.1", "127.0.0.2"], ["127.0.0.1", "127.0.0.2"], ["127.0.0.2"], ["127.0.0.2"]),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_session_creation_names_the_nodes_not_there_within_the_bound(tmp_path, scenario):
    """`cluster-sim node` servers for some nodes of a loopback spec, none (or a stopped
    one) for the others: creating the session fails within the bound, naming exactly the
    nodes not there and how to start them. (Today: DeadlineExceededError after the
    operation timeout, no node named; and a loopback spec always started an embedded
    cluster: there was no way to connect to `cluster-sim node` servers on loopback.)"""
    addresses, serve, pause, missing = SCENARIOS[scenario]
    with served_nodes(tmp_path, addresses, serve) as (spec, servers):
        for address in pause:
            servers[address].send_signal(signal.SIGSTOP)
        ad = AutoDist(resource_spec_file=str(spec), strategy_builder=PS(), real_hosts=True,
                      operation_timeout_s=OPERATION_TIMEOUT_S)
        try:
            graph = tf.Graph()
            with graph.as_default(), ad.scope():
                model_graph.build(SGD_SPEC)
                began = time.monotonic()
                with pytest.raises(tf.errors.UnavailableError) as raised:
                    ad.create_distributed_session()
                elapsed = time.monotonic() - began
        finally:
            ad.close()
    print(f"\nsession creation ({scenario}) failed in {elapsed:.3f} s")
    assert elapsed < SESSION_CHECK_BOUND_S + MARGIN_S
    message = raised.value.message
    for address in addresses:
        assert (f"{address} (task" in message) == (address in missing), message
        assert (f"--address {address}`" in message) == (address in missing), message
    assert "cluster-sim node" in message and str(spec) in message
    if pause:
        assert "did not run an op for the chief within 3 s" in message


def test_a_client_connects_to_loopback_servers_with_real_hosts(tmp_path):
    """With every node served by `cluster-sim node`, real_hosts=True trains on those
    servers (no embedded cluster), and the nodes' check passes."""
    addresses = ["127.0.0.1", "127.0.0.2"]
    with served_nodes(tmp_path, addresses, addresses) as (spec, servers):
        ad = AutoDist(resource_spec_file=str(spec), strategy_builder=PS(), real_hosts=True)
        try:
            graph = tf.Graph()
            with graph.as_default(), ad.scope():
                model = model_graph.build(SGD_SPEC)
                sess = ad.create_distributed_session()
                sess.run(model.train_op, model_graph.feed_dict(graph, model_spec.feeds(SGD_SPEC, 1, 4, 0)[0]))
            assert ad.cluster is None
            assert sess.sess_str.endswith(f":{_port_of(spec, 0)}")
        finally:
            ad.close()


def _port_of(spec: Path, task: int) -> int:
    """The port the spec gives task ``task``."""
    return ResourceSpec.from_file(spec, simulate=False).nodes[task].port


def test_session_creation_on_a_given_cluster_names_a_dead_node_at_once(cluster_pool):
    """A given simulated cluster whose node was killed: the session fails at once naming
    that node and what to do; it works again once the node is restarted. (Today: the
    operation timeout, then DeadlineExceededError naming nothing.)"""
    cluster = cluster_pool.get(ResourceSpec.local(nodes=2).to_dict())
    graph = tf.Graph()
    with graph.as_default():
        ad = AutoDist(cluster=cluster, strategy_builder=PS(), operation_timeout_s=OPERATION_TIMEOUT_S)
        with ad.scope():
            model_graph.build(SGD_SPEC)
    try:
        cluster.kill(1)
        began = time.monotonic()
        with pytest.raises(tf.errors.UnavailableError) as raised:
            ad.create_distributed_session()
        assert time.monotonic() - began < MARGIN_S
        assert "127.0.0.2 (task 1" in raised.value.message and "its process is gone" in raised.value.message
        assert "127.0.0.1 (task 0" not in raised.value.message
        assert "LocalCluster.restart" in raised.value.message
        cluster.restart(1)
        with graph.as_default():
            ad.create_distributed_session()
    finally:
        ad.close()
        if not cluster.is_alive(1):
            cluster.restart(1)


# -- a dead chief ---------------------------------------------------------------------------

def test_a_killed_chief_fails_the_next_step_within_the_bound_naming_it():
    """Kill the chief node of an embedded cluster after a step: the next step raises
    UnavailableError naming the chief within about 1.5 s (today: DeadlineExceededError
    after the whole operation timeout), and closing does not wait either."""
    ad = AutoDist(resource_spec=ResourceSpec.local(nodes=2), strategy_builder=PS(),
                  operation_timeout_s=OPERATION_TIMEOUT_S)
    try:
        graph = tf.Graph()
        with graph.as_default(), ad.scope():
            model = model_graph.build(SGD_SPEC)
            feed = model_graph.feed_dict(graph, model_spec.feeds(SGD_SPEC, 1, 4, 0)[0])
            sess = ad.create_distributed_session()
            sess.run(model.train_op, feed)
            chief = ad.cluster.target_of(0).split("://")[1]
            ad.cluster.kill(0)
            began = time.monotonic()
            with pytest.raises(tf.errors.UnavailableError) as raised:
                sess.run(model.train_op, feed)
            elapsed = time.monotonic() - began
        print(f"\nthe step after the chief's kill failed in {elapsed:.3f} s")
        assert elapsed < CHIEF_BOUND_S + MARGIN_S
        assert f"chief node's server at {chief}" in raised.value.message
        began = time.monotonic()
        ad.close()
        assert time.monotonic() - began < MARGIN_S
    finally:
        ad.close()


# -- exits without ad.close() ---------------------------------------------------------------

PROGRAM = textwrap.dedent("""
    import sys, time
    import tensorflow as tf
    from autodist_verify import model_graph, model_spec
    from cluster_sim import ResourceSpec
    from saver_impl import AutoDist
    from saver_impl.strategy import PS
    from tests.specs import SGD_SPEC

    tf.compat.v1.disable_eager_execution()
    ad = AutoDist(resource_spec=ResourceSpec.local(nodes=2), strategy_builder=PS(), operation_timeout_s=30)
    with tf.Graph().as_default() as graph, ad.scope():
        model = model_graph.build(SGD_SPEC)
        sess = ad.create_distributed_session()
        sess.run(model.train_op, model_graph.feed_dict(graph, model_spec.feeds(SGD_SPEC, 1, 4, 0)[0]))
    fault = sys.argv[1]
    if fault == "kill-chief":
        ad.cluster.kill(0)
    elif fault == "pause-worker":
        ad.cluster.pause(1)
    print("done", time.time(), flush=True)
""")


@pytest.mark.parametrize("fault", ["none", "kill-chief", "pause-worker"])
def test_a_program_without_close_exits_promptly(tmp_path, fault):
    """A program that never calls ad.close() exits within a few seconds of its last line,
    also when its embedded cluster's chief is dead or a node is paused (today, in those two
    cases: after the operation timeout, 30 s here, with a warning); no node outlives it."""
    process = subprocess.Popen([sys.executable, "-c", PROGRAM, fault], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=open(tmp_path / "stderr.txt", "wb"), text=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT_S)
        line = process.stdout.readline() if ready else ""
        assert line.startswith("done"), (tmp_path / "stderr.txt").read_text()[-3000:]
        nodes = live_children(psutil.Process(process.pid))
        process.wait(timeout=OPERATION_TIMEOUT_S + 30)
        exit_s = time.time() - float(line.split()[1])
        print(f"\nexit without ad.close() ({fault}): {exit_s:.2f} s after the last line")
        assert process.returncode == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
        assert exit_s < EXIT_BOUND_S
        assert wait_gone(nodes)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        process.stdout.close()


# -- cluster-sim run and signals ------------------------------------------------------------

COMMAND = textwrap.dedent("""
    import os, signal, sys, time
    marker = sys.argv[1]

    def on_signal(signum, frame):
        open(marker, "w").write(f"got {signal.Signals(signum).name}")
        sys.exit(7)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(os.getpid(), flush=True)
    time.sleep(600)
""")

ONE_NODE = "nodes:\n  - address: 127.0.0.1\n    chief: true\n"


def _leftovers(tmpdir: Path) -> list[str]:
    """This project's temporary directories in ``tmpdir`` (the port locks are meant to stay)."""
    return sorted(p.name for p in tmpdir.iterdir()
                  if p.name.startswith(("cluster_sim-", "autodist-verify-")) and p.name != "cluster_sim-ports")


@pytest.fixture
def tmpdir_env(tmp_path) -> tuple[Path, dict[str, str]]:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    return tmpdir, {**os.environ, "TMPDIR": str(tmpdir)}


@contextlib.contextmanager
def running(tmp_path: Path, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen, int, list[int]]]:
    """``cluster-sim run`` of a one-node spec around COMMAND; yields (the run, the
    command's pid, every pid of the run's tree) once the command is up. Whatever of the
    tree is still alive at the end is killed."""
    spec = tmp_path / "spec.yml"
    spec.write_text(ONE_NODE)
    run = subprocess.Popen([sys.executable, "-m", "cluster_sim", "run", str(spec), "--",
                            sys.executable, "-c", COMMAND, str(tmp_path / "marker")],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=open(tmp_path / "run.txt", "wb"))
    tree = [run.pid]
    try:
        ready, _, _ = select.select([run.stdout], [], [], START_TIMEOUT_S)
        line = run.stdout.readline() if ready else b""
        assert line.strip().isdigit(), (tmp_path / "run.txt").read_text()[-3000:]
        command = int(line)
        tree += live_children(psutil.Process(run.pid))
        assert command in tree
        yield run, command, tree
    finally:
        for pid in tree:
            if not gone(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        run.wait(timeout=10)
        run.stdout.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_forwards_the_signal_waits_for_the_command_and_leaves_nothing(tmp_path, tmpdir_env, signum):
    """SIGTERM (or SIGINT, sent with kill: no terminal) to `cluster-sim run`: the command
    gets it (its handler runs and exits 7), the run exits with the command's code, and no
    process or temporary directory is left. (Today, for SIGTERM: the run dies at once,
    the command keeps running with ppid 1; for SIGINT the run stops the cluster and
    exits 130 without waiting for the command, which never gets the signal.)"""
    tmpdir, env = tmpdir_env
    with running(tmp_path, env) as (run, command, tree):
        assert _leftovers(tmpdir), "the run keeps its node logs in the temporary directory"
        run.send_signal(signum)
        assert run.wait(timeout=60) == 7, (tmp_path / "run.txt").read_text()[-3000:]
        assert (tmp_path / "marker").read_text() == f"got {signal.Signals(signum).name}"
        assert wait_gone(tree), [p for p in tree if not gone(p)]
    assert _leftovers(tmpdir) == []


def test_sigkill_of_run_kills_the_command_and_the_next_start_removes_its_directories(tmp_path, tmpdir_env):
    """SIGKILL to `cluster-sim run` (nothing can be cleaned up then): the command dies with
    it, and so do the nodes; the directories the run left are removed by the next start
    of a cluster, as their owner is gone. A directory of a live owner is kept. (Today:
    the command survives with ppid 1, and the directories stay for ever.)"""
    tmpdir, env = tmpdir_env
    with running(tmp_path, env) as (run, command, tree):
        run.kill()
        run.wait(timeout=10)
        assert wait_gone(tree), f"still alive: {[p for p in tree if not gone(p)]} (command {command})"
    left = _leftovers(tmpdir)
    assert left, "SIGKILL leaves the run's directories behind"
    live = tmpdir / f"cluster_sim-logs-pid{os.getpid()}-keepme"
    live.mkdir()
    (tmp_path / "true.yml").write_text(ONE_NODE)
    done = subprocess.run([sys.executable, "-m", "cluster_sim", "run", str(tmp_path / "true.yml"), "--",
                           sys.executable, "-c", "pass"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=START_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _leftovers(tmpdir) == [live.name]


CLIENT = textwrap.dedent("""
    import time
    import tensorflow as tf
    from autodist_verify import model_graph, model_spec
    from cluster_sim import ResourceSpec
    from saver_impl import AutoDist
    from saver_impl.strategy import PS
    from tests.specs import SGD_SPEC

    tf.compat.v1.disable_eager_execution()
    ad = AutoDist(resource_spec=ResourceSpec.local(nodes=2), strategy_builder=PS())
    with tf.Graph().as_default() as graph, ad.scope():
        model = model_graph.build(SGD_SPEC)
        sess = ad.create_distributed_session()
        sess.run(model.train_op, model_graph.feed_dict(graph, model_spec.feeds(SGD_SPEC, 1, 4, 0)[0]))
    print("trained", flush=True)
    time.sleep(600)
""")


def test_sigterm_of_a_client_leaves_no_temporary_directory(tmp_path, tmpdir_env):
    """SIGTERM to a training program with an embedded cluster: it still ends as SIGTERM
    ends a process (status -15), its nodes die with it, and its node-log directory is
    gone. (Today: the directory stays.)"""
    tmpdir, env = tmpdir_env
    client = subprocess.Popen([sys.executable, "-c", CLIENT], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=open(tmp_path / "stderr.txt", "wb"), text=True)
    try:
        ready, _, _ = select.select([client.stdout], [], [], START_TIMEOUT_S)
        assert ready and client.stdout.readline().strip() == "trained", (tmp_path / "stderr.txt").read_text()
        nodes = live_children(psutil.Process(client.pid))
        assert _leftovers(tmpdir)
        client.send_signal(signal.SIGTERM)
        assert client.wait(timeout=30) == -signal.SIGTERM
        assert wait_gone(nodes)
        assert _leftovers(tmpdir) == []
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=10)
        client.stdout.close()


def test_sigterm_of_a_conformance_replay_leaves_no_temporary_directory(tmp_path, tmpdir_env):
    """SIGTERM to `autodist-verify replay` while a property runs in its scratch
    directory: no `autodist-verify-*` (nor `cluster_sim-*`) directory is left, and no
    process of the replay outlives it. (Today: the property's scratch directory stays.)"""
    tmpdir, env = tmpdir_env
    replay = subprocess.Popen([sys.executable, "-m", "autodist_verify", "replay", str(case_file(tmp_path))],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / "stderr.txt", "wb"))
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not any(name.startswith("autodist-verify-") for name in _leftovers(tmpdir)):
            assert replay.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr.txt").read_text()
            time.sleep(0.05)
        tree = [replay.pid, *live_children(psutil.Process(replay.pid))]
        replay.send_signal(signal.SIGTERM)
        assert replay.wait(timeout=30) == -signal.SIGTERM
        assert wait_gone(tree, timeout=60), [p for p in tree if not gone(p)]
        assert _leftovers(tmpdir) == []
    finally:
        if replay.poll() is None:
            replay.kill()
            replay.wait(timeout=10)
