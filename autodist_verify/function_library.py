"""The functions an exported graph's control flow calls, checked against the original.

``tf.cond``, ``tf.while_loop`` and ``tf.function`` calls are nodes (``If``, ``While``,
``PartitionedCall``...) whose attributes name functions of the graph's function
library. A MetaGraph that keeps the nodes but not those functions imports and restores
fine — no function runs then — and fails at the first forward pass; one whose
functions were rewritten for the distributed graph (taking a variable's value instead
of its handle) fails the same way. Function names carry a process-wide counter
(``cond_true_12``), so functions are matched through the node and attribute that call
them, not by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def called_functions(node: Any) -> Iterator[tuple[str, str]]:
    """``(attribute, function name)`` for each function a NodeDef's attributes name."""
    for attr, value in sorted(node.attr.items()):
        if value.HasField("func"):
            yield attr, value.func.name
        elif value.HasField("list"):
            for position, func in enumerate(value.list.func):
                yield f"{attr}[{position}]", func.name


def _library(graph_def: Any) -> dict[str, Any]:
    """A GraphDef's functions by name."""
    return {function.signature.name: function for function in graph_def.library.function}


def _signature(function: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A FunctionDef's argument and result types, as text (``DT_FLOAT``, or the
    attribute naming the type)."""

    from tensorflow.core.framework import types_pb2

    def kinds(args):
        return tuple(types_pb2.DataType.Name(arg.type) if arg.type else arg.type_attr or arg.type_list_attr
                     for arg in args)

    return kinds(function.signature.input_arg), kinds(function.signature.output_arg)


def function_library_problems(graph_def: Any, original_graph_def: Any | None = None) -> list[str]:
    """What is wrong with ``graph_def``'s function library, one sentence each.

    Always: a node, or a node inside a library function, names a function the library
    does not hold. With the original graph: a node of the original calls, through the
    same attribute, a function whose argument or result types differ.
    """
    library = _library(graph_def)
    problems = []
    callers = [(f"node {node.name!r} ({node.op})", node) for node in graph_def.node]
    for function in graph_def.library.function:
        callers += [(f"node {node.name!r} of function {function.signature.name!r}", node)
                    for node in function.node_def]
    for where, node in callers:
        for attr, name in called_functions(node):
            if name not in library:
                problems.append(f"{where} calls function {name!r} ({attr}), which the function library does not hold")
    if original_graph_def is None:
        return problems
    original_library = _library(original_graph_def)
    exported_nodes = {node.name: node for node in graph_def.node}
    for original_node in original_graph_def.node:
        node = exported_nodes.get(original_node.name)
        if node is None:
            continue
        exported_calls = dict(called_functions(node))
        for attr, original_name in called_functions(original_node):
            name = exported_calls.get(attr)
            if name not in library or original_name not in original_library:
                continue
            expected, actual = _signature(original_library[original_name]), _signature(library[name])
            if actual != expected:
                problems.append(
                    f"node {node.name!r} ({node.op}) calls function {name!r} ({attr}) taking {list(actual[0])} "
                    f"and giving {list(actual[1])}; the original's takes {list(expected[0])} "
                    f"and gives {list(expected[1])}"
                )
    return problems
