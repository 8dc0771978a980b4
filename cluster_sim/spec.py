"""AutoDist resource specs: loading, validation and the derived device views.

```yaml
nodes:
  - address: 127.0.0.1
    gpus: [0, 1]          # simulated accelerators: one extra device per entry
    chief: true
  - address: 127.0.0.2
    cpus: [0]             # default [0]
    network_bandwidth: 25 # optional, Gbit/s, metadata only
    ssh_config: conf      # optional, metadata only: a key of `ssh`
    port: 15001           # optional: this node's server port on real hosts
ssh:                      # optional; kept, unused by the simulator
  conf: {username: ..., key_file: ..., python_venv: ...}
```

``port`` is where ``cluster-sim node`` serves the node and where the others (and a
client) reach it; a node without one uses the port given on the command line
(``--port``, default :data:`DEFAULT_SERVER_PORT`). Distinct ports let several nodes of
one spec run on one machine (their servers listen on every interface, so two nodes of
one machine cannot share a port). Simulated clusters choose free ports and ignore it.
An address never carries the port (``127.0.0.1:15000`` is refused, naming the node):
the address is also part of the node's logical device names (``127.0.0.1:CPU:0``).

``address: localhost`` is read as ``127.0.0.1`` (AutoDist's own single-node specs use it),
so the node is named, bound and reached at 127.0.0.1. ``ssh_config`` names the entry of
the top-level ``ssh`` mapping AutoDist uses to reach the node; every AutoDist multi-node
spec has it. The simulator connects to no host, so it is kept as metadata only
(:attr:`Node.ssh_config`, written back by :meth:`ResourceSpec.to_dict`); when the spec
has an ``ssh`` mapping, the name must be one of its keys.

Device mapping (stable): every node runs one TensorFlow server of job ``worker``; the
chief is task 0, the other nodes follow in file order. A node has ``len(cpus) +
len(gpus)`` CPU devices: the cpus entry at position p is ``CPU:p``, the gpus entry at
position j is ``CPU:(len(cpus) + j)``, so a simulated GPU is an extra CPU device.
Logical (AutoDist-style) device names keep the entry's own index:
``127.0.0.1:GPU:1``, ``127.0.0.2:CPU:0``.

Replicas are one per gpu entry, or one per cpu entry of a node with no gpus (AutoDist's
rule); parameter-server devices are every node's CPU devices.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

JOB_NAME = "worker"
# The servers' port on real hosts (`cluster-sim node`); simulated clusters pick free ports.
DEFAULT_SERVER_PORT = 15000
# Above this many nodes, simulating a spec earns a warning: every node is a server process
# of its own on this machine (about 230 MiB of memory each, measured on TensorFlow 2.21).
MANY_NODES = 16
NODE_MEMORY_MIB = 230
_NODE_KEYS = {"address", "cpus", "gpus", "chief", "network_bandwidth", "ssh_config", "port"}
_TOP_KEYS = {"nodes", "ssh"}


class SpecError(ValueError):
    """An invalid resource spec; the message names the file, the node and the field."""


@dataclass(frozen=True)
class Device:
    """One device of the cluster, under its logical and its TensorFlow name."""

    name: str  # "127.0.0.1:GPU:0"
    kind: str  # "CPU" or "GPU"
    address: str
    index: int  # the spec entry's own value
    task_index: int
    tf_name: str  # "/job:worker/task:0/device:CPU:1"


@dataclass(frozen=True)
class Node:
    """One node of a resource spec.

    ``ssh_config`` is the name of the node's entry in the spec's ``ssh`` mapping
    (AutoDist's per-node ``ssh_config``), metadata only: the simulator uses no SSH.
    """

    address: str
    cpus: tuple[int, ...] = (0,)
    gpus: tuple[int, ...] = ()
    chief: bool = False
    network_bandwidth: float | None = None
    task_index: int = 0
    ssh_config: str | None = None
    port: int | None = None

    @property
    def num_devices(self) -> int:
        return len(self.cpus) + len(self.gpus)

    def server_port(self, default: int = DEFAULT_SERVER_PORT) -> int:
        """The port of this node's server on real hosts: its own ``port``, else ``default``."""
        return self.port if self.port is not None else default


def is_loopback(address: str) -> bool:
    """True for localhost and every address of 127.0.0.0/8 (or ::1)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class ResourceSpec:
    """A validated resource spec. Build it with :meth:`from_file`, :meth:`from_dict`
    or :meth:`local`."""

    def __init__(self, nodes: list[Node], ssh: Mapping[str, Any] | None, source: str):
        self.nodes = nodes
        self.ssh = dict(ssh) if ssh is not None else None
        self.source = source
        self._devices = {d.name: d for node in nodes for d in self.devices_of(node)}

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path, simulate: bool = True) -> ResourceSpec:
        """Load a YAML spec; ``simulate`` rejects addresses that are not loopback."""
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise SpecError(f"{source}: cannot read the resource spec: {err.strerror}") from err
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err)
            raise SpecError(f"{source}: YAML syntax error{where}: {problem}") from err
        return cls.from_dict(data, source=source, simulate=simulate)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>", simulate: bool = True) -> ResourceSpec:
        """Validate a spec given as parsed YAML (mappings and lists)."""
        if not isinstance(data, Mapping):
            raise SpecError(f"{source}: the top level must be a mapping with a 'nodes' list")
        unknown = sorted(set(data) - _TOP_KEYS)
        if unknown:
            raise SpecError(f"{source}: unknown top-level field {unknown[0]!r} (allowed: nodes, ssh)")
        raw_nodes = data.get("nodes")
        if not isinstance(raw_nodes, list) or not raw_nodes:
            raise SpecError(f"{source}: field 'nodes' must be a non-empty list of nodes")
        ssh = data.get("ssh")
        if ssh is not None and not isinstance(ssh, Mapping):
            raise SpecError(f"{source}: field 'ssh' must be a mapping")
        parsed = [_parse_node(raw, i, source, simulate) for i, raw in enumerate(raw_nodes)]
        if ssh is not None:
            for i, node in enumerate(parsed):
                if node.ssh_config is not None and node.ssh_config not in ssh:
                    known = ", ".join(repr(str(k)) for k in ssh) or "none"
                    raise SpecError(
                        f"{source}: node {i} ({node.address}): field 'ssh_config' names {node.ssh_config!r}, "
                        f"which the top-level 'ssh' mapping does not define (its configs: {known})"
                    )
        seen: dict[str, int] = {}
        for i, node in enumerate(parsed):
            if node.address in seen:
                raise SpecError(
                    f"{source}: node {i} ({node.address}): field 'address' duplicates node {seen[node.address]}"
                )
            seen[node.address] = i
        chiefs = [i for i, node in enumerate(parsed) if node.chief]
        if len(parsed) == 1 and not chiefs:
            parsed[0] = _replace(parsed[0], chief=True)  # a lone node is the chief (AutoDist's rule)
            chiefs = [0]
        if not chiefs:
            raise SpecError(f"{source}: no node has 'chief: true'; exactly one chief is needed")
        if len(chiefs) > 1:
            raise SpecError(
                f"{source}: nodes {chiefs[0]} ({parsed[chiefs[0]].address}) and {chiefs[1]} "
                f"({parsed[chiefs[1]].address}) both have 'chief: true'; exactly one chief is allowed"
            )
        ordered = [parsed[chiefs[0]]] + [n for i, n in enumerate(parsed) if i != chiefs[0]]
        nodes = [_replace(node, task_index=task) for task, node in enumerate(ordered)]
        return cls(nodes, ssh, source)

    @classmethod
    def local(cls, nodes: int = 1, gpus_per_node: int = 0, cpus_per_node: int = 1) -> ResourceSpec:
        """A spec of ``nodes`` loopback nodes (127.0.0.1, 127.0.0.2, ...); the first is chief."""
        if nodes < 1 or nodes > 254:
            raise SpecError(f"<local>: nodes must be between 1 and 254, got {nodes}")
        data = {
            "nodes": [
                {
                    "address": f"127.0.0.{i + 1}",
                    "cpus": list(range(cpus_per_node)),
                    "gpus": list(range(gpus_per_node)),
                    **({"chief": True} if i == 0 else {}),
                }
                for i in range(nodes)
            ]
        }
        return cls.from_dict(data, source=f"<local nodes={nodes} gpus_per_node={gpus_per_node}>")

    # -- views ----------------------------------------------------------------------

    @property
    def chief(self) -> Node:
        return self.nodes[0]

    def node(self, key: Node | str | int) -> Node:
        """A node by Node, address or task index."""
        if isinstance(key, Node):
            key = key.address
        if isinstance(key, int):
            if 0 <= key < len(self.nodes):
                return self.nodes[key]
            raise SpecError(f"{self.source}: no node with task index {key}")
        address = "127.0.0.1" if key == "localhost" else key
        for node in self.nodes:
            if node.address == address:
                return node
        host, port = _split_port(key)
        if port is not None:
            raise SpecError(f"{self.source}: no node with address {key!r}: name a node by its address "
                            f"alone ({host!r}); its port is the node's field 'port'")
        raise SpecError(f"{self.source}: no node with address {key!r}")

    def devices_of(self, node: Node | str | int) -> list[Device]:
        """The devices of one node: its cpus first, then its gpus."""
        node = self.node(node) if not isinstance(node, Node) else node
        devices = []
        for position, (kind, index) in enumerate(
            [("CPU", c) for c in node.cpus] + [("GPU", g) for g in node.gpus]
        ):
            devices.append(
                Device(
                    name=f"{node.address}:{kind}:{index}",
                    kind=kind,
                    address=node.address,
                    index=index,
                    task_index=node.task_index,
                    tf_name=f"/job:{JOB_NAME}/task:{node.task_index}/device:CPU:{position}",
                )
            )
        return devices

    @property
    def replica_devices(self) -> list[Device]:
        result = []
        for node in self.nodes:
            devices = self.devices_of(node)
            gpus = [d for d in devices if d.kind == "GPU"]
            result.extend(gpus or [d for d in devices if d.kind == "CPU"])
        return result

    @property
    def gpu_devices(self) -> list[tuple[str, Device]]:
        """``(logical name, Device)`` of every gpu entry, in task order then entry order,
        like AutoDist's ``ResourceSpec.gpu_devices`` (there: the items of a name -> device
        mapping). Each is a replica device: a node with gpus replicates on its gpus only."""
        return [(d.name, d) for node in self.nodes for d in self.devices_of(node) if d.kind == "GPU"]

    @property
    def ps_devices(self) -> list[Device]:
        return [d for node in self.nodes for d in self.devices_of(node) if d.kind == "CPU"]

    def device(self, name: str) -> Device:
        """A device by logical name."""
        try:
            return self._devices[name]
        except KeyError:
            raise SpecError(f"{self.source}: no device named {name!r}") from None

    def cluster_def(self, ports: Mapping[str, int] | int) -> dict[str, list[str]]:
        """The TensorFlow cluster (job -> task addresses): with a mapping, the port of each
        node's address (a simulated cluster's); with one port, that of real hosts: each
        node's own ``port``, else the one given."""
        def port_of(node: Node) -> int:
            return node.server_port(ports) if isinstance(ports, int) else ports[node.address]

        return {JOB_NAME: [f"{node.address}:{port_of(node)}" for node in self.nodes]}

    def target(self, default_port: int = DEFAULT_SERVER_PORT) -> str:
        """The session target of the chief's server on real hosts."""
        return f"grpc://{self.chief.address}:{self.chief.server_port(default_port)}"

    def size_warning(self) -> str | None:
        """What simulating this spec would start, if that is more than :data:`MANY_NODES`
        server processes; else None."""
        count = len(self.nodes)
        if count <= MANY_NODES:
            return None
        return (f"{self.source}: {count} nodes: a simulated cluster of this spec starts {count} TensorFlow "
                f"server processes on this machine, one per node (about {NODE_MEMORY_MIB} MiB of memory each, "
                f"{count * NODE_MEMORY_MIB / 1024:.1f} GiB in all, and seconds of CPU each to start)")

    def to_dict(self) -> dict[str, Any]:
        nodes = []
        for node in self.nodes:
            entry: dict[str, Any] = {"address": node.address, "cpus": list(node.cpus), "gpus": list(node.gpus)}
            if node.chief:
                entry["chief"] = True
            if node.network_bandwidth is not None:
                entry["network_bandwidth"] = node.network_bandwidth
            if node.ssh_config is not None:
                entry["ssh_config"] = node.ssh_config
            if node.port is not None:
                entry["port"] = node.port
            nodes.append(entry)
        data: dict[str, Any] = {"nodes": nodes}
        if self.ssh is not None:
            data["ssh"] = self.ssh
        return data

    def __repr__(self) -> str:
        return f"ResourceSpec({self.source}, nodes={[n.address for n in self.nodes]})"


def _replace(node: Node, **changes: Any) -> Node:
    fields = {f: getattr(node, f) for f in Node.__dataclass_fields__}
    fields.update(changes)
    return Node(**fields)


def _int_list(value: Any, where: str, field: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise SpecError(f"{where}: field {field!r} must be a list of non-negative integers, got {value!r}")
    if len(set(value)) != len(value):
        raise SpecError(f"{where}: field {field!r} lists an entry twice: {value!r}")
    return tuple(value)


def _parse_node(raw: Any, index: int, source: str, simulate: bool) -> Node:
    if not isinstance(raw, Mapping):
        raise SpecError(f"{source}: node {index}: expected a mapping with an 'address', got {raw!r}")
    address = raw.get("address")
    where = f"{source}: node {index} ({address})" if address is not None else f"{source}: node {index}"
    unknown = sorted(set(raw) - _NODE_KEYS)
    if unknown:
        raise SpecError(f"{where}: unknown field {unknown[0]!r} (allowed: {', '.join(sorted(_NODE_KEYS))})")
    if not isinstance(address, str) or not address:
        raise SpecError(f"{where}: field 'address' is missing or not a string")
    host, port_in_address = _split_port(address)
    if port_in_address is not None:
        raise SpecError(
            f"{where}: field 'address' includes a port; give the host alone and the port in the node's "
            f"own field: 'address: {host}' and 'port: {port_in_address}'"
        )
    if address == "localhost":
        address = "127.0.0.1"
    if simulate and not is_loopback(address):
        raise SpecError(
            f"{where}: field 'address' is not a loopback address; the simulator runs every node on "
            "this machine (use 127.0.0.x), or run `cluster-sim node` on real hosts"
        )
    if simulate and ":" in address:
        raise SpecError(f"{where}: field 'address' is IPv6; the simulator needs IPv4 loopback addresses (127.0.0.x)")
    cpus = _int_list(raw.get("cpus", [0]), where, "cpus")
    gpus = _int_list(raw.get("gpus", []), where, "gpus")
    chief = raw.get("chief", False)
    if not isinstance(chief, bool):
        raise SpecError(f"{where}: field 'chief' must be true or false, got {chief!r}")
    bandwidth = raw.get("network_bandwidth")
    if bandwidth is not None and (
        isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or bandwidth <= 0
    ):
        raise SpecError(f"{where}: field 'network_bandwidth' must be a positive number (Gbit/s), got {bandwidth!r}")
    ssh_config = raw.get("ssh_config")
    if ssh_config is not None and (not isinstance(ssh_config, str) or not ssh_config):
        raise SpecError(
            f"{where}: field 'ssh_config' must be the name of an entry of the top-level 'ssh' mapping "
            f"(a non-empty string), got {ssh_config!r}"
        )
    if not cpus and not gpus:
        raise SpecError(f"{where}: fields 'cpus' and 'gpus' are both empty; a node needs a device")
    port = raw.get("port")
    if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536):
        raise SpecError(f"{where}: field 'port' must be a TCP port number (1-65535), got {port!r}")
    return Node(
        address, cpus, gpus, chief, float(bandwidth) if bandwidth is not None else None, ssh_config=ssh_config,
        port=port,
    )


def _split_port(address: str) -> tuple[str, str | None]:
    """``(host, port)`` of an address written as ``host:port`` or ``[ipv6]:port``;
    ``(address, None)`` for an address without a port (an IPv6 address is one)."""
    if address.startswith("[") and "]:" in address:
        host, port = address[1:].split("]:", 1)
        return host, port
    try:
        ipaddress.ip_address(address)
        return address, None
    except ValueError:
        pass
    host, separator, port = address.rpartition(":")
    if separator and host and ":" not in host and port.isdigit():
        return host, port
    return address, None
