"""Resource specs: loading, validation messages and the derived device views.

Fast: no TensorFlow, no processes. Every expected device list below is worked out by
hand from the rules of cluster_sim/spec.py and the README ("Resource specs"):

* the chief is task 0, the other nodes follow in file order;
* a node's devices are its cpus entries then its gpus entries, the entry at position p
  being ``/job:worker/task:T/device:CPU:p`` (a simulated GPU is an extra CPU device);
* replicas are one per gpu entry, or one per cpu entry of a node with no gpus;
* parameter-server devices are every node's CPU devices.
"""

from __future__ import annotations

import pytest
import yaml

from cluster_sim import ResourceSpec, SpecError
from cluster_sim.spec import is_loopback


def _write(tmp_path, text, name="spec.yml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _views(spec):
    """(replica names, ps names, {logical name: tf name}) of a spec."""
    devices = {d.name: d.tf_name for node in spec.nodes for d in spec.devices_of(node)}
    return [d.name for d in spec.replica_devices], [d.name for d in spec.ps_devices], devices


# -- good specs ---------------------------------------------------------------------------

THREE_NODES = """\
# the chief is last in the file; it must still become task 0
nodes:
  - address: 127.0.0.2
    cpus: [0, 1]
  - address: 127.0.0.3
    cpus: [0]
    gpus: [0, 2]
    network_bandwidth: 25
  - address: 127.0.0.1
    gpus: [1]
    chief: true
ssh:
  username: alice
  key_file: ~/.ssh/id_rsa
  python_venv: source /opt/venv/bin/activate
"""


def test_three_nodes_from_file_chief_last_becomes_task_0(tmp_path):
    """Task order, device names (gpus after cpus, entry index kept), replicas and PS
    devices of a 3-node spec whose chief is listed last; ssh and bandwidth are kept."""
    path = _write(tmp_path, THREE_NODES)
    spec = ResourceSpec.from_file(path)

    assert spec.source == str(path)
    assert [(n.address, n.task_index, n.chief) for n in spec.nodes] == [
        ("127.0.0.1", 0, True),
        ("127.0.0.2", 1, False),
        ("127.0.0.3", 2, False),
    ]
    assert spec.chief.address == "127.0.0.1"
    assert spec.nodes[0].cpus == (0,)  # default cpus
    assert spec.nodes[0].gpus == (1,)
    assert spec.nodes[1].gpus == ()
    assert [n.num_devices for n in spec.nodes] == [2, 2, 3]
    assert spec.nodes[2].network_bandwidth == 25.0
    assert spec.nodes[0].network_bandwidth is None
    assert spec.ssh == {
        "username": "alice", "key_file": "~/.ssh/id_rsa",
        "python_venv": "source /opt/venv/bin/activate",
    }

    replicas, ps, devices = _views(spec)
    assert devices == {
        "127.0.0.1:CPU:0": "/job:worker/task:0/device:CPU:0",
        "127.0.0.1:GPU:1": "/job:worker/task:0/device:CPU:1",
        "127.0.0.2:CPU:0": "/job:worker/task:1/device:CPU:0",
        "127.0.0.2:CPU:1": "/job:worker/task:1/device:CPU:1",
        "127.0.0.3:CPU:0": "/job:worker/task:2/device:CPU:0",
        "127.0.0.3:GPU:0": "/job:worker/task:2/device:CPU:1",
        "127.0.0.3:GPU:2": "/job:worker/task:2/device:CPU:2",
    }
    # 127.0.0.2 has no gpus, so each of its cpus is a replica; the others replicate on gpus.
    assert replicas == [
        "127.0.0.1:GPU:1", "127.0.0.2:CPU:0", "127.0.0.2:CPU:1", "127.0.0.3:GPU:0", "127.0.0.3:GPU:2",
    ]
    assert ps == ["127.0.0.1:CPU:0", "127.0.0.2:CPU:0", "127.0.0.2:CPU:1", "127.0.0.3:CPU:0"]

    gpu = spec.device("127.0.0.3:GPU:2")
    assert (gpu.kind, gpu.address, gpu.index, gpu.task_index) == ("GPU", "127.0.0.3", 2, 2)
    assert spec.cluster_def({"127.0.0.1": 1111, "127.0.0.2": 2222, "127.0.0.3": 3333}) == {
        "worker": ["127.0.0.1:1111", "127.0.0.2:2222", "127.0.0.3:3333"]
    }
    assert spec.cluster_def(15000) == {"worker": ["127.0.0.1:15000", "127.0.0.2:15000", "127.0.0.3:15000"]}


def test_lookups_by_address_index_and_localhost(tmp_path):
    """node() accepts an address, a task index or 'localhost'; unknown keys raise SpecError."""
    spec = ResourceSpec.from_file(_write(tmp_path, THREE_NODES))
    assert spec.node("127.0.0.3").task_index == 2
    assert spec.node(1).address == "127.0.0.2"
    assert spec.node("localhost").address == "127.0.0.1"
    assert spec.node(spec.nodes[2]) is spec.nodes[2]
    with pytest.raises(SpecError, match="task index 3"):
        spec.node(3)
    with pytest.raises(SpecError, match="127.0.0.9"):
        spec.node("127.0.0.9")
    with pytest.raises(SpecError, match="127.0.0.1:GPU:0"):
        spec.device("127.0.0.1:GPU:0")  # the chief's only gpu entry is 1


def test_to_dict_round_trips(tmp_path):
    """to_dict() gives a spec that loads to the same nodes (in task order) and ssh."""
    spec = ResourceSpec.from_file(_write(tmp_path, THREE_NODES))
    again = ResourceSpec.from_dict(yaml.safe_load(yaml.safe_dump(spec.to_dict())))
    assert again.nodes == spec.nodes
    assert again.ssh == spec.ssh
    assert _views(again) == _views(spec)


def test_lone_node_without_chief_becomes_chief(tmp_path):
    """A single node with no 'chief' is the chief; localhost maps to 127.0.0.1; cpus-only
    node: every cpu is a replica and a PS device, in entry order, position-numbered."""
    spec = ResourceSpec.from_file(_write(tmp_path, "nodes:\n  - address: localhost\n    cpus: [3, 1]\n"))
    assert len(spec.nodes) == 1
    node = spec.nodes[0]
    assert (node.address, node.chief, node.task_index, node.cpus) == ("127.0.0.1", True, 0, (3, 1))
    replicas, ps, devices = _views(spec)
    assert devices == {
        "127.0.0.1:CPU:3": "/job:worker/task:0/device:CPU:0",
        "127.0.0.1:CPU:1": "/job:worker/task:0/device:CPU:1",
    }
    assert replicas == ["127.0.0.1:CPU:3", "127.0.0.1:CPU:1"]
    assert ps == replicas
    assert spec.ssh is None


def test_two_nodes_with_gpus_from_dict():
    """The examples/two_nodes.yml layout: replicas are the three gpus, PS the two CPU:0."""
    spec = ResourceSpec.from_dict({
        "nodes": [
            {"address": "127.0.0.1", "gpus": [0, 1], "chief": True},
            {"address": "127.0.0.2", "gpus": [0]},
        ]
    })
    assert spec.source == "<dict>"
    replicas, ps, devices = _views(spec)
    assert replicas == ["127.0.0.1:GPU:0", "127.0.0.1:GPU:1", "127.0.0.2:GPU:0"]
    assert ps == ["127.0.0.1:CPU:0", "127.0.0.2:CPU:0"]
    assert devices["127.0.0.1:GPU:1"] == "/job:worker/task:0/device:CPU:2"
    assert devices["127.0.0.2:GPU:0"] == "/job:worker/task:1/device:CPU:1"


def test_gpu_only_node_has_no_ps_device():
    """'cpus: []' with gpus is valid: the node's devices are its gpus only, and it
    contributes no parameter-server device."""
    spec = ResourceSpec.from_dict({
        "nodes": [
            {"address": "127.0.0.1", "chief": True},
            {"address": "127.0.0.2", "cpus": [], "gpus": [0]},
        ]
    })
    replicas, ps, devices = _views(spec)
    assert devices["127.0.0.2:GPU:0"] == "/job:worker/task:1/device:CPU:0"
    assert replicas == ["127.0.0.1:CPU:0", "127.0.0.2:GPU:0"]
    assert ps == ["127.0.0.1:CPU:0"]


def test_examples_two_nodes_yml_matches_its_comment():
    """The shipped example spec yields the replicas and PS devices its comment states."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "two_nodes.yml"
    replicas, ps, _ = _views(ResourceSpec.from_file(path))
    assert replicas == ["127.0.0.1:GPU:0", "127.0.0.1:GPU:1", "127.0.0.2:GPU:0"]
    assert ps == ["127.0.0.1:CPU:0", "127.0.0.2:CPU:0"]


@pytest.mark.parametrize("nodes, gpus, cpus", [(1, 0, 1), (3, 1, 1), (2, 2, 2)])
def test_local(nodes, gpus, cpus):
    """ResourceSpec.local: loopback addresses 127.0.0.1.., first is chief, gpus after cpus."""
    spec = ResourceSpec.local(nodes=nodes, gpus_per_node=gpus, cpus_per_node=cpus)
    assert [n.address for n in spec.nodes] == [f"127.0.0.{i + 1}" for i in range(nodes)]
    assert [n.chief for n in spec.nodes] == [True] + [False] * (nodes - 1)
    expected_devices = {}
    for t in range(nodes):
        for c in range(cpus):
            expected_devices[f"127.0.0.{t + 1}:CPU:{c}"] = f"/job:worker/task:{t}/device:CPU:{c}"
        for g in range(gpus):
            expected_devices[f"127.0.0.{t + 1}:GPU:{g}"] = f"/job:worker/task:{t}/device:CPU:{cpus + g}"
    replicas, ps, devices = _views(spec)
    assert devices == expected_devices
    kind = "GPU" if gpus else "CPU"
    per_node = gpus or cpus
    assert replicas == [f"127.0.0.{t + 1}:{kind}:{i}" for t in range(nodes) for i in range(per_node)]
    assert ps == [f"127.0.0.{t + 1}:CPU:{c}" for t in range(nodes) for c in range(cpus)]


@pytest.mark.parametrize("count", [0, 255])
def test_local_rejects_bad_node_count(count):
    """local() needs 1..254 nodes (the usable 127.0.0.x addresses)."""
    with pytest.raises(SpecError, match=f"got {count}"):
        ResourceSpec.local(nodes=count)


def test_non_loopback_address_accepted_when_not_simulating(tmp_path):
    """simulate=False (real hosts) accepts routable addresses."""
    path = _write(tmp_path, "nodes:\n  - address: 10.0.0.1\n    chief: true\n  - address: 10.0.0.2\n    gpus: [0]\n")
    spec = ResourceSpec.from_file(path, simulate=False)
    assert [n.address for n in spec.nodes] == ["10.0.0.1", "10.0.0.2"]
    assert spec.devices_of("10.0.0.2")[1].tf_name == "/job:worker/task:1/device:CPU:1"


@pytest.mark.parametrize(
    "address, expected",
    [("127.0.0.1", True), ("127.3.2.1", True), ("localhost", True), ("::1", True),
     ("10.0.0.1", False), ("example.com", False), ("128.0.0.1", False)],
)
def test_is_loopback(address, expected):
    """All of 127.0.0.0/8, ::1 and 'localhost' are loopback; nothing else is."""
    assert is_loopback(address) is expected


# -- bad specs ----------------------------------------------------------------------------

BAD_SPECS = [
    # id, file text, fragments the message must contain (besides the file path)
    ("no-nodes", "ssh: {username: a}\n", ["field 'nodes'", "non-empty list"]),
    ("empty-nodes", "nodes: []\n", ["field 'nodes'", "non-empty list"]),
    ("empty-file", "", ["'nodes'"]),
    (
        "no-chief",
        "nodes:\n  - address: 127.0.0.1\n  - address: 127.0.0.2\n",
        ["'chief: true'", "exactly one chief"],
    ),
    (
        "two-chiefs",
        "nodes:\n  - address: 127.0.0.1\n    chief: true\n  - address: 127.0.0.2\n"
        "  - address: 127.0.0.3\n    chief: true\n",
        ["nodes 0 (127.0.0.1) and 2 (127.0.0.3)", "'chief: true'"],
    ),
    (
        "duplicate-address",
        "nodes:\n  - address: 127.0.0.1\n    chief: true\n  - address: 127.0.0.1\n",
        ["node 1 (127.0.0.1)", "field 'address'", "duplicates node 0"],
    ),
    (
        "localhost-duplicates-127.0.0.1",
        "nodes:\n  - address: 127.0.0.1\n    chief: true\n  - address: localhost\n",
        ["node 1", "field 'address'", "duplicates node 0"],
    ),
    (
        "gpus-not-a-list",
        "nodes:\n  - address: 127.0.0.1\n    chief: true\n  - address: 127.0.0.2\n    gpus: 0\n",
        ["node 1 (127.0.0.2)", "field 'gpus'", "must be a list"],
    ),
    (
        "cpus-negative",
        "nodes:\n  - address: 127.0.0.1\n    cpus: [-1]\n",
        ["node 0 (127.0.0.1)", "field 'cpus'"],
    ),
    (
        "gpus-repeated",
        "nodes:\n  - address: 127.0.0.1\n    gpus: [0, 0]\n",
        ["node 0 (127.0.0.1)", "field 'gpus'", "twice"],
    ),
    (
        "no-device",
        "nodes:\n  - address: 127.0.0.1\n    cpus: []\n",
        ["node 0 (127.0.0.1)", "'cpus' and 'gpus'"],
    ),
    (
        "unknown-node-key",
        "nodes:\n  - address: 127.0.0.1\n    chief: true\n  - address: 127.0.0.2\n    gpu: [0]\n",
        ["node 1 (127.0.0.2)", "unknown field 'gpu'"],
    ),
    (
        "missing-address",
        "nodes:\n  - address: 127.0.0.1\n    chief: true\n  - cpus: [0]\n",
        ["node 1", "field 'address'", "missing"],
    ),
    (
        "chief-not-bool",
        "nodes:\n  - address: 127.0.0.1\n    chief: yes please\n",
        ["node 0 (127.0.0.1)", "field 'chief'"],
    ),
    (
        "bad-bandwidth",
        "nodes:\n  - address: 127.0.0.1\n    network_bandwidth: -5\n",
        ["node 0 (127.0.0.1)", "field 'network_bandwidth'"],
    ),
    (
        "unknown-top-level-key",
        "nodes:\n  - address: 127.0.0.1\nssh_config: {}\n",
        ["unknown top-level field 'ssh_config'"],
    ),
    (
        "ssh-not-a-mapping",
        "nodes:\n  - address: 127.0.0.1\nssh: [a, b]\n",
        ["field 'ssh'", "mapping"],
    ),
    (
        "node-not-a-mapping",
        "nodes:\n  - 127.0.0.1\n",
        ["node 0", "'address'"],
    ),
    (
        "non-loopback-address",
        "nodes:\n  - address: 127.0.0.1\n    chief: true\n  - address: 10.1.2.3\n",
        ["node 1 (10.1.2.3)", "field 'address'", "not a loopback"],
    ),
    (
        "ipv6-loopback-address",
        "nodes:\n  - address: '::1'\n",
        ["node 0 (::1)", "field 'address'", "IPv6", "127.0.0.x"],
    ),
    (
        "port-zero",
        "nodes:\n  - address: 127.0.0.1\n    port: 0\n",
        ["node 0 (127.0.0.1)", "field 'port'", "1-65535"],
    ),
    (
        "port-too-large",
        "nodes:\n  - address: 127.0.0.1\n    chief: true\n  - address: 127.0.0.2\n    port: 70000\n",
        ["node 1 (127.0.0.2)", "field 'port'", "70000"],
    ),
    (
        "port-not-a-number",
        "nodes:\n  - address: 127.0.0.1\n    port: '15000'\n",
        ["node 0 (127.0.0.1)", "field 'port' must be a TCP port number"],
    ),
    (
        "port-a-boolean",
        "nodes:\n  - address: 127.0.0.1\n    port: true\n",
        ["node 0 (127.0.0.1)", "field 'port' must be a TCP port number"],
    ),
    (
        "yaml-syntax-error",
        "nodes:\n  - address: 127.0.0.1\n    gpus: [0, 1\n    chief: true\n",
        ["YAML syntax error", "at line "],
    ),
]


@pytest.mark.parametrize("text, fragments", [b[1:] for b in BAD_SPECS], ids=[b[0] for b in BAD_SPECS])
def test_bad_spec_message_names_file_node_and_field(tmp_path, text, fragments):
    """Each invalid spec raises SpecError whose message starts with the file path and
    names the node and field at fault."""
    path = _write(tmp_path, text)
    with pytest.raises(SpecError) as caught:
        ResourceSpec.from_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_yaml_syntax_error_gives_the_right_line(tmp_path):
    """The YAML error's line number points at the broken line (1-based)."""
    text = "nodes:\n  - address: 127.0.0.1\n    chief: true\n  - address: 127.0.0.2\n   gpus: [0]\n"
    path = _write(tmp_path, text)
    with pytest.raises(SpecError) as caught:
        ResourceSpec.from_file(path)
    # Compute the expected line with the same parser, independently of spec.py's wording.
    with pytest.raises(yaml.YAMLError) as direct:
        yaml.safe_load(text)
    line = direct.value.problem_mark.line + 1
    assert line in (4, 5)
    assert f"at line {line}," in str(caught.value)


def test_spec_error_is_a_value_error():
    """SpecError subclasses ValueError (callers may catch either)."""
    assert issubclass(SpecError, ValueError)


def test_non_loopback_accepted_only_when_not_simulating(tmp_path):
    """The same file is rejected with simulate=True and accepted with simulate=False."""
    path = _write(tmp_path, "nodes:\n  - address: 192.168.1.10\n")
    with pytest.raises(SpecError, match=r"node 0 \(192\.168\.1\.10\): field 'address'"):
        ResourceSpec.from_file(path)
    assert ResourceSpec.from_file(path, simulate=False).chief.address == "192.168.1.10"


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_file(tmp_path, kind):
    """A missing file or a directory gives SpecError naming the path and the OS reason."""
    if kind == "missing":
        path, reason = tmp_path / "nope.yml", "No such file or directory"
    else:
        path, reason = tmp_path, "Is a directory"
    with pytest.raises(SpecError) as caught:
        ResourceSpec.from_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: cannot read the resource spec"), message
    assert reason in message


def test_from_dict_rejects_non_mapping():
    """A top level that is not a mapping is rejected with the source named."""
    with pytest.raises(SpecError, match=r"^my-source: the top level must be a mapping"):
        ResourceSpec.from_dict([{"address": "127.0.0.1"}], source="my-source")


# -- ports, and the size of what a spec starts --------------------------------------------

PORTS = """\
nodes:
  - address: 127.0.0.2
    port: 15001
  - address: 127.0.0.1
    chief: true
    port: 16000
  - address: 127.0.0.3
"""


def test_a_nodes_port_is_its_servers_on_real_hosts(tmp_path):
    """A node's optional 'port' is its server's port in the real-hosts cluster and the
    chief's session target; nodes without one take the port given; to_dict keeps it;
    a simulated cluster's own ports (a mapping) win."""
    spec = ResourceSpec.from_file(_write(tmp_path, PORTS))
    assert [(n.address, n.port) for n in spec.nodes] == [("127.0.0.1", 16000), ("127.0.0.2", 15001),
                                                          ("127.0.0.3", None)]
    assert spec.cluster_def(15000) == {"worker": ["127.0.0.1:16000", "127.0.0.2:15001", "127.0.0.3:15000"]}
    assert spec.target(15000) == "grpc://127.0.0.1:16000"
    assert ResourceSpec.local(nodes=1).target(15123) == "grpc://127.0.0.1:15123"
    simulated = {"127.0.0.1": 20001, "127.0.0.2": 20002, "127.0.0.3": 20003}
    assert spec.cluster_def(simulated) == {"worker": ["127.0.0.1:20001", "127.0.0.2:20002", "127.0.0.3:20003"]}
    again = ResourceSpec.from_dict(yaml.safe_load(yaml.safe_dump(spec.to_dict())))
    assert again.nodes == spec.nodes
    assert "port" not in spec.to_dict()["nodes"][2]


@pytest.mark.parametrize("simulate", [True, False], ids=["simulated", "real-hosts"])
@pytest.mark.parametrize("address, host", [("127.0.0.1:15000", "127.0.0.1"), ("localhost:15000", "localhost"),
                                           ("[::1]:15000", "::1"), ("host-a.example:15000", "host-a.example")])
def test_an_address_with_a_port_is_refused_saying_where_the_port_goes(tmp_path, address, host, simulate):
    """Simulated or not, ``address: HOST:PORT`` is refused naming the node and pointing
    to the 'port' field (it used to be "not a loopback address", or accepted for real
    hosts and then never reached)."""
    path = _write(tmp_path, f"nodes:\n  - address: 127.0.0.5\n    chief: true\n  - address: '{address}'\n")
    with pytest.raises(SpecError) as caught:
        ResourceSpec.from_file(path, simulate=simulate)
    message = str(caught.value)
    assert message.startswith(f"{path}: node 1 ({address}): field 'address' includes a port"), message
    assert f"'address: {host}' and 'port: 15000'" in message
    assert "loopback" not in message


def test_ipv6_addresses_are_not_mistaken_for_ports():
    """An IPv6 address (colons, no port) is still an address for real hosts."""
    spec = ResourceSpec.from_dict({"nodes": [{"address": "fe80::1", "chief": True}, {"address": "2001:db8::2"}]},
                                  simulate=False)
    assert [n.address for n in spec.nodes] == ["fe80::1", "2001:db8::2"]
    assert [n.port for n in spec.nodes] == [None, None]


def test_looking_a_node_up_with_a_port_says_to_drop_it(tmp_path):
    """node("ADDR:PORT") (what `cluster-sim node --address` passes) says to give the address alone."""
    spec = ResourceSpec.from_file(_write(tmp_path, PORTS))
    with pytest.raises(SpecError, match=r"no node with address '127\.0\.0\.2:15001': .* alone \('127\.0\.0\.2'\)"):
        spec.node("127.0.0.2:15001")


def test_a_spec_of_many_nodes_says_how_many_processes_it_starts():
    """Up to MANY_NODES (16) nodes: no warning; above: one naming the spec, the node count
    and the server processes it would start."""
    from cluster_sim.spec import MANY_NODES

    assert MANY_NODES == 16  # the limit docs/cluster_sim.md and the README state
    assert ResourceSpec.local(nodes=16).size_warning() is None
    warning = ResourceSpec.from_dict(ResourceSpec.local(nodes=100).to_dict(), source="big.yml").size_warning()
    assert warning is not None
    assert warning.startswith("big.yml: 100 nodes:")
    assert "starts 100 TensorFlow server processes on this machine" in warning
