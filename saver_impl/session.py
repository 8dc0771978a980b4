"""A session that takes the original graph's fetches and feeds and runs the distributed graph.

Feeds: a fed tensor whose first dimension is ``None`` in the original graph is a batch:
it is split along dimension 0 into R ordered pieces as ``np.array_split`` does (the first
``n % R`` pieces one example larger; an error if the batch has fewer than R examples).
Any other fed tensor (a learning rate, a keep probability) goes whole to every replica,
and so does a tensor that feeds the input pipeline (a dataset's placeholder). A tf.data
iterator's element is split the same way inside the graph (``graph/transform.py``).

Fetches, by what the original element is:

* the train op (the op that runs every optimizer step, such as ``tf.group`` of several
  optimizers' ops), a variable initializer, or ``global_variables_initializer()``: the
  distributed train op or initializer;
* an op or tensor of the input pipeline (an iterator's initializer or ``get_next``): its
  single copy (a ``get_next`` output is the whole global batch);
* a variable, or a read of one: its logical value (partitions reassembled, the master
  replica's mirror) as the step's computation saw it;
* an op or tensor of an optimizer's update (one optimizer's op alone included): its
  copy (the first part's, for a partitioned or mirrored variable); an op built after
  the session that runs after such ops (``tf.group(train_op, other_update)``) is copied
  once, as the optimizers' shared ops are;
* any other tensor is computed on every replica and combined: a floating-point scalar
  (a loss) is the mean over replicas (added in replica order, divided by R); a tensor
  whose first dimension is ``None`` (per-example outputs) is concatenated in replica
  order; anything else is the master replica's (replica 0) value.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.python.client.session import SessionInterface
from tensorflow.python.framework.indexed_slices import IndexedSlicesValue

from cluster_sim.reachability import ChiefWatch
from saver_impl.errors import AutoDistError
from saver_impl.graph.layout import VariableLayout
from saver_impl.graph.transform import DistributedGraph

_SINGLE, _MEAN, _CONCAT = "single", "mean", "concat"

class WatchedSession:
    """A ``tf.compat.v1.Session`` whose ``run`` goes through a :class:`ChiefWatch`;
    everything else is the session's own."""

    def __init__(self, session: Any, watch: ChiefWatch):
        self._session = session
        self._watch = watch

    def run(self, fetches, feed_dict=None, options=None, run_metadata=None):
        return self._watch.call("session.run", self._session.run, fetches, feed_dict=feed_dict, options=options,
                                run_metadata=run_metadata)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def close_session(session: Any, watch: ChiefWatch, wait: bool = True) -> None:
    """Close a ``tf.compat.v1.Session`` on the cluster. With ``wait`` False, or once the
    chief is known gone, the close is started and not waited for (it cannot finish
    before TensorFlow's deadline); an error closing is a warning, so teardown completes."""
    if not wait or watch.lost:
        threading.Thread(target=_close_quietly, args=(session,), name="autodist-close", daemon=True).start()
        return
    try:
        watch.call("closing the session", session.close)
    except tf.errors.OpError as err:
        warnings.warn(f"closing the distributed session: {err.message}", RuntimeWarning, stacklevel=3)


def _close_quietly(session: Any) -> None:
    try:
        session.close()
    except tf.errors.OpError:
        pass  # the cluster is going away: there is nobody left to tell


def _is_batch(tensor) -> bool:
    shape = tensor.shape
    return shape.rank is not None and shape.rank > 0 and shape[0] is None


class DistributedSession(SessionInterface):
    """Runs the distributed graph with the original graph's names and semantics.

    ``graph`` is the *original* graph, as the user built it (TensorFlow's Saver exports
    ``sess.graph``'s MetaGraph); ``distributed_graph`` is the graph that runs.
    """

    def __init__(self, dist: DistributedGraph, target: str, config=None):
        self.dist = dist
        self.original_graph = dist.item.graph
        self._target = target
        self._config = config
        self._watch = ChiefWatch(target, config.operation_timeout_in_ms if config is not None else 0)
        self._tf_session = tf.compat.v1.Session(target, graph=dist.graph, config=config)
        self._session = WatchedSession(self._tf_session, self._watch)
        self._plans: dict[Any, tuple[str, list[Any]]] = {}
        try:
            self._session.run(dist.init_op)
        except BaseException:
            close_session(self._tf_session, self._watch, wait=False)  # its error is the one to see
            raise

    @property
    def graph(self):
        """The original graph."""
        return self.original_graph

    @property
    def distributed_graph(self):
        """The distributed graph this session runs."""
        return self.dist.graph

    @property
    def sess_str(self) -> str:
        return self._target

    @property
    def layouts(self) -> dict[str, VariableLayout]:
        """Every variable's parts and stored copies, as plain data, by variable name."""
        return {name: storage.layout for name, storage in self.dist.storage.items()}

    @property
    def chief_lost(self) -> bool:
        """True once a call found the chief node gone (the session cannot be used again)."""
        return self._watch.lost

    @property
    def raw_session(self):
        """The underlying ``tf.compat.v1.Session`` on the cluster, its ``run`` watched
        for a dead chief (:class:`ChiefWatch`)."""
        return self._session

    # -- element mapping ------------------------------------------------------------

    def _original(self, element) -> Any:
        if isinstance(element, str):
            try:
                return self.original_graph.as_graph_element(element)
            except (KeyError, ValueError) as err:
                raise AutoDistError(f"{element!r} names nothing in the original graph") from err
        if isinstance(element, tf.Variable):
            return element
        graph = getattr(element, "graph", None)
        if graph is not self.original_graph:
            raise AutoDistError(f"{element!r} is not an element of the original graph")
        return element

    def _is_initializer(self, op) -> bool:
        initializers = {r.variable.initializer.name for r in self.dist.item.variables.values()}
        if op.name in initializers:
            return True
        return op.type == "NoOp" and op.control_inputs and all(
            c.name in initializers for c in op.control_inputs
        )

    def _plan(self, element) -> tuple[str, list[Any]]:
        """How to fetch one original element: (combination, distributed fetches)."""
        original = self._original(element)
        key = original.name if not isinstance(original, tf.Variable) else ("var", original.name)
        if key not in self._plans:
            with self.dist.graph.as_default():
                self._plans[key] = self._make_plan(original)
        return self._plans[key]

    def _make_plan(self, original) -> tuple[str, list[Any]]:
        dist, item = self.dist, self.dist.item
        if isinstance(original, tf.Variable):
            return _SINGLE, [dist.logical_value(original.op.name)]
        if isinstance(original, tf.Operation):
            if item.train_op is not None and original is item.train_op:
                return _SINGLE, [dist.train_op]
            if self._is_initializer(original):
                return _SINGLE, [dist.init_op]
            if original.name in dist.shared_ops:
                return _SINGLE, [dist.shared_ops[original.name]]
            if original.name in dist.slice_copies:
                return _SINGLE, [tf.group(*dist.slice_copies[original.name])]
            if original.name not in dist.replica_ops[0]:
                if (pipeline_op := dist.inputs.copy_of(original)) is not None:
                    return _SINGLE, [pipeline_op]
                if dist.extend_apply(original):
                    return _SINGLE, [dist.shared_ops[original.name]]
            dist.extend_replicas(original)
            return _SINGLE, [tf.group(*[ops[original.name] for ops in dist.replica_ops])]
        op = original.op
        if op.name in item.handle_to_variable:  # a variable's handle stands for the variable
            return _SINGLE, [dist.logical_value(item.handle_to_variable[op.name])]
        if op.type == "ReadVariableOp" and op.inputs[0].op.name in item.handle_to_variable:
            return _SINGLE, [dist.logical_value(item.handle_to_variable[op.inputs[0].op.name])]
        if op.name in dist.shared_ops:
            return _SINGLE, [dist.shared_ops[op.name].outputs[original.value_index]]
        if op.name in dist.slice_copies:
            return _SINGLE, [dist.slice_copies[op.name][0].outputs[original.value_index]]
        if op.name not in dist.replica_ops[0]:
            if (pipeline_op := dist.inputs.copy_of(op)) is not None:
                return _SINGLE, [pipeline_op.outputs[original.value_index]]
            if dist.extend_apply(op):
                return _SINGLE, [dist.shared_ops[op.name].outputs[original.value_index]]
            dist.extend_replicas(op)
        copies = [dist.replica_tensor(original, r) for r in range(dist.replicas)]
        if original.shape.rank == 0 and original.dtype.is_floating:
            return _MEAN, copies
        if _is_batch(original):
            return _CONCAT, copies
        return _SINGLE, copies[:1]

    # -- feeds ------------------------------------------------------------------------

    def _map_feeds(self, feed_dict: Mapping[Any, Any]) -> dict:
        dist = self.dist
        mapped: dict = {}
        for key, value in feed_dict.items():
            # A placeholder may be named by its op's name ("x" for "x:0").
            if isinstance(key, str) and ":" not in key:
                key = f"{key}:0"
            original = self._original(key)
            if isinstance(original, tf.Variable) or isinstance(original, tf.Operation):
                raise AutoDistError(f"cannot feed {key!r}: only tensors can be fed")
            op_name = original.op.name
            if op_name in dist.inputs.ops:
                mapped[dist.inputs.ops[op_name].outputs[original.value_index]] = value
                continue
            if op_name in dist.shared_ops:
                mapped[dist.shared_ops[op_name].outputs[original.value_index]] = value
            if op_name not in dist.replica_ops[0]:
                if op_name in dist.shared_ops:
                    continue
                with dist.graph.as_default():
                    dist.extend_replicas(original.op)
            if _is_batch(original):
                value = np.asarray(value)
                if value.ndim == 0 or value.shape[0] < dist.replicas:
                    raise AutoDistError(
                        f"feed {op_name!r}: a batch of {value.shape[0] if value.ndim else 'a scalar'} "
                        f"cannot give each of the {dist.replicas} replicas an example"
                    )
                pieces = np.array_split(value, dist.replicas, axis=0)
            else:
                pieces = [value] * dist.replicas
            for replica, piece in enumerate(pieces):
                mapped[dist.replica_tensor(original, replica)] = piece
        return mapped

    # -- running ----------------------------------------------------------------------

    def run(self, fetches, feed_dict=None, options=None, run_metadata=None):
        """Like ``tf.compat.v1.Session.run``, with the original graph's fetches and feeds.

        A composite fetch (``IndexedSlices``, ``SparseTensor``) is fetched component by
        component and returned as TensorFlow's value type for it.
        """
        flat = tf.nest.flatten(fetches)
        components = [_components(element) for element in flat]
        plans = [self._plan(part) for parts in components for part in parts]
        feeds = self._map_feeds(feed_dict or {})
        targets = [t for _, tensors in plans for t in tensors]
        values = self._session.run(targets, feed_dict=feeds, options=options, run_metadata=run_metadata)
        combined, position = [], 0
        for kind, tensors in plans:
            chunk = values[position:position + len(tensors)]
            position += len(tensors)
            combined.append(_combine(kind, chunk))
        results, position = [], 0
        for element, parts in zip(flat, components):
            results.append(_composite_value(element, combined[position:position + len(parts)]))
            position += len(parts)
        return tf.nest.pack_sequence_as(fetches, results)

    def stored_copies(self) -> dict[str, list[tuple[tuple, np.ndarray]]]:
        """Every stored part and mirror of every variable, read straight from storage.

        Returns name -> ``[(numpy index of the part in the full variable, value), ...]``
        (the index is ``()`` for an unpartitioned variable). The conformance suite uses
        it to check that a restore wrote every copy.
        """
        reads, where = [], []
        with self.dist.graph.as_default():
            for name, storage in self.dist.storage.items():
                for part in storage.parts:
                    for mirror in range(len(storage.handles[part.index])):
                        reads.append(storage.read_part(part.index, mirror))
                        where.append((name, part.slice_of(storage.shape)))
        result: dict[str, list] = {}
        for (name, index), value in zip(where, self._session.run(reads)):
            result.setdefault(name, []).append((index, value))
        return result

    def free_variables(self) -> None:
        """Delete every stored copy of every variable from its node, whether this session
        is open or closed (a session of its own runs the deletion). Another session of
        the same AutoDist names the same resources, so its variables go too."""
        deletes = []
        with self.dist.graph.as_default():
            for storage in self.dist.storage.values():
                for handle in (h for handles in storage.handles for h in handles):
                    with tf.device(handle.device):
                        deletes.append(tf.raw_ops.DestroyResourceOp(resource=handle, ignore_lookup_error=True))
            free = tf.group(*deletes, name="free_variables")
        session = tf.compat.v1.Session(self._target, graph=self.dist.graph, config=self._config)
        try:
            self._watch.call("freeing the variables", session.run, free)
        finally:
            close_session(session, self._watch)

    def close(self, wait: bool = True) -> None:
        """Close the session. A node that died cannot release its part of the session;
        that is reported as a warning, not raised, so teardown always completes. With
        ``wait`` False (the cluster is about to stop, or cannot answer), the close is
        started and not waited for."""
        close_session(self._tf_session, self._watch, wait)

    def __enter__(self) -> DistributedSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _components(element) -> list[Any]:
    """The tensors to fetch for one fetch: a composite tensor's components, else itself."""
    if isinstance(element, tf.IndexedSlices):
        return [t for t in (element.values, element.indices, element.dense_shape) if t is not None]
    if isinstance(element, tf.SparseTensor):
        return [element.indices, element.values, element.dense_shape]
    return [element]


def _composite_value(element, values: list[Any]) -> Any:
    if isinstance(element, tf.IndexedSlices):
        return IndexedSlicesValue(*values, *([None] * (3 - len(values))))
    if isinstance(element, tf.SparseTensor):
        return tf.compat.v1.SparseTensorValue(*values)
    return values[0]


def _combine(kind: str, values: list[Any]) -> Any:
    if kind == _SINGLE:
        return values[0]
    if kind == _CONCAT:
        return np.concatenate(values, axis=0)
    # The mean over replicas, in the contract's order: left-to-right sum, then / R.
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total / np.asarray(len(values), dtype=np.asarray(total).dtype)
