"""The ``cluster-sim`` command line, run as a real subprocess (``python -m cluster_sim``).

``check`` validates specs (exit 2 on a bad one), ``run`` starts a real cluster around
a command and exits with the command's code, ``up`` serves a cluster until SIGINT or
SIGTERM, ``node`` serves one node of a real-hosts spec.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
import tensorflow as tf

from cluster_sim.determinism import session_config
from tests.cluster_helpers import free_port, gone, read_until, step_on, wait_gone

tf.compat.v1.disable_eager_execution()

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "cluster_sim"]
STEP_CONFIG = session_config(operation_timeout_in_ms=20000)
START_TIMEOUT_S = 120  # generous bound for a cluster start on a loaded 2-core machine

TWO_NODES = """\
nodes:
  - address: 127.0.0.2
    cpus: [0]
  - address: 127.0.0.1
    gpus: [0, 1]
    chief: true
"""


def cli(*args, timeout=60, **kwargs):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, **kwargs)


def _write(tmp_path, text, name="spec.yml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _stop(process):
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


# -- check --------------------------------------------------------------------------------


def test_check_prints_tasks_replicas_and_parameter_servers(tmp_path):
    """check on a good spec exits 0 and lists the tasks (chief first), the replicas
    (the chief's two gpus, the gpu-less node's cpu) and the PS devices (the CPUs)."""
    path = _write(tmp_path, TWO_NODES)
    result = cli("check", str(path))
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert result.stdout.splitlines()[0] == f"{path}: valid, 2 node(s)"
    assert lines[1:3] == [["task", "0:", "127.0.0.1", "(chief)"], ["task", "1:", "127.0.0.2"]]
    replicas_at = lines.index(["replicas:"])
    ps_at = lines.index(["parameter", "servers:"])
    assert lines[replicas_at + 1:ps_at] == [
        ["127.0.0.1:GPU:0", "/job:worker/task:0/device:CPU:1"],
        ["127.0.0.1:GPU:1", "/job:worker/task:0/device:CPU:2"],
        ["127.0.0.2:CPU:0", "/job:worker/task:1/device:CPU:0"],
    ]
    assert lines[ps_at + 1:] == [
        ["127.0.0.1:CPU:0", "/job:worker/task:0/device:CPU:0"],
        ["127.0.0.2:CPU:0", "/job:worker/task:1/device:CPU:0"],
    ]


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("nodes:\n  - address: 127.0.0.1\n    chief: true\n  - address: 127.0.0.2\n    gpus: 0\n",
         ["node 1 (127.0.0.2)", "field 'gpus'"]),
        ("nodes:\n  - address: 127.0.0.1\n  - address: 127.0.0.2\n", ["'chief: true'"]),
        ("nodes:\n  - address: 127.0.0.1\n    gpus: [0\n", ["YAML syntax error at line"]),
    ],
    ids=["gpus-not-a-list", "no-chief", "yaml-syntax"],
)
def test_check_bad_spec_exits_2_naming_file_and_field(tmp_path, text, fragments):
    """check on a bad spec exits 2; stderr names the file and the field, stdout is empty."""
    path = _write(tmp_path, text)
    result = cli("check", str(path))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"{path}: " in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert result.stdout == ""


def test_check_missing_file_exits_2(tmp_path):
    """A spec path that does not exist: exit 2, the message names the path."""
    path = tmp_path / "absent.yml"
    result = cli("check", str(path))
    assert result.returncode == 2
    assert f"{path}: cannot read the resource spec" in result.stderr


def test_check_real_hosts_allows_routable_addresses(tmp_path):
    """A spec of real hosts fails check (exit 2, 'loopback') and passes with --real-hosts."""
    path = _write(tmp_path, "nodes:\n  - address: 10.0.0.1\n    chief: true\n  - address: 10.0.0.2\n")
    simulated = cli("check", str(path))
    assert simulated.returncode == 2
    assert "node 0 (10.0.0.1): field 'address' is not a loopback address" in simulated.stderr
    real = cli("check", "--real-hosts", str(path))
    assert real.returncode == 0, real.stderr
    assert "task 1: 10.0.0.2" in real.stdout


@pytest.mark.parametrize("real_hosts", [[], ["--real-hosts"]], ids=["simulated", "real-hosts"])
def test_check_refuses_an_address_with_a_port_naming_the_node(tmp_path, real_hosts):
    """address: HOST:PORT is refused (exit 2) with or without --real-hosts, naming the node
    and the 'port' field, not called "not a loopback address"."""
    path = _write(tmp_path, "nodes:\n  - address: 127.0.0.1:15000\n    chief: true\n")
    result = cli("check", *real_hosts, str(path))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert (f"{path}: node 0 (127.0.0.1:15000): field 'address' includes a port; give the host alone and the "
            "port in the node's own field: 'address: 127.0.0.1' and 'port: 15000'") in result.stderr
    assert "loopback" not in result.stderr and result.stdout == ""


def test_check_prints_the_ports_a_spec_gives(tmp_path):
    path = _write(tmp_path, "nodes:\n  - {address: 127.0.0.1, chief: true, port: 15001}\n  - address: 127.0.0.2\n")
    result = cli("check", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:3] == ["  task 0: 127.0.0.1 (chief) port 15001", "  task 1: 127.0.0.2"]


def test_check_warns_how_many_processes_a_large_spec_starts(tmp_path):
    """A 100-node spec is valid, with a warning naming the 100 server processes a
    simulated cluster of it starts; a real-hosts check (one process per host) has none."""
    path = _write(tmp_path, "nodes:\n" + "".join(
        f"  - address: 127.0.0.{i + 1}\n" + ("    chief: true\n" if i == 0 else "") for i in range(100)))
    result = cli("check", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{path}: valid, 100 node(s)")
    assert (f"warning: {path}: 100 nodes: a simulated cluster of this spec starts 100 TensorFlow server "
            "processes on this machine") in result.stderr
    real = cli("check", "--real-hosts", str(path))
    assert real.returncode == 0 and "warning" not in real.stderr


@pytest.mark.parametrize("command", [[], ["check"], ["up"], ["run"], ["node"]], ids=lambda c: c[0] if c else "main")
def test_help_of_every_command(command):
    """--help of the group and of each command exits 0 with a usage line."""
    result = cli(*command, "--help", timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: cluster-sim")
    if command:
        assert f"cluster-sim {command[0]}" in result.stdout.splitlines()[0]
    else:
        assert all(name in result.stdout for name in ("check", "up", "run", "node"))


# -- run ----------------------------------------------------------------------------------

COMMAND = textwrap.dedent("""
    import json, os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf.compat.v1.disable_eager_execution()
    target = os.environ["CLUSTER_SIM_TARGET"]
    cluster = json.loads(os.environ["CLUSTER_SIM_CLUSTER"])
    devices = [d for node in cluster["nodes"] for d in node["devices"].values()]
    x = tf.compat.v1.placeholder(tf.float32, [])
    outputs = []
    for device in devices:
        with tf.device(device):
            outputs.append(x * 3.0)
    options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
    metadata = tf.compat.v1.RunMetadata()
    with tf.compat.v1.Session(target) as sess:
        values = sess.run(outputs, {x: 2.0}, options=options, run_metadata=metadata)
    print(json.dumps({
        "target": target,
        "cluster": cluster,
        "tf_config": json.loads(os.environ["TF_CONFIG"]),
        "spec": os.environ["CLUSTER_SIM_SPEC"],
        "devices": devices,
        "values": [float(v) for v in values],
        "ran": sorted({d.device.replace("/replica:0", "") for d in metadata.step_stats.dev_stats}),
    }))
    sys.exit(int(sys.argv[1]))
""")


def test_run_gives_the_command_the_cluster_and_exits_with_its_code(tmp_path):
    """run SPEC -- CMD: CMD sees CLUSTER_SIM_TARGET/CLUSTER/SPEC and the chief's
    TF_CONFIG, runs a step on every device of the cluster, and run exits with CMD's
    code (3 here; test_example_hello_cluster_runs has a command that exits 0); the nodes
    are gone afterwards."""
    code = 3
    path = _write(tmp_path, TWO_NODES)
    result = cli("run", str(path), "--", sys.executable, "-c", COMMAND, str(code), timeout=START_TIMEOUT_S)
    assert result.returncode == code, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    cluster = seen["cluster"]
    workers = cluster["cluster"]["worker"]
    assert [w.rsplit(":", 1)[0] for w in workers] == ["127.0.0.1", "127.0.0.2"]
    assert seen["target"] == cluster["target"] == f"grpc://{workers[0]}"
    assert seen["tf_config"] == {"cluster": cluster["cluster"], "task": {"type": "worker", "index": 0}}
    assert seen["spec"] == str(path.resolve())
    expected = [f"/job:worker/task:0/device:CPU:{p}" for p in range(3)] + ["/job:worker/task:1/device:CPU:0"]
    assert seen["devices"] == expected
    assert seen["values"] == [6.0] * 4
    assert set(expected) <= set(seen["ran"])
    assert wait_gone([node["pid"] for node in cluster["nodes"]])


def test_run_missing_command_exits_127(tmp_path):
    """run with a command binary that does not exist exits 127 and says so."""
    path = _write(tmp_path, "nodes:\n  - address: 127.0.0.1\n")
    result = cli("run", str(path), "--", "no-such-binary-cluster-sim-test", timeout=START_TIMEOUT_S)
    assert result.returncode == 127, result.stderr[-3000:]
    assert "command not found: no-such-binary-cluster-sim-test" in result.stderr


def test_run_bad_spec_exits_2_without_starting(tmp_path):
    """run on an invalid spec exits 2 with the spec error, and never runs the command."""
    path = _write(tmp_path, "nodes:\n  - address: 127.0.0.1\n    gpu: [0]\n")
    marker = tmp_path / "ran"
    result = cli("run", str(path), "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')")
    assert result.returncode == 2
    assert f"{path}: node 0 (127.0.0.1): unknown field 'gpu'" in result.stderr
    assert not marker.exists()


def test_example_hello_cluster_runs(tmp_path):
    """examples/hello_cluster.py on examples/two_nodes.yml through run: exit 0, the sum
    is right and none of the 5 devices is idle."""
    result = cli("run", "examples/two_nodes.yml", "--", sys.executable, "examples/hello_cluster.py",
                 timeout=START_TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "sum over 5 devices: 12497500.0 (expected 12497500.0)" in result.stdout
    assert result.stdout.count("  ran ") == 5
    assert "IDLE" not in result.stdout


# -- up -----------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_up_prints_the_cluster_serves_it_and_stops_on_signal(tmp_path, signum):
    """up prints the cluster as JSON on stdout; a session on its target runs a step on
    every listed device; SIGINT/SIGTERM ends it with exit 0 and no node left."""
    path = _write(tmp_path, TWO_NODES)
    stderr = open(tmp_path / "up-stderr.txt", "wb")  # read back if `up` does not stop
    process = subprocess.Popen([*CLI, "up", str(path), "--log-dir", str(tmp_path / "logs")],
                               stdout=subprocess.PIPE, stderr=stderr, bufsize=0, cwd=REPO)
    try:
        text = read_until(process.stdout, lambda t: t.endswith("\n}\n"), START_TIMEOUT_S)
        description = json.loads(text)
        workers = description["cluster"]["worker"]
        assert [w.rsplit(":", 1)[0] for w in workers] == ["127.0.0.1", "127.0.0.2"]
        assert description["target"] == f"grpc://{workers[0]}"
        nodes = description["nodes"]
        assert [(n["address"], n["task"], n["chief"]) for n in nodes] == [
            ("127.0.0.1", 0, True), ("127.0.0.2", 1, False)]
        assert description["tf_config"] == {
            "127.0.0.1": {"cluster": description["cluster"], "task": {"type": "worker", "index": 0}},
            "127.0.0.2": {"cluster": description["cluster"], "task": {"type": "worker", "index": 1}},
        }
        for node in nodes:
            assert Path(node["log_file"]).parent == tmp_path / "logs"
            assert "serving" in Path(node["log_file"]).read_text()
        pids = [n["pid"] for n in nodes]
        assert not any(gone(p) for p in pids)
        assert all(psutil.Process(p).ppid() == process.pid for p in pids)

        devices = [d for n in nodes for d in n["devices"].values()]
        assert devices == [f"/job:worker/task:0/device:CPU:{p}" for p in range(3)] + [
            "/job:worker/task:1/device:CPU:0"]
        values, ran = step_on(description["target"], devices, STEP_CONFIG, value=0.75)
        assert values == [2.5] * 4
        assert set(devices) <= ran

        process.send_signal(signum)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = "still running after 30 s"
        assert code == 0, (code, (tmp_path / "up-stderr.txt").read_text(errors="replace")[-3000:])
        assert wait_gone(pids)
    finally:
        _stop(process)
        process.stdout.close()
        stderr.close()


# -- node ---------------------------------------------------------------------------------


def test_node_serves_one_node_that_a_session_can_use(tmp_path):
    """node SPEC --address A --port P serves task 0 with one device per cpus/gpus entry;
    a session on grpc://A:P runs an op on each of them."""
    path = _write(tmp_path, "nodes:\n  - address: 127.0.0.1\n    gpus: [0, 1]\n")
    port = free_port()
    process = subprocess.Popen([*CLI, "node", str(path), "--address", "127.0.0.1", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0, cwd=REPO)
    try:
        text = read_until(process.stdout, lambda t: "serving at" in t, START_TIMEOUT_S)
        assert f"node worker:0 serving at grpc://127.0.0.1:{port}" in text
        devices = [f"/job:worker/task:0/device:CPU:{p}" for p in range(3)]
        values, ran = step_on(f"grpc://127.0.0.1:{port}", devices, STEP_CONFIG, value=0.75)
        assert values == [2.5] * 3
        assert set(devices) <= ran
        assert process.poll() is None  # still serving
    finally:
        _stop(process)
        process.stdout.close()


def test_node_with_an_address_not_in_the_spec_exits_2(tmp_path):
    """node --address of a host the spec does not list: exit 2 naming the address."""
    path = _write(tmp_path, "nodes:\n  - address: 10.0.0.1\n    chief: true\n  - address: 10.0.0.2\n")
    result = cli("node", str(path), "--address", "10.0.0.3", "--port", str(free_port()))
    assert result.returncode == 2
    assert f"{path}: no node with address '10.0.0.3'" in result.stderr


def test_node_address_with_a_port_exits_2_saying_to_drop_it(tmp_path):
    """node --address HOST:PORT: exit 2, the node is named by its address alone."""
    path = _write(tmp_path, "nodes:\n  - address: 127.0.0.1\n    chief: true\n  - address: 127.0.0.2\n")
    result = cli("node", str(path), "--address", "127.0.0.2:15000")
    assert result.returncode == 2
    assert f"{path}: no node with address '127.0.0.2:15000': name a node by its address alone" in result.stderr


def test_node_of_a_loopback_spec_whose_nodes_share_a_port_exits_2(tmp_path):
    """Two loopback nodes without ports would both listen on --port on this machine (the
    second could never bind it): exit 2 naming both nodes and the 'port' field."""
    path = _write(tmp_path, "nodes:\n  - address: 127.0.0.1\n    chief: true\n  - address: 127.0.0.2\n")
    result = cli("node", str(path), "--address", "127.0.0.2", "--port", "15000")
    assert result.returncode == 2, result.stderr[-3000:]
    assert (f"{path}: nodes 1 (127.0.0.2) and 0 (127.0.0.1) both run on this machine (loopback addresses) and on "
            "port 15000; give each node its own 'port' in the spec") in result.stderr


def test_two_nodes_of_one_spec_on_one_machine_serve_on_their_own_ports(tmp_path):
    """Item 8 of issue 13: every node of a spec with per-node ports, each started with
    `cluster-sim node SPEC --address A` (no --port) on this one machine, serves on its own
    port, and a session on the chief's target runs an op on every device of both."""
    ports = [free_port(), free_port()]
    while ports[1] == ports[0]:
        ports[1] = free_port()
    path = _write(tmp_path, f"nodes:\n  - {{address: 127.0.0.1, port: {ports[0]}, chief: true}}\n"
                            f"  - {{address: 127.0.0.2, port: {ports[1]}, gpus: [0]}}\n")
    processes = []
    try:
        for address in ("127.0.0.1", "127.0.0.2"):
            processes.append(subprocess.Popen([*CLI, "node", str(path), "--address", address], cwd=REPO,
                                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0))
        for task, (process, port) in enumerate(zip(processes, ports)):
            address = f"127.0.0.{task + 1}"
            text = read_until(process.stdout, lambda t: "serving at" in t, START_TIMEOUT_S)
            assert f"node worker:{task} serving at grpc://{address}:{port}" in text
        devices = ["/job:worker/task:0/device:CPU:0", "/job:worker/task:1/device:CPU:0",
                   "/job:worker/task:1/device:CPU:1"]
        values, ran = step_on(f"grpc://127.0.0.1:{ports[0]}", devices, STEP_CONFIG, value=0.75)
        assert values == [2.5] * 3
        assert set(devices) <= ran
        assert all(process.poll() is None for process in processes)  # both still serving
    finally:
        for process in processes:
            _stop(process)
            process.stdout.close()
