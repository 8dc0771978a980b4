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
from tensorflow.core.framework import attr_value_pb2, graph_pb2, node_def_pb2, types_pb2

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


def _const_node(name: str, value: int) -> node_def_pb2.NodeDef:
    node = node_def_pb2.NodeDef(name=name, op="Const")
    node.attr["dtype"].type = types_pb2.DT_INT32
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value, dtype=tf.int32))
    return node


def rewrite_handle_readers(
    nodes: list[node_def_pb2.NodeDef], handle_to_variable: dict[str, str]
) -> tuple[list[node_def_pb2.NodeDef], dict[str, str]]:
    """Make readers of variable handles read a value input instead.

    ``ReadVariableOp`` nodes are removed: the returned dict maps each removed node's
    name to its variable, and their consumers are remapped to the value at import.
    ``ResourceGather`` becomes ``GatherV2`` and ``VariableShape`` becomes ``Shape`` on
    the value (a gather is a copy, so both give the same bytes).
    """
    kept: list[node_def_pb2.NodeDef] = []
    removed_reads: dict[str, str] = {}
    for node in nodes:
        handle = parse_input(node.input[0])[0] if node.input else None
        variable = handle_to_variable.get(handle) if handle else None
        if variable is None or node.op not in ("ReadVariableOp", "ResourceGather", "VariableShape"):
            kept.append(node)
            continue
        if node.op == "ReadVariableOp":
            removed_reads[node.name] = variable
            continue
        new = node_def_pb2.NodeDef(name=node.name)
        if node.op == "ResourceGather":
            axis = _const_node(f"{node.name}/axis", 0)
            kept.append(axis)
            new.op = "GatherV2"
            new.input.extend([value_ref(variable), node.input[1], axis.name])
            new.attr["Tparams"].CopyFrom(node.attr["dtype"])
            new.attr["Tindices"].CopyFrom(node.attr["Tindices"])
            new.attr["Taxis"].type = types_pb2.DT_INT32
            new.attr["batch_dims"].CopyFrom(
                node.attr["batch_dims"] if "batch_dims" in node.attr
                else attr_value_pb2.AttrValue(i=0)
            )
        else:  # VariableShape
            new.op = "Shape"
            new.input.append(value_ref(variable))
            new.attr["T"].CopyFrom(node.attr["dtype"])
            new.attr["out_type"].CopyFrom(node.attr["out_type"])
        new.input.extend(i for i in node.input[1 + (node.op == "ResourceGather"):] if i.startswith("^"))
        kept.append(new)
    return kept, removed_reads


class SubgraphCopier:
    """Copies sets of nodes of one original graph into the current default graph."""

    def __init__(self, original_graph):
        self._graph = original_graph
        self._read()
        self._anchors: dict[str, Any] = {}

    def _read(self) -> None:
        graph_def = self._graph.as_graph_def()
        self._nodes = {node.name: node for node in graph_def.node}
        self._library = graph_def.library
        self._versions = graph_def.versions

    def nodes(self, names: Iterable[str]) -> list[node_def_pb2.NodeDef]:
        """Fresh copies of the named original nodes, stripped of placement."""
        names = list(names)
        if any(name not in self._nodes for name in names):
            self._read()  # ops built after this copier was made (a fetch built after the session)
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
