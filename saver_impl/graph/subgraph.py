"""Copying a set of original ops into the distributed graph.

A copy is made with ``tf.graph_util.import_graph_def`` on the chosen nodes. Every input
that comes from outside the set is remapped (``input_map``, with ``^name`` for control
inputs) to a tensor or op that already exists in the distributed graph, so one original
op set can be copied several times (once per replica, part or mirror) with different
inputs each time. Devices and colocation attributes of the original nodes are dropped:
the strategy decides placement.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import tensorflow as tf
from tensorflow.core.framework import function_pb2, graph_pb2, node_def_pb2

from saver_impl.errors import TransformError
from saver_impl.graph.functions import FUNCTIONAL_OPS, FunctionRewriter, VariableType, const_node, value_reader

# An external data input is resolved from (producer name, output index) to a tensor;
# an external control input from the producer's name to an op, or None to drop it.
ResolveData = Callable[[str, int], Any]
ResolveControl = Callable[[str], Any]

VALUE_PREFIX = "__variable_value__/"


def parse_input(ref: str) -> tuple[str, int]:
    """``"name:1"`` -> ("name", 1); ``"name"`` -> ("name", 0); ``"^name"`` -> ("name", -1)."""
    if ref.startswith("^"):
        return ref[1:], -1
    name, _, index = ref.partition(":")
    return name, int(index) if index else 0


def value_ref(variable: str) -> str:
    """The placeholder input name a rewritten reader uses for a variable's value."""
    return f"{VALUE_PREFIX}{variable}:0"


def rewrite_handle_readers(
    nodes: list[node_def_pb2.NodeDef], handle_tensors: dict[str, str], functions: FunctionRewriter
) -> tuple[list[node_def_pb2.NodeDef], dict[str, str]]:
    """Make the users of variable handles use a value input instead.

    ``handle_tensors`` maps each tensor that is a variable's handle (``"w:0"``, or a
    ``While``'s passthrough of it) to the variable. ``ReadVariableOp`` nodes are removed:
    the returned dict maps each removed node's name to its variable, and their consumers
    are remapped to the value at import. ``ResourceGather`` becomes ``GatherV2`` and
    ``VariableShape`` becomes ``Shape`` on the value (a gather is a copy, so both give
    the same bytes). A functional op (``tf.cond``, ``tf.while_loop``, a function call)
    takes the value in place of the handle, its functions rewritten by ``functions``.
    """
    kept: list[node_def_pb2.NodeDef] = []
    removed_reads: dict[str, str] = {}
    for node in nodes:
        handles = {}
        for position, ref in enumerate(node.input):
            producer, index = parse_input(ref)
            if index >= 0 and f"{producer}:{index}" in handle_tensors:
                handles[position] = handle_tensors[f"{producer}:{index}"]
        if not handles:
            kept.append(node)
        elif node.op == "ReadVariableOp":
            removed_reads[node.name] = handles[0]
        elif node.op in ("ResourceGather", "VariableShape"):
            value, dtype = value_ref(handles[0]), functions.variables[handles[0]].dtype
            if node.op == "ResourceGather":
                axis = const_node(f"{node.name}/axis", 0)
                kept.extend([axis, value_reader(node, value, dtype, axis.name)])
            else:
                kept.append(value_reader(node, value, dtype))
        elif node.op in FUNCTIONAL_OPS:
            functions.rewrite_call(node, handles)
            for position, variable in handles.items():
                node.input[position] = value_ref(variable)
            kept.append(node)
        else:
            raise TransformError(
                f"op {node.name!r} ({node.op}) uses the handle of variable {handles[min(handles)]!r}; "
                "only reads can be replicated"
            )
    return kept, removed_reads


def _strip_placement(function: function_pb2.FunctionDef) -> None:
    """Drop the devices and colocation attributes inside a library function: lowered into
    each replica's graph, a colocation with an original op would tie the replicas together."""
    for node in function.node_def:
        node.device = ""
        node.attr.pop("_class", None)
    for attrs in function.arg_attr.values():
        attrs.attr.pop("_class", None)


class SubgraphCopier:
    """Copies sets of nodes of one original graph into the current default graph."""

    def __init__(self, original_graph):
        self._graph = original_graph
        graph_def = original_graph.as_graph_def()
        self._nodes = {node.name: node for node in graph_def.node}
        self._library = graph_def.library
        for function in self._library.function:
            _strip_placement(function)
        self.functions = FunctionRewriter(self._library, {
            node.name: VariableType(node.attr["dtype"].type, node.attr["shape"].shape)
            for node in graph_def.node if node.op == "VarHandleOp"
        })
        self._versions = graph_def.versions
        self._anchors: dict[str, Any] = {}

    def _read_new_ops(self) -> None:
        """Take in the ops and functions added to the original graph since (a fetch built
        after the session); the library keeps the functions already rewritten."""
        graph_def = self._graph.as_graph_def()
        self._nodes = {node.name: node for node in graph_def.node}
        for function in graph_def.library.function:
            _strip_placement(function)
            self.functions.add(function)

    def nodes(self, names: Iterable[str]) -> list[node_def_pb2.NodeDef]:
        """Fresh copies of the named original nodes, stripped of placement."""
        names = list(names)
        if any(name not in self._nodes for name in names):
            self._read_new_ops()
        copies = []
        for name in names:
            node = node_def_pb2.NodeDef()
            node.CopyFrom(self._nodes[name])
            node.device = ""
            if "_class" in node.attr:
                del node.attr["_class"]
            copies.append(node)
        return copies

    def _control_anchor(self, op) -> Any:
        """A tensor whose op runs after ``op``: ``input_map`` remaps control inputs to
        tensors only, and ops such as ``NoOp`` have no output."""
        if op.outputs:
            return op.outputs[0]
        if op.name not in self._anchors:
            with tf.control_dependencies([op]):
                self._anchors[op.name] = tf.constant(0, name=f"{op.name}/after")
        return self._anchors[op.name]

    def copy(
        self,
        nodes: list[node_def_pb2.NodeDef],
        resolve_data: ResolveData,
        resolve_control: ResolveControl,
        prefix: str,
    ) -> dict[str, Any]:
        """Import ``nodes`` under name scope ``prefix``; returns original name -> new op."""
        if not nodes:
            return {}
        inside = {node.name for node in nodes}
        input_map: dict[str, Any] = {}
        for node in nodes:
            keep_inputs = []
            for ref in node.input:
                producer, index = parse_input(ref)
                if producer in inside:
                    keep_inputs.append(ref)
                    continue
                if index < 0:
                    target = resolve_control(producer)
                    if target is None:
                        continue  # dropped control input
                    input_map[ref] = self._control_anchor(target)
                else:
                    input_map[f"{producer}:{index}"] = resolve_data(producer, index)
                keep_inputs.append(ref if index < 0 else f"{producer}:{index}")
            del node.input[:]
            node.input.extend(keep_inputs)
        graph_def = graph_pb2.GraphDef(node=nodes, library=self._library, versions=self._versions)
        imported = tf.graph_util.import_graph_def(
            graph_def,
            input_map=input_map,
            return_elements=[node.name for node in nodes],
            name=prefix,
        )
        return {node.name: op for node, op in zip(nodes, imported)}
