"""The single-device oracle: what one distributed step must equal, bit for bit.

The oracle runs the *original* graph in one plain in-process ``tf.compat.v1.Session``
and performs the single-device step of the equivalence contract (README, "Two contracts"):

1. split every batched feed (a placeholder whose first dimension is ``None``) along
   dimension 0 into R ordered micro-batches as ``np.array_split`` does (the first
   ``n % R`` one example larger); other feeds go whole to every micro-batch. A graph fed
   by a tf.data iterator takes one element per step, the global batch: each of its
   components of rank >= 1 is split the same way, rank-0 components go whole;
2. compute the gradients of each micro-batch, in replica order;
3. aggregate: dense gradients are summed left to right in replica order, then divided
   by R; sparse gradients (``IndexedSlices``) have their indices and values concatenated
   in replica order, then the values divided by R;
4. run the original train op once with the aggregate fed in place of the gradients:
   one optimizer application and one ``global_step`` increment.

With R = 1 this is plain single-device training. The oracle shares no code with the
implementations it judges.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cluster_sim.determinism import session_config


@dataclass
class TrainModel:
    """Handles of an original single-device training graph.

    ``grads_and_vars`` is the list given to ``optimizer.apply_gradients``; ``train_op``
    is what that call returned.
    """

    loss: Any
    train_op: Any
    grads_and_vars: Sequence[tuple[Any, Any]]


ModelBuilder = Callable[[], TrainModel]


class OracleError(ValueError):
    """Bad input to the oracle (a feed that does not split, an unknown feed name...)."""


def split_batch(name: str, value: np.ndarray, replicas: int) -> list[np.ndarray]:
    """Split ``value`` along dimension 0 into ``replicas`` ordered micro-batches, the first
    ``n % replicas`` one example larger; each must hold at least one example."""
    value = np.asarray(value)
    if value.ndim == 0 or value.shape[0] < replicas:
        shape = value.shape[0] if value.ndim else "a scalar"
        raise OracleError(
            f"feed {name!r}: a batch of {shape} cannot give each of {replicas} replicas an example"
        )
    return np.array_split(value, replicas, axis=0)


class _Aggregator:
    """TF ops that aggregate R per-replica values of one gradient the contract's way."""

    def __init__(self, tf, grad, replicas: int):
        self.sparse = isinstance(grad, tf.IndexedSlices)
        parts = [grad.values, grad.indices] if self.sparse else [grad]
        self.targets = parts  # tensors of the original graph this aggregate replaces
        self.inputs: list[list[Any]] = []  # inputs[r][k]: replica r, component k
        for _ in range(replicas):
            self.inputs.append(
                [tf.compat.v1.placeholder(t.dtype, name="oracle_agg_in") for t in parts]
            )
        first = parts[0]
        r_const = tf.constant(replicas, dtype=first.dtype)
        if self.sparse:
            values = tf.concat([row[0] for row in self.inputs], axis=0)
            indices = tf.concat([row[1] for row in self.inputs], axis=0)
            self.outputs = [tf.math.truediv(values, r_const), indices]
        else:
            total = self.inputs[0][0]
            for row in self.inputs[1:]:
                total = tf.math.add(total, row[0])
            self.outputs = [tf.math.truediv(total, r_const)]


class Oracle:
    """Builds the original graph in its own ``tf.Graph`` and trains it on one device.

    Args:
        build_model: builds the original graph into the current default graph and
            returns its :class:`TrainModel`. It is called once, inside ``Oracle``'s graph.
        replicas: R, the number of micro-batches of one step.
    """

    def __init__(self, build_model: ModelBuilder, replicas: int = 1):
        import tensorflow as tf

        if replicas < 1:
            raise OracleError(f"replicas must be >= 1, got {replicas}")
        self._tf = tf
        self.replicas = replicas
        self.graph = tf.Graph()
        self._aggregators_by_replicas: dict[int, tuple[list[_Aggregator], _Aggregator]] = {}
        with self.graph.as_default():
            self.model = build_model()
            # A tf.data iterator's next element: fetched once per step, then split.
            self._element = [
                output
                for op in self.graph.get_operations()
                if op.type in ("IteratorGetNext", "IteratorGetNextSync")
                for output in op.outputs
            ]
            self.variables_list = tf.compat.v1.global_variables()
            self._load_inputs = {
                v.op.name: tf.compat.v1.placeholder(v.dtype.base_dtype, name="oracle_load")
                for v in self.variables_list
            }
            self._load_ops = {
                v.op.name: v.assign(self._load_inputs[v.op.name]).op for v in self.variables_list
            }
            init = tf.compat.v1.global_variables_initializer()
            self._saver = tf.compat.v1.train.Saver(self.variables_list)
        self.session = tf.compat.v1.Session(graph=self.graph, config=session_config())
        self.session.run(init)

    # -- feeds -------------------------------------------------------------------

    def _resolve(self, key) -> Any:
        if isinstance(key, str):
            name = key if ":" in key else key + ":0"
            try:
                return self.graph.as_graph_element(name)
            except (KeyError, ValueError) as err:
                raise OracleError(f"feed {key!r} names no tensor of the original graph") from err
        return self.graph.as_graph_element(key.name)

    def _aggregators(self, replicas: int) -> tuple[list[_Aggregator], _Aggregator]:
        """The aggregation ops for ``replicas`` micro-batches (built once per count)."""
        if replicas not in self._aggregators_by_replicas:
            with self.graph.as_default():
                grads = [
                    _Aggregator(self._tf, grad, replicas)
                    for grad, _ in self.model.grads_and_vars
                    if grad is not None
                ]
                self._aggregators_by_replicas[replicas] = (
                    grads, _Aggregator(self._tf, self.model.loss, replicas)
                )
        return self._aggregators_by_replicas[replicas]

    def _micro_feeds(self, feed_dict: Mapping[Any, Any], replicas: int) -> list[dict]:
        per_replica: list[dict] = [{} for _ in range(replicas)]
        element = dict(zip(self._element, self.session.run(self._element))) if self._element else {}
        for key, value in [*feed_dict.items(), *element.items()]:
            tensor = self._resolve(key)
            shape = tensor.shape
            if tensor in element:
                batched = np.ndim(value) > 0
            else:
                batched = shape.rank is not None and shape.rank > 0 and shape[0] is None
            if batched:
                pieces = split_batch(tensor.op.name, value, replicas)
            else:
                pieces = [value] * replicas
            for r, piece in enumerate(pieces):
                per_replica[r][tensor] = piece
        return per_replica

    # -- training ----------------------------------------------------------------

    def step(self, feed_dict: Mapping[Any, Any], replicas: int | None = None) -> np.ndarray:
        """One step of the contract. Returns the loss as the mean over micro-batches.

        ``replicas`` overrides R for this step (for example R steps under one cluster,
        then plain steps after a restore on a single device).
        """
        replicas = self.replicas if replicas is None else replicas
        aggregators, loss_aggregator = self._aggregators(replicas)
        micro_feeds = self._micro_feeds(feed_dict, replicas)
        targets = [agg.targets for agg in aggregators]
        agg_feed: dict = {}
        loss_feed: dict = {}
        for r, feeds in enumerate(micro_feeds):
            grads, loss = self.session.run([targets, self.model.loss], feed_dict=feeds)
            for agg, values in zip(aggregators, grads):
                for placeholder, value in zip(agg.inputs[r], values):
                    agg_feed[placeholder] = value
            loss_feed[loss_aggregator.inputs[r][0]] = loss
        outputs = self.session.run([agg.outputs for agg in aggregators], feed_dict=agg_feed)
        apply_feed = {
            tensor: value
            for agg, values in zip(aggregators, outputs)
            for tensor, value in zip(agg.targets, values)
        }
        # Feeds that are not batched (a learning-rate placeholder...) may reach the apply.
        for tensor, value in micro_feeds[0].items():
            if tensor not in apply_feed:
                apply_feed[tensor] = value
        self.session.run(self.model.train_op, feed_dict=apply_feed)
        return self.session.run(loss_aggregator.outputs[0], feed_dict=loss_feed)

    # -- state -------------------------------------------------------------------

    def variables(self) -> dict[str, np.ndarray]:
        """Every global variable (model, optimizer slots, global_step) by name."""
        values = self.session.run(self.variables_list)
        return {v.op.name: value for v, value in zip(self.variables_list, values)}

    def load(self, values: Mapping[str, np.ndarray]) -> None:
        """Overwrite variables by name (for example with a checkpoint's contents)."""
        unknown = sorted(set(values) - set(self._load_ops))
        if unknown:
            raise OracleError(f"the original graph has no variable named {unknown[0]!r}")
        self.session.run(
            [self._load_ops[name] for name in values],
            feed_dict={self._load_inputs[name]: value for name, value in values.items()},
        )

    def restore(self, checkpoint_prefix: str) -> None:
        """Restore every variable from a checkpoint with TensorFlow's own Saver."""
        with self.graph.as_default():  # the Saver works in graph mode only
            self._saver.restore(self.session, checkpoint_prefix)

    def save(self, checkpoint_prefix: str) -> str:
        """Write a checkpoint with TensorFlow's own Saver: what the contract expects."""
        with self.graph.as_default():  # the Saver works in graph mode only
            return self._saver.save(self.session, checkpoint_prefix)

    def evaluate(self, tensor_name: str, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        """Evaluate a tensor of the original graph on a name-keyed feed (no training)."""
        feed_dict = {self._resolve(name): value for name, value in feed.items()}
        return self.session.run(self._resolve(tensor_name), feed_dict=feed_dict)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Oracle:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
