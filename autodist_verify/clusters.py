"""A pool of running simulated clusters, shared by every example of a test session.

Starting a cluster costs seconds (one TensorFlow import per node), so clusters are
started on first use, kept, and reused by every case with the same resource spec. At
most ``capacity`` stay up; the least recently used one is stopped to make room. The
pool's nodes are forked from one :class:`cluster_sim.launcher.NodeLauncher` template,
so a new cluster does not import TensorFlow again.
Implementations free their own variables when their ``AutoDist`` closes; the pool
resets a cluster's containers before handing it out again anyway. A property that
breaks its cluster (kills or pauses a node) takes a :meth:`ClusterPool.dedicated` one
instead, shared with nobody and stopped when it is done.
"""

from __future__ import annotations

import contextlib
import json
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

from cluster_sim import LocalCluster, ResourceSpec
from cluster_sim.launcher import NodeLauncher


class ClusterPool:
    """Running :class:`cluster_sim.LocalCluster` objects keyed by their resource spec."""

    def __init__(self, capacity: int = 3, operation_timeout_s: float = 60.0):
        self.capacity = capacity
        self.operation_timeout_s = operation_timeout_s
        self._clusters: OrderedDict[str, LocalCluster] = OrderedDict()
        self._launcher = NodeLauncher(deterministic=True)

    def get(self, spec: Mapping[str, Any]) -> LocalCluster:
        """A healthy running cluster for ``spec`` (a resource spec as data)."""
        key = json.dumps(spec, sort_keys=True)
        cluster = self._clusters.pop(key, None)
        if cluster is not None and not cluster.healthy:
            cluster.close()
            cluster = None
        if cluster is None:
            while len(self._clusters) >= self.capacity:
                _, oldest = self._clusters.popitem(last=False)
                oldest.close()
            resource_spec = ResourceSpec.from_dict(spec, source="generated cluster")
            cluster = LocalCluster(resource_spec, operation_timeout_s=self.operation_timeout_s,
                                   launcher=self._launcher, deterministic=True).start()
        else:
            cluster.reset()
        self._clusters[key] = cluster
        return cluster

    @contextlib.contextmanager
    def dedicated(self, spec: Mapping[str, Any], operation_timeout_s: float) -> Iterator[LocalCluster]:
        """A new cluster for ``spec`` that no other example shares, with its own
        operation timeout, its nodes forked from the pool's template; stopped on exit."""
        resource_spec = ResourceSpec.from_dict(spec, source="generated cluster")
        cluster = LocalCluster(resource_spec, operation_timeout_s=operation_timeout_s, launcher=self._launcher,
                               deterministic=True).start()
        try:
            yield cluster
        finally:
            cluster.close()

    def close(self) -> None:
        """Stop every cluster of the pool and the node template."""
        while self._clusters:
            _, cluster = self._clusters.popitem()
            cluster.close()
        self._launcher.close()

    def __enter__(self) -> ClusterPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
