"""Building the distributed graph of one original training graph under one strategy.

The distributed graph holds, in order:

1. the storage: every variable's parts and mirrors (``placement.py``);
2. the initializer: the original initial values computed once, then written into every
   part and mirror, so mirrors start bitwise equal;
3. the input pipeline (a tf.data iterator's ``get_next`` and what it reads), copied once,
   its element split across the replicas (``inputs.py``);
4. per replica, the values of the variables the gradient computation reads (a read of
   the parameter-server copy, the concatenation of the parts, or the local mirror) and a
   copy of the compute ops reading those values and its pieces of the input;
5. per variable and part, the aggregated gradient (``aggregation.py``), computed where
   each copy lives, after every replica has read its values (the *read barrier*), so a
   step never mixes old and new values;
6. the optimizers' apply ops, stage by stage (``GraphItem.stages``): each variable's
   slice once per part and mirror, the shared ops (learning rate, Adam's beta powers,
   ``global_step``) once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from saver_impl.errors import TransformError
from saver_impl.graph.aggregation import GradientAggregation, split_gradient
from saver_impl.graph.analysis import GraphItem, ancestors, producers
from saver_impl.graph.inputs import InputPipeline
from saver_impl.graph.placement import VariableStorage, create_storage
from saver_impl.graph.subgraph import VALUE_PREFIX, SubgraphCopier, rewrite_handle_readers
from saver_impl.strategy import Strategy, VariableConfig


class DistributedGraph:
    """The distributed graph and the maps from original names to its tensors.

    Args:
        item: the analysed original graph.
        strategy: a validated strategy for ``item``'s model variables.
        tf_device: maps a logical device name (``"127.0.0.1:GPU:0"``) to a TensorFlow one.
        container: the resource container holding this graph's variables.
        aggregation: how the replicas' gradients are combined (default: the contract's rule).
    """

    def __init__(self, item: GraphItem, strategy: Strategy, tf_device: Callable[[str], str], container: str,
                 aggregation: GradientAggregation | None = None):
        self.item = item
        self.strategy = strategy
        self.aggregation = aggregation if aggregation is not None else GradientAggregation()
        self.replica_devices = [tf_device(d) for d in strategy.replicas]
        self.aux_device = tf_device(strategy.aux_device)
        self.replicas = len(self.replica_devices)
        self.graph = tf.Graph()
        with self.graph.as_default():
            self._copier = SubgraphCopier(item.graph)
            self.storage = self._create_storage(tf_device, container)
            self.init_op = self._build_initializer()
            self._values: dict[tuple[str, int], Any] = {}
            self._logical: dict[str, Any] = {}
            self.barrier = self._build_read_barrier()
            self.inputs = InputPipeline(item, self.graph, self._copier, self.aux_device, self.replicas)
            self.replica_ops: list[dict[str, Any]] = [{} for _ in range(self.replicas)]
            self._copy_to_replicas(list(item.compute_ops))
            self.aggregated = self._aggregate()
            self.shared_ops: dict[str, Any] = {}
            self._states: dict[str, Any] = {}
            self.slice_copies: dict[str, list[Any]] = {}
            self.train_op = self._copy_apply()

    # -- storage and initialization -----------------------------------------------

    def _config_of(self, name: str) -> VariableConfig:
        record = self.item.variables[name]
        if record.role == "slot":
            return self._config_of(record.primary)
        if record.role == "aux":
            return VariableConfig(synchronizer="ps", devices=(self.strategy.aux_device,))
        return self.strategy.for_variable(name)

    def _create_storage(self, tf_device, container: str) -> dict[str, VariableStorage]:
        storage = {}
        for name, record in self.item.variables.items():
            config = self._config_of(name)
            parts = len(config.partition.sizes) if config.partition else 1
            if config.synchronizer == "allreduce":
                devices = [list(self.replica_devices) for _ in range(parts)]
            else:
                devices = [[tf_device(d)] for d in config.devices]
            storage[name] = create_storage(name, record.shape, record.dtype, config, devices, container)
        return storage

    def _build_initializer(self):
        initial_values = {name: r.variable.initial_value for name, r in self.item.variables.items()}
        ops = ancestors([t.op for t in initial_values.values()], stop=lambda op: op.type == "VarHandleOp")
        for op in ops:
            if any(t.dtype == tf.resource for t in op.inputs):
                raise TransformError(
                    f"initializer op {op.name!r} reads variable {op.inputs[0].op.name!r}; "
                    "initial values that depend on other variables are not supported"
                )
        with tf.device(self.aux_device):
            copied = self._copier.copy(
                self._copier.nodes(op.name for op in ops),
                resolve_data=self._unexpected_input,
                resolve_control=lambda name: None,
                prefix="initial_values",
            )
        assigns = []
        for name, tensor in initial_values.items():
            value = copied[tensor.op.name].outputs[tensor.value_index]
            assigns.append(self.storage[name].assign_all(value))
        return tf.group(*assigns, name="initialize_variables")

    @staticmethod
    def _unexpected_input(name: str, index: int):
        raise TransformError(f"unexpected input {name}:{index} while copying the graph")

    # -- what the replicas read ---------------------------------------------------

    def value(self, name: str, replica: int) -> Any:
        """The value of model variable ``name`` as replica ``replica`` reads it."""
        key = (name, replica)
        if key not in self._values:
            storage = self.storage[name]
            if storage.mirrored:
                parts = [storage.read_part(p.index, replica) for p in storage.parts]
            else:
                shared = self._values.get((name, "parts"))
                if shared is None:
                    shared = [storage.read_part(p.index) for p in storage.parts]
                    self._values[(name, "parts")] = shared
                parts = shared
            with tf.device(self.replica_devices[replica]):
                self._values[key] = storage.assemble(parts)
        return self._values[key]

    def logical_value(self, name: str) -> Any:
        """The logical value of any variable: parts reassembled, the master's mirror."""
        record = self.item.variables[name]
        if record.role == "model":
            return self.value(name, 0)
        if name not in self._logical:
            storage = self.storage[name]
            with tf.device(self.aux_device):
                self._logical[name] = storage.assemble([storage.read_part(p.index) for p in storage.parts])
        return self._logical[name]

    def _build_read_barrier(self):
        values = [self.value(n, r) for n in sorted(self.item.read_variables) for r in range(self.replicas)]
        return tf.group(*values, name="read_barrier")

    # -- replicas -----------------------------------------------------------------

    def _copy_to_replicas(self, op_names: list[str]) -> None:
        """Copy original ops (not yet copied) to every replica, reading variable values."""
        nodes, removed_reads = rewrite_handle_readers(
            self._copier.nodes(op_names), self.item.handle_tensors, self._copier.functions
        )
        for replica in range(self.replicas):
            known = self.replica_ops[replica]

            def resolve_data(producer: str, index: int, replica=replica, known=known):
                if producer.startswith(VALUE_PREFIX):
                    return self.value(producer[len(VALUE_PREFIX):], replica)
                if producer in self.item.input_ops:
                    return self.inputs.piece(producer, index, replica)
                if producer in removed_reads:
                    return self.value(removed_reads[producer], replica)
                if producer in known:
                    return known[producer].outputs[index]
                raise TransformError(f"op {producer!r} is not available to the replicas")

            def resolve_control(producer: str, replica=replica, known=known):
                if producer in removed_reads:
                    return self.value(removed_reads[producer], replica).op
                if producer in known:
                    return known[producer]
                return self.inputs.ops.get(producer)

            with tf.device(self.replica_devices[replica]):
                copied = self._copier.copy(
                    [self._fresh(n) for n in nodes], resolve_data, resolve_control,
                    prefix=f"replica_{replica}",
                )
            known.update(copied)
            for name, variable in removed_reads.items():
                known.setdefault(name, self.value(variable, replica).op)

    @staticmethod
    def _fresh(node):
        copy = type(node)()
        copy.CopyFrom(node)
        return copy

    def replica_tensor(self, tensor, replica: int) -> Any:
        """Replica ``replica``'s copy of an original tensor of the compute part."""
        op = self.replica_ops[replica].get(tensor.op.name)
        if op is None:
            raise KeyError(tensor.name)
        return op.outputs[tensor.value_index]

    def _state(self, producer: str, index: int) -> Any:
        """The value of a forward-pass tensor that ops outside the replicas read."""
        key = f"{producer}:{index}"
        if key not in self._states:
            self._states[key] = self.aggregation.state(
                [self.replica_ops[r][producer].outputs[index] for r in range(self.replicas)])
        return self._states[key]

    def extend_replicas(self, original_op) -> None:
        """Copy ``original_op`` and its missing ancestors to every replica (for fetches)."""
        known = self.replica_ops[0]

        def stop(op):
            return op.type == "VarHandleOp" or op.name in known or op.name in self.item.input_ops

        missing = ancestors([original_op], stop)
        with self.graph.as_default():
            self._copy_to_replicas([op.name for op in missing])

    # -- gradients ----------------------------------------------------------------

    def _aggregate(self) -> dict[str, list[list[list[Any]]]]:
        """Per trainable variable: [part][mirror] -> aggregated gradient components."""
        result = {}
        for record in self.item.model_variables:
            if record.gradient is None:
                continue
            storage = self.storage[record.name]
            sparse = record.gradient.sparse
            per_replica_parts = []
            for replica in range(self.replicas):
                components = [self.replica_tensor(t, replica) for t in record.gradient.components]
                with tf.device(self.replica_devices[replica]):
                    per_replica_parts.append(split_gradient(components, sparse, storage))
            by_part = []
            for part in storage.parts:
                mirrors = []
                for device in storage.devices[part.index]:
                    with tf.device(device), tf.control_dependencies([self.barrier]):
                        mirrors.append(
                            self.aggregation.aggregate([parts[part.index] for parts in per_replica_parts], sparse)
                        )
                by_part.append(mirrors)
            result[record.name] = by_part
        return result

    # -- optimizer ----------------------------------------------------------------

    def _single_handle(self, variable: str, user: str) -> Any:
        storage = self.storage[variable]
        if not storage.single:
            raise TransformError(
                f"optimizer op {user!r} uses variable {variable!r}, which is partitioned or "
                "mirrored; such shared state must be placed unpartitioned on a parameter server"
            )
        return storage.handles[0][0]

    def _resolvers(self, replica: int | None, user: str, local: Callable[[str, int], Any] | None = None):
        """How a copy of apply ops finds its inputs outside the copied set: the shared
        ops' copies, every copy of a slice op (control edges), the compute ops of
        replica ``replica`` (None: a copy that is not per mirror reads the forward pass
        through ``aggregation.state``, replica 0's by the contract), and unpartitioned
        variables' handles. ``local`` gives a slice copy's own inputs first (its
        variable's and slots' handles, its aggregated gradient), None for any other."""
        handles = self.item.handle_to_variable
        known = self.replica_ops[replica or 0]

        def resolve_data(producer: str, index: int):
            if local is not None and (tensor := local(producer, index)) is not None:
                return tensor
            if producer in handles:
                return self._single_handle(handles[producer], user)
            if producer in self.shared_ops:
                return self.shared_ops[producer].outputs[index]
            if producer in known:
                if replica is None:
                    return self._state(producer, index)
                return known[producer].outputs[index]
            raise TransformError(f"apply op input {producer}:{index} cannot be resolved")

        def resolve_control(producer: str):
            if producer in handles:
                return None
            if producer in self.shared_ops:
                return self.shared_ops[producer]
            if producer in self.slice_copies:
                return tf.group(*self.slice_copies[producer], name=f"{producer}/all_copies")
            if producer in known:
                return known[producer]
            raise TransformError(f"apply op control input {producer} cannot be resolved")

        return resolve_data, resolve_control

    def _copy_shared(self, ops: list[Any]) -> None:
        """Copy shared apply ops once, on the aux device."""
        data, control = self._resolvers(None, "shared")
        with tf.device(self.aux_device):
            self.shared_ops.update(self._copier.copy(
                self._copier.nodes(op.name for op in ops), data, control, prefix="apply/shared",
            ))

    def _copy_slice(self, name: str, ops: list[Any]) -> None:
        """Copy variable ``name``'s slice once per part and mirror, where that copy lives."""
        record = self.item.variables[name]
        storage = self.storage[name]
        handles = self.item.handle_to_variable
        own_variables = {name, *record.slots}
        grad_index: dict[tuple[str, int], int] = {}  # (producer, output) -> gradient component
        for k, tensor in enumerate(record.gradient.components):
            grad_index[(tensor.op.name, tensor.value_index)] = k
        for alias, (k, output) in self.item.gradient_aliases.get(name, {}).items():
            grad_index[(alias.rsplit(":", 1)[0], output)] = k
        names = [op.name for op in ops]
        for part in storage.parts:
            for mirror, device in enumerate(storage.devices[part.index]):
                aggregated = self.aggregated[name][part.index][mirror]

                def local(producer: str, index: int, part=part.index, mirror=mirror, aggregated=aggregated):
                    if handles.get(producer) in own_variables:
                        return self.storage[handles[producer]].handles[part][mirror]
                    k = grad_index.get((producer, index))
                    return None if k is None else aggregated[k]

                data, control = self._resolvers(mirror if storage.mirrored else None, name, local)
                with tf.device(device):
                    copied = self._copier.copy(
                        self._copier.nodes(names), data, control,
                        prefix=f"apply/{name}/part_{part.index}/copy_{mirror}",
                    )
                for original, new in copied.items():
                    self.slice_copies.setdefault(original, []).append(new)

    def _copy_apply(self):
        """Copy every apply stage in order; return the copy of the train op, if any."""
        for stage in self.item.stages:
            if stage.variable is None:
                self._copy_shared(stage.ops)
            else:
                self._copy_slice(stage.variable, stage.ops)
        train_op = self.item.train_op
        if train_op is None:
            return None
        if train_op.name in self.shared_ops:
            return self.shared_ops[train_op.name]
        return tf.group(*self.slice_copies[train_op.name], name="train_op")

    def extend_apply(self, original_op) -> bool:
        """Copy ``original_op`` and its missing ancestors once, on the aux device, as
        shared apply ops, if it runs after a copied apply op (``tf.group(train_op,
        other_update)`` built after the session); False, copying nothing, if it does not."""
        copied = self.shared_ops.keys() | self.slice_copies.keys()

        def stop(op):
            return op.type == "VarHandleOp" or op.name in copied or op.name in self.replica_ops[0]

        missing = ancestors([original_op], stop)
        if not any(p.name in copied for op in missing for p in producers(op)):
            return False
        with self.graph.as_default():
            self._copy_shared(missing)
        return True
