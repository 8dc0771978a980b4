"""Faults the ``crash_consistency`` property injects into a simulated cluster.

A case's ``fault`` (:mod:`autodist_verify.case`) is plain data: a node of the case's
cluster by task index (the chief is 0), a kind and a moment::

    "fault": {"node": 1, "kind": "pause", "moment": "save_data"}

Kinds:

* ``kill``: SIGKILL of the node's process; its variables are lost.
* ``pause``: SIGSTOP of the node's process until the fault is healed, which is after
  the faulted call has waited out the operation timeout: the node keeps its state but
  does not answer.
* ``disk_full``: the host's writes fail past :data:`WRITE_LIMIT_BYTES` bytes per file.
  This is a file-size limit (``RLIMIT_FSIZE``, set with ``prlimit``, no root needed) on
  the node's process, and on the client's (this process) for the chief's host, where
  the client runs. A write past it fails with ``EFBIG`` ("File too large"; CPython
  ignores ``SIGXFSZ``, so the process lives on) where a full disk gives ``ENOSPC``: the
  same failed write, partway through the file, without filling a disk.

Moments, each one the suite can hit without a hook inside the implementation:

* ``step``: between training steps; the next step is the faulted call.
* ``save_data``: the node is faulted before ``save`` is called, so the save's data write
  needs a node that is gone, stopped, or whose writes fail partway (a data file cut
  at :data:`WRITE_LIMIT_BYTES`).
* ``save_after_data`` (``disk_full`` of the chief's host only): the nodes write the
  data, then the client's own writes fail (the MetaGraph, the checkpoint state file).
  A kill or pause of a node at that moment would need a hook between the
  implementation's data write and its bookkeeping, so it is not drawn.
* ``restore``: the node is faulted in a fresh session, before ``restore`` is called.

Healing restarts a killed or paused node (:meth:`cluster_sim.LocalCluster.restart`; a
paused node is not resumed, since it could then finish a write of the aborted call at
any later time) and lifts a write limit.
"""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Iterator, Mapping
from typing import Any

import psutil

from cluster_sim import LocalCluster

KILL, PAUSE, DISK_FULL = "kill", "pause", "disk_full"
KINDS = (KILL, PAUSE, DISK_FULL)

# Moment -> how the matrix's feature labels and messages name it.
MOMENTS = {"step": "between steps", "save_data": "save (data write)",
           "save_after_data": "save (after the data write)", "restore": "restore"}
MOMENTS_OF = {KILL: ("step", "save_data", "restore"), PAUSE: ("step", "save_data", "restore"),
              DISK_FULL: ("save_data", "save_after_data")}
# Moments that only the chief's host has: the client's writes.
CHIEF_ONLY = ("save_after_data",)

# Small enough that every checkpoint file is cut short, large enough that some of its
# bytes are written first.
WRITE_LIMIT_BYTES = 16


class FaultInjector:
    """Injects one fault into a running cluster and heals it; remembers the pid of every
    node process the cluster ran meanwhile (:attr:`pids`), restarted ones included."""

    def __init__(self, cluster: LocalCluster, fault: Mapping[str, Any]):
        self.cluster = cluster
        self.node = int(fault["node"])
        self.kind = str(fault["kind"])
        self.moment = str(fault["moment"])
        self.chief = cluster.spec.nodes[self.node].chief
        self.pids = {cluster.pid(task) for task in range(len(cluster.spec.nodes))}
        self._node_limit: tuple[int, int] | None = None  # the node's limit before the fault

    @property
    def description(self) -> str:
        """The fault in words: ``pause of the chief's node (0), save (data write)``."""
        who = f"the chief's node ({self.node})" if self.chief else f"node {self.node}"
        return f"{self.kind} of {who}, {MOMENTS[self.moment]}"

    def inject(self) -> None:
        """Fault the node: right before the faulted call."""
        if self.kind == KILL:
            self.cluster.kill(self.node)
        elif self.kind == PAUSE:
            self.cluster.pause(self.node)
        elif self.moment == "save_data":
            process = psutil.Process(self.cluster.pid(self.node))
            self._node_limit = process.rlimit(resource.RLIMIT_FSIZE)
            process.rlimit(resource.RLIMIT_FSIZE, (WRITE_LIMIT_BYTES, self._node_limit[1]))

    @contextlib.contextmanager
    def client_writes(self) -> Iterator[None]:
        """Around the faulted call: the client's writes fail too when the disk of the
        chief's host is full (the limit is this process's, so it is lifted right after)."""
        if self.kind != DISK_FULL or not self.chief:
            yield
            return
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (WRITE_LIMIT_BYTES, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    def heal(self) -> None:
        """Restart a killed or paused node; lift a node's write limit."""
        if self.kind in (KILL, PAUSE):
            self.cluster.restart(self.node)
            self.pids.add(self.cluster.pid(self.node))
        elif self._node_limit is not None:
            psutil.Process(self.cluster.pid(self.node)).rlimit(resource.RLIMIT_FSIZE, self._node_limit)
            self._node_limit = None
