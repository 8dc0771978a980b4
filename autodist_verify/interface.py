"""The implementation interface, owned by the suite: what ``--impl MODULE`` must provide.

The suite reaches an implementation only through these names; ``saver_impl`` is one
implementation of them, and a wrapper module that plants a bug is another. The
protocols are documentation that type checkers can hold an implementation to; the
suite checks the required names when it loads a module
(:func:`autodist_verify.implementation.load_implementation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

import numpy as np

from autodist_verify.strategy_format import Strategy


class DistributedSession(Protocol):
    """What ``create_distributed_session()`` returns: ``tf.compat.v1.Session``'s ``run``
    with the *original* graph's fetches and feeds (a batch split in order across the
    replicas as ``np.array_split`` splits it), and ``graph``, the original graph."""

    @property
    def graph(self) -> Any: ...

    def run(self, fetches: Any, feed_dict: Any = None, options: Any = None, run_metadata: Any = None) -> Any: ...

    def close(self) -> None: ...


@runtime_checkable
class ReportsStoredCopies(Protocol):
    """Optional: a session that reports every stored part and mirror of every variable,
    as ``{name: [(numpy index of the part in the full variable, value), ...]}``. The
    suite then checks every copy after a restore, and learns which variables were split
    into parts (copies at different indices)."""

    def stored_copies(self) -> dict[str, list[tuple[tuple[Any, ...], np.ndarray]]]: ...


@runtime_checkable
class ReportsCheckpointPlan(Protocol):
    """Optional: a Saver that reports the plan it saves by, as plain rows: ``key``,
    ``slice`` (TensorFlow's slice spec, "" when whole), ``writer`` (the device that
    writes it), ``sources`` and ``checks`` (devices of the copies it reads and compares).
    ``autodist-verify inspect --plan`` prints it beside the checkpoint."""

    def checkpoint_plan(self, sess: Any) -> list[dict[str, Any]]: ...


class AutoDist(Protocol):
    """AutoDist's entry point. The suite calls ``AutoDist(cluster=LocalCluster,
    strategy_builder=BUILDER())`` or ``AutoDist(cluster=..., strategy=Strategy)`` with a
    hand-made :class:`~autodist_verify.strategy_format.Strategy`, builds the original
    graph inside ``scope()`` (the train op from ``optimizer.apply_gradients``), then
    creates the session; ``close()`` frees what the instance holds on the cluster.

    A graph feature the suite marks optional (``model_spec.optional_features``: TF1
    reference variables) may be declined by raising ``NotImplementedError`` from
    ``scope()`` or ``create_distributed_session()``; the suite then reports the case not
    applicable. Declining anything else is a failure.

    Sessions on a given cluster must use ``cluster.session_config()`` (a
    ``tf.compat.v1.ConfigProto``), its operation timeout included: the suite's clusters
    carry there the determinism settings its bitwise comparisons rely on, and
    ``crash_consistency`` gives a cluster a short operation timeout that bounds how long
    a call may wait for a node that is gone or stopped."""

    def __init__(self, resource_spec_file: str | None = None, strategy_builder: Any = None, *,
                 strategy: Strategy | None = None, cluster: Any = None) -> None: ...

    def scope(self) -> AbstractContextManager[Any]: ...

    def create_distributed_session(self) -> DistributedSession: ...

    def close(self) -> None: ...


class Saver(Protocol):
    """``tf.compat.v1.train.Saver``'s constructor and methods. From a distributed session
    ``save`` writes the original graph's checkpoint (TensorFlow's keys, shapes, dtypes;
    logical values), updates the state file and writes the original graph's ``.meta``;
    ``restore`` writes every part and every mirror."""

    def save(self, sess: Any, save_path: str, global_step: Any = None, *args: Any, **kwargs: Any) -> str | None: ...

    def restore(self, sess: Any, save_path: str) -> None: ...


class SavedModelBuilder(Protocol):
    """``tf.compat.v1.saved_model.Builder``'s interface. It exports the original graph
    and records the train op in the ``saved_model_train_op`` collection."""

    def __init__(self, export_dir: str) -> None: ...

    def add_meta_graph_and_variables(self, sess: Any, tags: Sequence[str], *args: Any, **kwargs: Any) -> None: ...

    def save(self, as_text: bool = False) -> bytes: ...


class StrategyModule(Protocol):
    """``MODULE.strategy``: AutoDist's builders by name (``PS()``, ``PartitionedPS()``,
    ``PSLoadBalancing()``, ``UnevenPartitionedPS()``, ``AllReduce()``, ``PartitionedAR()``,
    ``Parallax()``), each an object the implementation's ``AutoDist`` accepts as
    ``strategy_builder``."""

    def __getattr__(self, builder: str) -> Any: ...


# The names an implementation module must expose, besides ``strategy``.
REQUIRED: Sequence[str] = ("AutoDist", "Saver", "SavedModelBuilder")
