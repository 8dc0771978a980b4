"""Reading an original single-device training graph.

The ops of the original graph fall into disjoint sets:

* variable handles (``VarHandleOp``): replaced by the distributed storage;
* the *input* ops: a tf.data iterator's ``get_next`` and the pipeline behind it, copied
  once (one element per step is the global batch, split across the replicas);
* the *compute* ops: everything the gradients depend on (forward and backward pass),
  copied once per replica;
* the *apply* ops: what the optimizer steps and the train op need beyond the gradients
  (the optimizers' updates, ``global_step``'s increment). Each trainable variable owns a
  *slice* of them: the ops fed, through data edges, by its gradient, its handle or its
  slots' handles; a slice is copied once per part or mirror of the variable. The
  remaining apply ops are *shared* (learning rate, Adam's beta-power updates, the final
  group) and copied once.

A graph may hold several optimizer steps (one ``apply_gradients`` call each: parameter
groups with their own optimizers, a GAN's two optimizers) over disjoint sets of
variables, grouped into one train op. Their gradients share one forward and backward
pass; their apply ops are analysed together, each variable's slice with its own
optimizer's slots.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf

from saver_impl.capture import OptimizerStep
from saver_impl.errors import TransformError, UnsupportedGraph
from saver_impl.graph.functions import FUNCTIONAL_OPS, WHILE_OPS
from saver_impl.strategy import VariableInfo

# Ops of the compute part that may consume a variable handle, and how each is rewritten
# to consume the variable's value instead (see subgraph.rewrite_handle_readers): the
# readers, and the control flow whose functions read it (functions.FunctionRewriter).
HANDLE_READERS = frozenset({"ReadVariableOp", "ResourceGather", "VariableShape"})
HANDLE_USERS = HANDLE_READERS | FUNCTIONAL_OPS.keys()

# Ops that take the next element of a tf.data iterator: the boundary between the input
# pipeline (run once per step) and the compute part (copied per replica).
ITERATOR_GET_NEXT = frozenset({"IteratorGetNext", "IteratorGetNextSync"})
# Ops that create an iterator resource: what makes an op part of the input pipeline.
ITERATOR_RESOURCES = frozenset({
    "OneShotIterator", "Iterator", "IteratorV2", "AnonymousIterator", "AnonymousIteratorV2",
    "AnonymousIteratorV3", "MultiDeviceIterator",
})


@dataclass
class Gradient:
    """A variable's gradient as given to ``apply_gradients``: dense or IndexedSlices."""

    values: Any
    indices: Any = None
    dense_shape: Any = None

    @property
    def sparse(self) -> bool:
        return self.indices is not None

    @property
    def components(self) -> list:
        return [t for t in (self.values, self.indices, self.dense_shape) if t is not None]


@dataclass
class VariableRecord:
    """One variable of the original graph and its role."""

    name: str
    variable: Any
    role: str  # "model", "slot" (of ``primary``) or "aux" (optimizer state of no variable)
    trainable: bool
    primary: str | None = None
    gradient: Gradient | None = None
    slots: list[str] = field(default_factory=list)

    @property
    def handle_op(self) -> str:
        return self.variable.handle.op.name

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.variable.shape.as_list())

    @property
    def dtype(self):
        return self.variable.dtype.base_dtype


@dataclass
class ApplyStage:
    """Apply ops copied together: a variable's slice (``variable`` set; copied once per
    part and mirror) or shared ops (``variable`` None; copied once), in graph order."""

    variable: str | None
    ops: list[Any]


def producers(op) -> list[Any]:
    """The ops ``op`` reads (data edges) or waits for (control edges)."""
    return [t.op for t in op.inputs] + list(op.control_inputs)


def ancestors(roots: Iterable[Any], stop) -> list[Any]:
    """Ops reachable backwards from ``roots`` (data and control edges), in graph order.

    ``stop(op)`` True excludes ``op`` and does not walk past it.
    """
    seen: dict[str, Any] = {}
    stack = [r for r in roots if not stop(r)]
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen[op.name] = op
        for producer in [t.op for t in op.inputs] + list(op.control_inputs):
            if producer.name not in seen and not stop(producer):
                stack.append(producer)
    order = {op.name: i for i, op in enumerate(op.graph.get_operations())} if seen else {}
    return sorted(seen.values(), key=lambda o: order[o.name])


def optimizer_variables(optimizer) -> list[Any]:
    """The variables an optimizer created (``variables`` is a method in TF1 and Keras 2
    optimizers, a property in some Keras versions)."""
    variables = optimizer.variables
    return list(variables() if callable(variables) else variables)


def describe_optimizer(optimizer) -> str:
    """An optimizer as an error message names it: its class and name."""
    # TF1's and Keras 2's legacy optimizers keep their name in ``_name`` only.
    name = getattr(optimizer, "_name", None) or getattr(optimizer, "name", None)
    return f"{type(optimizer).__name__} {name!r}"


class GraphItem:
    """The analysed original graph of its optimizer steps (recorded in graph order).

    ``train_op`` is the op that runs every step (see :meth:`_find_train_op`), or None
    when the graph has several steps and no single such op.
    """

    def __init__(self, graph, steps: Sequence[OptimizerStep]):
        if not steps:
            raise TransformError("the graph has no optimizer step")
        self.graph = graph
        self.steps = list(steps)
        step_ops = [s.train_op if isinstance(s.train_op, tf.Operation) else s.train_op.op for s in self.steps]
        self.step_ops = list({op.name: op for op in step_ops}.values())
        self.train_op = self._find_train_op()
        self.variables: dict[str, VariableRecord] = {}
        self._gradients = self._read_gradients()
        self.gradient_aliases: dict[str, dict[str, tuple[int, int]]] = {}
        graph_vars = self._global_variables()
        self.handle_to_variable = {v.handle.op.name: v.op.name for v in graph_vars}
        self.handle_tensors = self._find_handle_tensors()
        self.compute_ops = self._find_compute_ops()
        self.apply_ops = self._find_apply_ops()
        self._read_variables(graph_vars)
        self.slices = self._find_slices()
        self.stages = self._order_stages()

    def _find_train_op(self) -> Any | None:
        """The op that runs every optimizer step: among the ops that depend on all the
        steps' ops (those included), the one no other of them depends on, such as
        ``tf.group(op_a, op_b)``, or the second step's op when it is built under
        ``tf.control_dependencies([op_a])``. If there is no single such op: with one
        step, its op; with several, None (the user fetches the steps' ops together)."""
        index = {op.name: i for i, op in enumerate(self.step_ops)}
        every = frozenset(range(len(self.step_ops)))
        runs: dict[str, frozenset[int]] = {}
        running_all = []
        for op in self.graph.get_operations():  # creation order puts producers first
            found = frozenset({index[op.name]} if op.name in index else ())
            for producer in producers(op):
                found |= runs.get(producer.name, frozenset())
            if found:
                runs[op.name] = found
                if found == every:
                    running_all.append(op)
        # Every op that depends on one of running_all is in it: a direct edge suffices.
        followed = {p.name for op in running_all for p in producers(op) if runs.get(p.name) == every}
        last = [op for op in running_all if op.name not in followed]
        if len(last) == 1:
            return last[0]
        return self.step_ops[0] if len(self.step_ops) == 1 else None

    # -- variables -----------------------------------------------------------------

    def _global_variables(self) -> list[Any]:
        graph_vars = self.graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)
        for var in graph_vars:
            if var.op.type != "VarHandleOp":
                raise UnsupportedGraph(
                    f"variable {var.op.name!r} is a reference variable ({var.op.type}); "
                    "only resource variables (TensorFlow 2's default) are supported"
                )
        known = {v.op.name for v in graph_vars}
        missing = sorted(set(self._gradients) - known)
        if missing:
            raise TransformError(
                f"apply_gradients received variable {missing[0]!r}, which is not in the "
                "graph's GLOBAL_VARIABLES collection"
            )
        return graph_vars

    def _find_handle_tensors(self) -> dict[str, str]:
        """Tensor name -> variable, for each tensor that is a global variable's handle:
        the variable's own, and a ``While``'s output that passes it through (output i of
        a ``While`` is its input i after the loop; the loop may only read a handle)."""
        handles = {f"{op}:0": variable for op, variable in self.handle_to_variable.items()}
        for op in self.graph.get_operations():  # graph order: loops of loops resolve too
            if op.type in WHILE_OPS:
                for tensor, output in zip(op.inputs, op.outputs):
                    if tensor.name in handles:
                        handles[output.name] = handles[tensor.name]
        return handles

    def _read_gradients(self) -> dict[str, Gradient]:
        gradients: dict[str, Gradient] = {}
        optimizer_of: dict[str, Any] = {}
        for step in self.steps:
            for grad, var in step.grads_and_vars:
                if grad is None:
                    continue
                if not isinstance(var, tf.Variable):
                    raise TransformError(
                        f"apply_gradients received {type(var).__name__} {getattr(var, 'name', var)!r}, "
                        "not a TensorFlow variable"
                    )
                if var.op.name in optimizer_of:
                    first, second = optimizer_of[var.op.name], step.optimizer
                    which = (f"both {describe_optimizer(first)} and {describe_optimizer(second)}"
                             if first is not second else f"{describe_optimizer(first)} twice")
                    raise UnsupportedGraph(
                        f"variable {var.op.name!r} is updated by two optimizer steps, by {which}; "
                        "each variable must be given to one apply_gradients call (the equivalence "
                        "contract has no rule for two updates of one variable in a step)"
                    )
                optimizer_of[var.op.name] = step.optimizer
                gradients[var.op.name] = self._gradient(grad)
        return gradients

    @staticmethod
    def _gradient(grad) -> Gradient:
        """A gradient given to ``apply_gradients`` as a :class:`Gradient`."""
        if isinstance(grad, tf.IndexedSlices):
            return Gradient(grad.values, grad.indices, grad.dense_shape)
        return Gradient(tf.convert_to_tensor(grad))

    def _gradient_sources(self, name: str) -> set[str]:
        """Tensor names that carry ``name``'s gradient: its components and their aliases."""
        gradient = self._gradients[name]
        return {t.name for t in gradient.components} | set(self.gradient_aliases.get(name, {}))

    def _reach(self, sources: set[str]) -> dict[str, Any]:
        """The apply ops fed, through data edges, by the tensors ``sources``."""
        members: dict[str, Any] = {}
        for op in self.apply_ops.values():  # graph order is topological
            if any(t.name in sources or t.op.name in members for t in op.inputs):
                members[op.name] = op
        return members

    def _adopt_ordered_inputs(self, members: dict[str, Any]) -> dict[str, Any]:
        """Add to a slice the apply ops that run after one of its ops (a control input)
        and feed one (a data output): a constant or read built under
        ``tf.control_dependencies`` inside an optimizer's update, as Keras's sparse
        RMSprop does. Left shared, such an op would both follow and feed the slice."""
        changed = True
        while changed:
            changed = False
            for op in self.apply_ops.values():
                if op.name in members or not any(c.name in members for c in op.control_inputs):
                    continue
                if any(consumer.name in members for out in op.outputs for consumer in out.consumers()):
                    members[op.name] = op
                    changed = True
        order = {name: i for i, name in enumerate(self.apply_ops)}
        return dict(sorted(members.items(), key=lambda item: order[item[0]]))

    def _find_slots(self, optimizer_vars: set[str]) -> dict[str, str]:
        """Slot name -> its variable: an optimizer variable whose handle an op of exactly
        one variable's update uses (the ops fed by that variable's gradient)."""
        slot_of: dict[str, str] = {}
        for name in self._gradients:
            for op in self._reach(self._gradient_sources(name)).values():
                for tensor in op.inputs:
                    slot = self.handle_to_variable.get(tensor.op.name)
                    if slot is None or slot == name or slot not in optimizer_vars:
                        continue
                    if slot_of.setdefault(slot, name) != name:
                        raise TransformError(
                            f"optimizer variable {slot!r} is updated with the gradients of both "
                            f"{slot_of[slot]!r} and {name!r}; the optimizer must update variables "
                            "independently"
                        )
        return slot_of

    def _read_variables(self, graph_vars: list[Any]) -> None:
        trainable = {v.op.name for v in self.graph.get_collection(
            tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES)}
        optimizer_vars = {v.op.name for step in self.steps for v in optimizer_variables(step.optimizer)}
        slot_of = self._find_slots(optimizer_vars)
        for var in graph_vars:
            name = var.op.name
            if name in slot_of:
                record = VariableRecord(name, var, "slot", False, primary=slot_of[name])
            elif name in optimizer_vars:
                record = VariableRecord(name, var, "aux", False)
            else:
                record = VariableRecord(
                    name, var, "model", name in trainable, gradient=self._gradients.get(name)
                )
            self.variables[name] = record
        for record in self.variables.values():
            if record.role == "slot":
                primary = self.variables[record.primary]
                if record.shape != primary.shape:
                    raise TransformError(
                        f"optimizer slot {record.name!r} has shape {record.shape}, unlike "
                        f"its variable {primary.name!r} {primary.shape}; such slots cannot "
                        "follow the variable's partitioning"
                    )
                primary.slots.append(record.name)

    @property
    def model_variables(self) -> list[VariableRecord]:
        return [r for r in self.variables.values() if r.role == "model"]

    def variable_infos(self) -> list[VariableInfo]:
        """The model variables as the strategy builders see them."""
        return [
            VariableInfo(
                name=r.name,
                shape=r.shape,
                dtype=r.dtype.name,
                trainable=r.trainable and r.gradient is not None,
                sparse_grad=bool(r.gradient and r.gradient.sparse),
            )
            for r in self.model_variables
        ]

    # -- op sets -------------------------------------------------------------------

    def _is_boundary(self, op) -> bool:
        """Where the compute part stops: a variable handle or an iterator's get_next."""
        return op.type == "VarHandleOp" or op.type in ITERATOR_GET_NEXT

    def _find_compute_ops(self) -> dict[str, Any]:
        roots = [t.op for gradient in self._gradients.values() for t in gradient.components]
        ops = ancestors(roots, stop=self._is_boundary)
        self.input_ops = {
            producer.name: producer
            for op in ops
            for producer in [t.op for t in op.inputs] + list(op.control_inputs)
            if producer.type in ITERATOR_GET_NEXT
        }
        for op in ops:
            for tensor in op.inputs:
                if tensor.dtype != tf.resource:
                    continue
                if op.type not in HANDLE_USERS:
                    raise TransformError(
                        f"op {op.name!r} ({op.type}) in the gradient computation uses "
                        f"variable handle {tensor.op.name!r}; only reads "
                        f"({', '.join(sorted(HANDLE_READERS))}), also inside control flow "
                        f"({', '.join(sorted(FUNCTIONAL_OPS))}), can be replicated"
                    )
                if tensor.name not in self.handle_tensors:
                    raise TransformError(
                        f"op {op.name!r} reads resource {tensor.name!r}, which is not a global variable"
                    )
        return {op.name: op for op in ops}

    @property
    def read_variables(self) -> set[str]:
        """The variables the compute part reads."""
        return {
            self.handle_tensors[t.name] for op in self.compute_ops.values() for t in op.inputs
            if t.name in self.handle_tensors
        }

    def _find_apply_ops(self) -> dict[str, Any]:
        def stop(op):
            return self._is_boundary(op) or op.name in self.compute_ops

        roots = self.step_ops + ([self.train_op] if self.train_op is not None else [])
        ops = {op.name: op for op in ancestors(roots, stop)}
        self._find_gradient_aliases(ops)
        aliased = {name.rsplit(":", 1)[0] for aliases in self.gradient_aliases.values() for name in aliases}
        return {name: op for name, op in ops.items() if name not in aliased}

    def _find_gradient_aliases(self, apply_ops: dict[str, Any]) -> None:
        """Identity ops that pass gradients through (Keras optimizers wrap all gradients in
        one ``IdentityN``): each output is its input's gradient component, so the ops
        that read it take the aggregated gradient directly, and the pass-through op
        itself is not copied (it would tie every variable's update together). Its
        control inputs (say, ``tf.control_dependencies(model.updates)``) are not lost:
        the ops built in the same context carry them too."""
        component_of: dict[str, tuple[str, int]] = {}
        for name, gradient in self._gradients.items():
            for k, tensor in enumerate(gradient.components):
                component_of[tensor.name] = (name, k)
        for op in apply_ops.values():  # graph order: an alias of an alias resolves too
            if op.type not in ("Identity", "IdentityN"):
                continue
            sources = [component_of.get(t.name) for t in op.inputs]
            if not sources or None in sources:
                continue
            for output, source in zip(op.outputs, sources):
                variable, k = source
                component_of[output.name] = source
                self.gradient_aliases.setdefault(variable, {})[output.name] = (k, output.value_index)

    def _find_slices(self) -> dict[str, dict[str, Any]]:
        """Per trainable variable, the apply ops its gradient, handle or slots feed."""
        slices: dict[str, dict[str, Any]] = {}
        owner: dict[str, str] = {}
        for record in self.model_variables:
            if record.gradient is None:
                continue
            sources = self._gradient_sources(record.name)
            sources |= {self.variables[n].variable.handle.name for n in [record.name, *record.slots]}
            members = self._adopt_ordered_inputs(self._reach(sources))
            for op_name in members:
                if op_name in owner:
                    raise TransformError(
                        f"apply op {op_name!r} depends on both {owner[op_name]!r} and "
                        f"{record.name!r}; the optimizer must update variables independently"
                    )
                owner[op_name] = record.name
            slices[record.name] = members
        return slices

    def _order_stages(self) -> list[ApplyStage]:
        """The apply ops as stages, each after the stages whose ops it reads or waits for.

        Each trainable variable's slice is one stage; the shared ops fall between them as
        their edges say, so a shared op may follow one optimizer's updates and feed
        another's (``opt_b.apply_gradients`` under ``tf.control_dependencies([op_a])``).
        Among the stages that may come next, the one whose first op is earliest in the
        graph goes first; consecutive shared ops form one stage.
        """
        owner = {name: variable for variable, members in self.slices.items() for name in members}

        def unit(name: str) -> tuple[str, str]:
            return ("slice", owner[name]) if name in owner else ("shared", name)

        units: dict[tuple[str, str], list[Any]] = {}
        for op in self.apply_ops.values():  # graph order
            units.setdefault(unit(op.name), []).append(op)
        followers: dict[tuple[str, str], set] = {u: set() for u in units}
        waiting = dict.fromkeys(units, 0)
        for u, ops in units.items():
            before = {unit(p.name) for op in ops for p in producers(op) if p.name in self.apply_ops} - {u}
            waiting[u] = len(before)
            for b in before:
                followers[b].add(u)
        position = {name: i for i, name in enumerate(self.apply_ops)}
        ready = [(position[ops[0].name], u) for u, ops in units.items() if not waiting[u]]
        heapq.heapify(ready)
        stages: list[ApplyStage] = []
        while ready:
            _, u = heapq.heappop(ready)
            kind, key = u
            if kind == "shared" and stages and stages[-1].variable is None:
                stages[-1].ops.extend(units[u])
            else:
                stages.append(ApplyStage(key if kind == "slice" else None, list(units[u])))
            for f in followers[u]:
                waiting[f] -= 1
                if not waiting[f]:
                    heapq.heappush(ready, (position[units[f][0].name], f))
        stuck = [u for u, n in waiting.items() if n]
        if stuck:
            shared = [key for kind, key in stuck if kind == "shared"]
            variables = [key for kind, key in stuck if kind == "slice"]
            raise TransformError(
                f"shared optimizer op {(shared or [key for _, key in stuck])[0]!r} both feeds and follows "
                f"variable updates (of {', '.join(repr(v) for v in variables)})"
            )
        return stages
