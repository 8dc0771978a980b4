"""The user-facing entry point, with AutoDist's API.

```python
ad = AutoDist(resource_spec_file="spec.yml", strategy_builder=PartitionedPS())
with tf.Graph().as_default(), ad.scope():
    ...  # placeholders, variables, loss, optimizer.apply_gradients -> train_op
    sess = ad.create_distributed_session()
    sess.run(train_op, feed_dict={x: batch})
```

Where the cluster comes from: if every node of the resource spec is a loopback address,
``AutoDist`` starts an embedded :class:`cluster_sim.LocalCluster` on the first session and
stops it on :meth:`AutoDist.close`, at the end of a ``with AutoDist(...)`` block, or at
interpreter exit. ``cluster=`` reuses a running cluster instead (it is left running).
A spec naming real hosts connects to servers started there with ``cluster-sim node``
on ``port``; so does ``real_hosts=True`` for a spec of loopback addresses (nodes
rehearsed on one machine, each ``cluster-sim node`` on its own address and port). On a
cluster it did not start (given, or real hosts), :meth:`AutoDist.close` frees this
instance's variables on every node.

Faults, in seconds rather than at the operation timeout: creating a session first checks
that every node is there (:meth:`AutoDist.create_distributed_session`), and a call whose
chief node dies fails within about 1.5 s (:class:`cluster_sim.reachability.ChiefWatch`).

One client drives every node: unlike AutoDist, which starts the user's script again on
every worker node (``AUTODIST_WORKER`` set there), saver_impl runs the script once, so
:data:`IS_AUTODIST_CHIEF` is true unless the user sets ``AUTODIST_WORKER`` themselves.
"""

from __future__ import annotations

import atexit
import contextlib
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from cluster_sim import JOB_NAME, LocalCluster, ResourceSpec, is_loopback
from cluster_sim.determinism import session_config
from cluster_sim.reachability import ANSWER_TIMEOUT_S, CONNECT_TIMEOUT_S, answer_problems, connection_problems
from cluster_sim.spec import DEFAULT_SERVER_PORT
from saver_impl.capture import CaptureLog, capture_optimizer_steps
from saver_impl.const import ENV
from saver_impl.errors import AutoDistError
from saver_impl.graph.aggregation import GradientAggregation
from saver_impl.graph.analysis import GraphItem
from saver_impl.graph.transform import DistributedGraph
from saver_impl.session import DistributedSession
from saver_impl.strategy import PSLoadBalancing, Strategy, StrategyBuilder

IS_AUTODIST_WORKER = bool(ENV.AUTODIST_WORKER.val)
#: True in the process that builds the graph and saves: the only process saver_impl runs.
IS_AUTODIST_CHIEF = not IS_AUTODIST_WORKER

_default: list[AutoDist] = []


def get_default_autodist() -> AutoDist | None:
    """The most recently created :class:`AutoDist` of this process that is not closed."""
    return _default[-1] if _default else None


class AutoDist:
    """Distributed training of a single-device graph, AutoDist style.

    Args:
        resource_spec_file: path of an AutoDist resource spec (YAML).
        strategy_builder: a builder from :mod:`saver_impl.strategy` (default:
            ``PSLoadBalancing()``, as AutoDist's).
        resource_spec: a :class:`cluster_sim.ResourceSpec` instead of a file.
        strategy: a ready :class:`~saver_impl.strategy.Strategy` (for example written by
            hand) instead of a builder.
        cluster: a running :class:`cluster_sim.LocalCluster` to use.
        real_hosts: connect to servers already running on the spec's hosts (``cluster-sim
            node`` on each) and never start an embedded cluster, even when every address
            of the spec is loopback: how a multi-host spec is rehearsed on one machine
            (distinct loopback addresses and per-node ``port`` fields). Implied by any
            address that is not loopback.
        port: the servers' port on real hosts, for nodes without a ``port`` of their own.
        operation_timeout_s: a step that waits longer than this on a node fails (default:
            a given cluster's own operation timeout, else 60 s).
        aggregation: how the replicas' gradients are combined, a
            :class:`~saver_impl.graph.aggregation.GradientAggregation` (default: the
            equivalence contract's rule).
    """

    def __init__(
        self,
        resource_spec_file: str | None = None,
        strategy_builder: StrategyBuilder | None = None,
        *,
        resource_spec: ResourceSpec | None = None,
        strategy: Strategy | None = None,
        cluster: LocalCluster | None = None,
        real_hosts: bool = False,
        port: int = DEFAULT_SERVER_PORT,
        operation_timeout_s: float | None = None,
        aggregation: GradientAggregation | None = None,
    ):
        if resource_spec is None:
            if resource_spec_file is None:
                if cluster is None:
                    raise AutoDistError("AutoDist needs resource_spec_file, resource_spec or cluster")
                resource_spec = cluster.spec
            else:
                resource_spec = ResourceSpec.from_file(resource_spec_file, simulate=False)
        if real_hosts and cluster is not None:
            raise AutoDistError("give either cluster= (a simulated cluster) or real_hosts=True, not both")
        if strategy is not None and strategy_builder is not None:
            raise AutoDistError("give either strategy_builder or strategy, not both")
        if not resource_spec.replica_devices:
            raise AutoDistError(
                f"resource spec {resource_spec.source}: no replica device (no node has a "
                "gpu or a cpu entry)"
            )
        self._resource_spec = resource_spec
        # AutoDist's default builder, also kept where AutoDist programs read it.
        self._strategy_builder = None if strategy is not None else (strategy_builder or PSLoadBalancing())
        self._strategy = strategy
        self._aggregation = aggregation
        self._cluster = cluster
        self._owns_cluster = False
        self._real_hosts = real_hosts
        self._port = port
        if operation_timeout_s is None:  # the suite's contract: a given cluster's session_config() holds
            operation_timeout_s = cluster.operation_timeout_s if cluster is not None else 60.0
        self._timeout_ms = int(operation_timeout_s * 1000)
        self._container = f"autodist_{uuid.uuid4().hex[:12]}"
        self._graph = None
        self._log: CaptureLog | None = None
        self._sessions: list[DistributedSession] = []
        self.strategy: Strategy | None = None
        self.graph_item: GraphItem | None = None
        self.dist: DistributedGraph | None = None  # the transformed graph and where each variable lives
        self._closed = False
        self._function: Callable[..., Any] | None = None
        atexit.register(self.close)
        _default.append(self)

    @property
    def resource_spec(self) -> ResourceSpec:
        return self._resource_spec

    # -- building ---------------------------------------------------------------------

    @contextlib.contextmanager
    def scope(self) -> Iterator[AutoDist]:
        """Build the original graph inside this context (it records the optimizer steps:
        one per ``apply_gradients`` call, several optimizers grouped in one train op)."""
        self._graph = tf.compat.v1.get_default_graph()
        with capture_optimizer_steps(self._graph) as log:
            self._log = log
            yield self

    @property
    def is_local(self) -> bool:
        return all(is_loopback(node.address) for node in self.resource_spec.nodes)

    @property
    def cluster(self) -> LocalCluster | None:
        return self._cluster

    def _target(self) -> str:
        if self._cluster is None and self.is_local and not self._real_hosts:
            self._cluster = LocalCluster(self.resource_spec).start()
            self._owns_cluster = True
            # atexit runs last-registered first, and the cluster has just registered its
            # own close: register ours again, so that at exit the sessions close while
            # the nodes still answer (else each close waits out the operation timeout).
            atexit.unregister(self.close)
            atexit.register(self.close)
        if self._cluster is not None:
            return self._cluster.target
        return self.resource_spec.target(self._port)

    def _session_config(self):
        """A given cluster's own session settings (the conformance suite's clusters carry
        the determinism settings its comparisons need); else TensorFlow's defaults."""
        if self._cluster is not None:
            return self._cluster.session_config(operation_timeout_in_ms=self._timeout_ms)
        return session_config(deterministic=False, operation_timeout_in_ms=self._timeout_ms)

    def _tf_device(self, logical: str) -> str:
        return self.resource_spec.device(logical).tf_name

    def create_distributed_session(self) -> DistributedSession:
        """Transform the scope's graph, start the cluster if needed, initialize variables."""
        if self._closed:
            raise AutoDistError("this AutoDist is closed")
        if self._log is None:
            raise AutoDistError("build the model inside ad.scope() before creating a session")
        steps = self._log.steps
        if not steps:
            raise AutoDistError(
                "the graph has no optimizer step: build the train op with "
                "optimizer.apply_gradients(...) or optimizer.minimize(...) inside ad.scope()"
            )
        self.graph_item = GraphItem(self._graph, steps)
        infos = self.graph_item.variable_infos()
        if self._strategy is not None:
            strategy = self._strategy
        else:
            assert self._strategy_builder is not None  # set whenever no strategy is given
            strategy = self._strategy_builder.build(infos, self.resource_spec)
        strategy.validate(
            infos,
            [d.name for d in self.resource_spec.replica_devices],
            [d.name for d in self.resource_spec.ps_devices],
        )
        self.strategy = strategy
        self.dist = DistributedGraph(
            self.graph_item, strategy, self._tf_device, self._container, self._aggregation
        )
        target = self._target()
        self._check_nodes(target)
        session = DistributedSession(self.dist, target, self._session_config())
        self._sessions.append(session)
        return session

    def _check_nodes(self, target: str) -> None:
        """Raise ``tf.errors.UnavailableError`` naming every node that is not there.

        TensorFlow would wait for the operation timeout and report ``Deadline Exceeded``
        without naming the node. A simulated cluster knows its processes (dead or
        paused). Servers started elsewhere get a TCP connection each (at most
        :data:`~cluster_sim.reachability.CONNECT_TIMEOUT_S`), then those that accepted
        one op each through the chief, if it accepted (at most
        :data:`~cluster_sim.reachability.ANSWER_TIMEOUT_S`): a session on nodes that
        are not there fails within 5 s. Nothing is known of the other nodes when the
        chief fails, so only the chief is named then.
        """
        nodes = self.resource_spec.nodes
        if self._cluster is not None:
            cluster = self._cluster
            problems = {n.task_index: "its process is gone" for n in nodes if not cluster.is_alive(n)}
            problems.update({n.task_index: "it is paused (SIGSTOP)" for n in nodes if cluster.is_paused(n)})
            remedy = "Restart it (LocalCluster.restart) or resume it (LocalCluster.resume), or use another cluster."
        else:
            endpoints = [(n.address, n.server_port(self._port)) for n in nodes]
            problems = connection_problems(endpoints, CONNECT_TIMEOUT_S)
            chief = self.resource_spec.chief.task_index
            if chief not in problems:  # the others are asked through the chief
                reachable = [n.task_index for n in nodes if n.task_index not in problems]
                answers = answer_problems(target, JOB_NAME, chief, reachable, ANSWER_TIMEOUT_S)
                problems.update({chief: answers[chief]} if chief in answers else answers)
            remedy = ("Start (or resume) its server there (" + "; ".join(
                f"`cluster-sim node {self.resource_spec.source} --address {nodes[i].address}`" for i in sorted(problems)
            ) + "), or correct the node's address or port in the spec.")
        if not problems:
            return
        lines = [f"  {nodes[i].address} (task {i}{', the chief' if nodes[i].chief else ''}, at {self._where(nodes[i])})"
                 f": {problems[i]}" for i in sorted(problems)]
        raise tf.errors.UnavailableError(None, None, (
            f"cannot create the distributed session: {len(problems)} of {len(nodes)} node(s) of "
            f"{self.resource_spec.source} not there (TensorFlow would wait for the operation timeout, "
            f"{self._timeout_ms / 1000:g} s, without naming them):\n" + "\n".join(lines) + f"\n{remedy}"
        ))

    def _where(self, node) -> str:
        if self._cluster is not None:
            return self._cluster.target_of(node).split("://", 1)[-1]
        return f"{node.address}:{node.server_port(self._port)}"

    def function(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """AutoDist's ``autodist.function``: ``train = ad.function(step)``, then
        ``train(batch_x, batch_y)`` runs one distributed step and returns ``step``'s fetches.

        The first call (inside ``ad.scope()``) builds the graph: every numpy array
        argument becomes a placeholder whose first dimension is ``None`` (a batch, split
        across replicas), ``step`` is called with those to return its fetches, and the
        distributed session is created. Every call feeds its arrays and runs the fetches.
        One function per AutoDist, as in AutoDist.
        """
        built: dict[str, Any] = {}

        def run(*args: Any, **kwargs: Any) -> Any:
            if not built:
                if self._function is not None:
                    raise AutoDistError("one AutoDist runs one function; create another AutoDist for another")
                self._function = fn
                built["placeholders"] = {
                    key: tf.compat.v1.placeholder(tf.as_dtype(value.dtype), (None, *value.shape[1:]))
                    for key, value in _array_arguments(args, kwargs).items()
                }
                positional = [built["placeholders"].get(i, a) for i, a in enumerate(args)]
                named = {k: built["placeholders"].get(k, v) for k, v in kwargs.items()}
                built["fetches"] = fn(*positional, **named)
                built["session"] = self.create_distributed_session()
            arrays = _array_arguments(args, kwargs)
            feed = {built["placeholders"][key]: value for key, value in arrays.items()}
            return built["session"].run(built["fetches"], feed)

        return run

    # -- teardown ---------------------------------------------------------------------

    def close(self) -> None:
        """Close sessions, free this instance's variables on every node, stop an
        embedded cluster."""
        if self._closed:
            return
        self._closed = True
        if self in _default:
            _default.remove(self)
        if self._sessions and not self._owns_cluster:
            self._free_container()
        # An unhealthy simulated cluster cannot finish a close (a dead chief, a paused
        # node): start it and go on, rather than wait for the operation timeout.
        wait = self._cluster is None or self._cluster.healthy
        for session in self._sessions:
            session.close(wait=wait)
        if self._cluster is not None and self._owns_cluster:
            self._cluster.close()
        atexit.unregister(self.close)

    def _free_container(self) -> None:
        """Delete this instance's variables from a cluster it does not own (a given one, or
        real hosts' servers, which outlive the program); warn if that is impossible.

        The variables are destroyed one by one through a session: TensorFlow's container
        reset would also abort every other session of the cluster's master, another
        program's included. A given cluster with a dead or paused node is not waited for;
        on real hosts the wait is bounded by the operation timeout.
        """
        if self._cluster is not None and not self._cluster.healthy:
            warnings.warn(f"could not free container {self._container}: a node is dead or paused",
                          RuntimeWarning, stacklevel=2)
            return
        if any(session.chief_lost for session in self._sessions):
            warnings.warn(f"could not free container {self._container}: the chief node is gone (its variables "
                          "went with it; the other nodes' stay until they restart)", RuntimeWarning, stacklevel=2)
            return
        try:
            self._sessions[-1].free_variables()
        except tf.errors.OpError as error:
            warnings.warn(f"could not free container {self._container}: {error.message}",
                          RuntimeWarning, stacklevel=2)

    def __enter__(self) -> AutoDist:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _array_arguments(args: tuple, kwargs: dict) -> dict[int | str, np.ndarray]:
    """The numpy arrays among a call's arguments, by position or keyword."""
    arrays: dict[int | str, np.ndarray] = {i: a for i, a in enumerate(args) if isinstance(a, np.ndarray)}
    arrays.update({k: v for k, v in kwargs.items() if isinstance(v, np.ndarray)})
    return arrays
