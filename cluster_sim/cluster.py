"""A cluster of real TensorFlow servers, one OS process per node, on loopback addresses.

```python
with LocalCluster(ResourceSpec.local(nodes=2, gpus_per_node=1)) as cluster:
    sess = tf.compat.v1.Session(cluster.target, config=cluster.session_config())
```

``start()`` returns once every node has run a real op on each of its devices *and* the
parent has run one op on every device of every node through the chief. Faults can be
injected on a live cluster (``kill``, ``pause``/``resume``, ``restart``). Sessions built
with :meth:`LocalCluster.session_config` carry an operation timeout, so a step that
needs a dead or paused node fails with a TensorFlow error instead of hanging.

Node processes die with the process that started them (also after ``kill -9`` of it):
``PR_SET_PDEATHSIG`` is tied to the *thread* that started a node, so start and restart
nodes from a thread that outlives the cluster (normally the main thread).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import multiprocess
from multiprocess.connection import wait as wait_for_connections

from cluster_sim import determinism
from cluster_sim.launcher import NodeLauncher, main_module_hidden
from cluster_sim.node import run_node, self_check
from cluster_sim.ports import PortReservation, reserve_port
from cluster_sim.spec import JOB_NAME, Node, ResourceSpec, SpecError, is_loopback
from cluster_sim.tempdirs import owned_temp_dir, remove_owned

_LOG_TAIL_LINES = 30
_BIND_FAILURE = "Could not start gRPC server"


class ClusterError(RuntimeError):
    """The cluster could not start, or was misused; the message names the node."""


@dataclass
class _NodeProcess:
    node: Node
    reservation: PortReservation
    log_file: Path
    scratch_dir: Path | None
    process: Any = None
    paused: bool = False


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class LocalCluster:
    """One real ``tf.distribute.Server`` process per node of ``spec``.

    Args:
        spec: a resource spec whose addresses are all loopback.
        log_dir: where per-node logs go (default: a temporary directory named after this
            process, removed on close, on SIGTERM, or once stale: :mod:`cluster_sim.tempdirs`).
        private_scratch: give each node its own empty working directory, to simulate
            hosts that share no filesystem (``scratch_dir(node)``; the node also sees it
            as ``$CLUSTER_SIM_SCRATCH_DIR``).
        scratch_root: where private scratch directories are made (default: temporary).
        operation_timeout_s: the operation timeout of :meth:`session_config`.
        startup_timeout_s: how long ``start()`` waits for the nodes.
        launcher: fork the nodes from this :class:`~cluster_sim.launcher.NodeLauncher`'s
            template, which has imported TensorFlow already, instead of spawning each
            afresh (for callers that start many clusters; a forked node is the
            template's child, not this process's). Its ``deterministic`` must match.
        deterministic: run the nodes under the determinism settings of
            :mod:`cluster_sim.determinism`, and give them to :meth:`session_config`:
            what bitwise comparisons (the conformance suite) need. Off by default: a
            user's training program runs under TensorFlow's defaults (unseeded random
            ops such as Dropout are refused under determinism).
    """

    def __init__(
        self,
        spec: ResourceSpec,
        *,
        log_dir: str | Path | None = None,
        private_scratch: bool = False,
        scratch_root: str | Path | None = None,
        operation_timeout_s: float = 20.0,
        startup_timeout_s: float = 120.0,
        launcher: NodeLauncher | None = None,
        deterministic: bool = False,
    ):
        for node in spec.nodes:
            if not is_loopback(node.address):
                raise SpecError(f"{spec.source}: node {node.task_index} ({node.address}) is not a loopback address")
        if launcher is not None and launcher.deterministic != deterministic:
            raise ValueError(
                f"LocalCluster(deterministic={deterministic}) cannot use a NodeLauncher "
                f"with deterministic={launcher.deterministic}"
            )
        self.spec = spec
        self.deterministic = deterministic
        self.operation_timeout_s = operation_timeout_s
        self.startup_timeout_s = startup_timeout_s
        self._user_log_dir = Path(log_dir) if log_dir else None
        self._private_scratch = private_scratch or scratch_root is not None
        self._scratch_root = Path(scratch_root) if scratch_root else None
        self._temp_dirs: list[Path] = []
        self._nodes: list[_NodeProcess] = []
        self._context = multiprocess.get_context("spawn")
        self._launcher = launcher
        self._started = False
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------

    def start(self, attempts: int = 3) -> LocalCluster:
        """Start every node and verify every device; idempotent."""
        if self._closed:
            raise ClusterError("this LocalCluster is closed; create a new one")
        if self._started:
            return self
        atexit.register(self.close)
        for attempt in range(attempts):
            try:
                self._start_once()
                self._started = True
                return self
            except ClusterError as err:
                self._stop_all()
                if _BIND_FAILURE not in str(err) or attempt == attempts - 1:
                    self._cleanup_dirs()
                    atexit.unregister(self.close)
                    raise
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        log_dir = self._user_log_dir or self._make_temp_dir("logs")
        log_dir.mkdir(parents=True, exist_ok=True)
        scratch_root = None
        if self._private_scratch:
            scratch_root = self._scratch_root or self._make_temp_dir("scratch")
        self._nodes = []
        for node in self.spec.nodes:
            scratch = None
            if scratch_root is not None:
                scratch = Path(scratch_root) / f"node{node.task_index}-{node.address}"
                scratch.mkdir(parents=True, exist_ok=True)
            self._nodes.append(
                _NodeProcess(
                    node=node,
                    reservation=reserve_port(node.address),
                    log_file=log_dir / f"node{node.task_index}-{node.address}.log",
                    scratch_dir=scratch,
                )
            )
        pending = {self._spawn(entry): entry for entry in self._nodes}
        self._await_ready(pending)
        self._check_all_devices()

    def _make_temp_dir(self, kind: str) -> Path:
        path = owned_temp_dir("cluster_sim", kind)
        self._temp_dirs.append(path)
        return path

    def _spawn(self, entry: _NodeProcess):
        receiver, sender = self._context.Pipe(duplex=False)
        node_args = (
            self.cluster_def, JOB_NAME, entry.node.task_index, entry.node.num_devices,
            str(entry.log_file), str(entry.scratch_dir) if entry.scratch_dir else None,
            self.deterministic,
        )
        if self._launcher is not None:
            process = self._launcher.launch(node_args, sender)
        else:
            process = self._context.Process(
                target=run_node, args=(*node_args, os.getpid(), sender),
                name=f"cluster_sim-node{entry.node.task_index}", daemon=True,
            )
            with main_module_hidden():
                process.start()
        sender.close()
        entry.process = process
        entry.paused = False
        return receiver

    def _await_ready(self, pending: dict) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                entry = next(iter(pending.values()))
                raise self._node_error(entry, f"did not start within {self.startup_timeout_s:g} s")
            for receiver in wait_for_connections(list(pending), timeout=min(remaining, 1.0)):
                entry = pending.pop(receiver)
                try:
                    status, _, detail = receiver.recv()
                except EOFError:
                    raise self._node_error(entry, "exited before reporting") from None
                finally:
                    receiver.close()
                if status != "ready":
                    raise self._node_error(entry, f"failed to start:\n{detail}")
            for receiver, entry in list(pending.items()):
                if not entry.process.is_alive() and not receiver.poll():
                    code = entry.process.exitcode
                    raise self._node_error(entry, "exited before reporting" if code is None
                                           else f"exited with code {code} before reporting")

    def _node_error(self, entry: _NodeProcess, what: str) -> ClusterError:
        node = entry.node
        return ClusterError(
            f"node {node.task_index} ({node.address}) {what}\n"
            f"--- last lines of {entry.log_file} ---\n{_tail(entry.log_file)}"
        )

    def _check_all_devices(self) -> None:
        """Run one op on every device of every node through the chief."""
        import tensorflow as tf

        expected = self.all_devices
        try:
            ran = self_check(tf, self.target, expected)
        except tf.errors.OpError as err:
            raise ClusterError(f"cluster-wide check through the chief failed: {err.message}") from err
        ran_short = {d.replace("/replica:0", "") for d in ran}
        for entry in self._nodes:
            for device in self.devices(entry.node):
                if device not in ran_short:
                    raise self._node_error(entry, f"ran no op on {device} in the cluster-wide check")

    def close(self) -> None:
        """Stop every node, release ports, remove temporary directories; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop_all()
        self._cleanup_dirs()
        atexit.unregister(self.close)

    def _stop_all(self) -> None:
        for entry in self._nodes:
            self._stop_process(entry)
            entry.reservation.release()

    @staticmethod
    def _stop_process(entry: _NodeProcess) -> None:
        process = entry.process
        if process is not None and process.is_alive():
            os.kill(process.pid, signal.SIGKILL)  # works on stopped processes too
        if process is not None:
            process.join(timeout=10)

    def _cleanup_dirs(self) -> None:
        for path in self._temp_dirs:
            remove_owned(path)
        self._temp_dirs = []

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- what the cluster looks like ------------------------------------------------

    def _entry(self, node: Node | str | int) -> _NodeProcess:
        if not self._nodes:
            raise ClusterError("the cluster is not started")
        try:
            wanted = self.spec.node(node)
        except SpecError as err:
            raise ClusterError(str(err)) from None
        return self._nodes[wanted.task_index]

    @property
    def cluster_def(self) -> dict[str, list[str]]:
        return self.spec.cluster_def({e.node.address: e.reservation.port for e in self._nodes})

    @property
    def cluster_spec(self) -> dict[str, list[str]]:
        """The cluster as AutoDist's ``Cluster.cluster_spec`` gives it (job -> addresses,
        for programs that read it); ``tf.train.ClusterSpec(cluster.cluster_spec)`` is
        TensorFlow's form."""
        return self.cluster_def

    def get_local_address(self) -> str:
        """The address of the host the client runs on, the chief's (AutoDist's
        ``Cluster.get_local_address``: one client drives the whole cluster)."""
        return self.spec.chief.address

    @property
    def target(self) -> str:
        return self.target_of(0)

    def target_of(self, node: Node | str | int) -> str:
        entry = self._entry(node)
        return f"grpc://{entry.node.address}:{entry.reservation.port}"

    def devices(self, node: Node | str | int) -> list[str]:
        return [d.tf_name for d in self.spec.devices_of(self._entry(node).node)]

    @property
    def all_devices(self) -> list[str]:
        return [d for entry in self._nodes for d in self.devices(entry.node)]

    def log_file(self, node: Node | str | int) -> Path:
        return self._entry(node).log_file

    def scratch_dir(self, node: Node | str | int) -> Path | None:
        return self._entry(node).scratch_dir

    def pid(self, node: Node | str | int) -> int:
        return self._entry(node).process.pid

    def is_alive(self, node: Node | str | int) -> bool:
        process = self._entry(node).process
        return process is not None and process.is_alive()

    def is_paused(self, node: Node | str | int) -> bool:
        """True between :meth:`pause` and :meth:`resume` of the node."""
        return self._entry(node).paused

    def tf_config(self, node: Node | str | int) -> dict[str, Any]:
        """The ``TF_CONFIG`` of one node."""
        entry = self._entry(node)
        return {"cluster": self.cluster_def, "task": {"type": JOB_NAME, "index": entry.node.task_index}}

    def describe(self) -> dict[str, Any]:
        """The cluster as plain data (what ``cluster-sim up`` prints)."""
        return {
            "cluster": self.cluster_def,
            "target": self.target,
            "nodes": [
                {
                    "address": e.node.address,
                    "task": e.node.task_index,
                    "chief": e.node.chief,
                    "target": self.target_of(e.node),
                    "pid": e.process.pid if e.process else None,
                    "devices": {d.name: d.tf_name for d in self.spec.devices_of(e.node)},
                    "log_file": str(e.log_file),
                    "scratch_dir": str(e.scratch_dir) if e.scratch_dir else None,
                }
                for e in self._nodes
            ],
        }

    def session_config(self, **overrides: Any):
        """The ConfigProto for sessions on this cluster: the operation timeout, and the
        determinism settings if the cluster is ``deterministic``."""
        fields = {"operation_timeout_in_ms": int(self.operation_timeout_s * 1000), **overrides}
        return determinism.session_config(self.deterministic, **fields)

    # -- faults ---------------------------------------------------------------------

    def kill(self, node: Node | str | int) -> None:
        """SIGKILL the node's process (its variables are lost)."""
        entry = self._entry(node)
        self._stop_process(entry)

    def pause(self, node: Node | str | int) -> None:
        """SIGSTOP the node: it stops answering but keeps its state."""
        entry = self._entry(node)
        os.kill(entry.process.pid, signal.SIGSTOP)
        entry.paused = True

    def resume(self, node: Node | str | int) -> None:
        """SIGCONT a paused node."""
        entry = self._entry(node)
        os.kill(entry.process.pid, signal.SIGCONT)
        entry.paused = False

    def restart(self, node: Node | str | int, attempts: int = 5) -> None:
        """Replace the node's process by a fresh one (same address, task and port).

        The old process's listening socket can outlive its exit by some milliseconds
        (measured: up to 0.15 s after a SIGKILL), so a fresh server that cannot bind
        the port yet is started again, after a short wait."""
        entry = self._entry(node)
        self._stop_process(entry)
        for attempt in range(attempts):
            try:
                self._await_ready({self._spawn(entry): entry})
                return
            except ClusterError as err:
                if _BIND_FAILURE not in str(err) or attempt == attempts - 1:
                    raise
                self._stop_process(entry)
                time.sleep(0.1 * (attempt + 1))

    @property
    def healthy(self) -> bool:
        """True when every node process is alive and none is paused."""
        return self._started and all(
            e.process is not None and e.process.is_alive() and not e.paused for e in self._nodes
        )

    def reset(self, containers: list[str] | None = None) -> None:
        """Clear resource containers on every server (all of them when ``containers`` is None).

        TensorFlow's reset call has no timeout of its own and blocks for ever when a
        node does not answer, so it refuses an unhealthy cluster and runs in a helper
        thread bounded by the operation timeout.
        """
        import tensorflow as tf

        if not self.healthy:
            raise ClusterError("cannot reset: a node is dead or paused (restart or resume it first)")
        outcome: list[BaseException] = []

        def reset_call() -> None:
            try:
                tf.compat.v1.Session.reset(self.target, containers, config=self.session_config())
            except BaseException as error:  # reported in the calling thread
                outcome.append(error)

        worker = threading.Thread(target=reset_call, name="cluster-reset", daemon=True)
        worker.start()
        worker.join(self.operation_timeout_s)
        if worker.is_alive():
            raise ClusterError(f"reset did not finish within {self.operation_timeout_s} s")
        if outcome:
            raise outcome[0]

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._started else "not started"
        return f"LocalCluster({json.dumps(self.spec.cluster_def(0)[JOB_NAME])}, {state})"
