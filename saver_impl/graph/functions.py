"""Making control flow read variable values instead of variable handles.

TensorFlow 2 builds ``tf.cond`` and ``tf.while_loop`` as functional ops (``If``,
``StatelessIf``, ``While``, ``StatelessWhile``; a ``tf.function`` call is a
``PartitionedCall`` or ``StatefulPartitionedCall``). A variable read inside is captured:
the op takes the variable's resource handle as an input, and its functions (in the
graph's function library) read that argument with ``ReadVariableOp``. A ``While``
passes the handle through: its output at that position is the handle again, which the
gradient reads with ``VariableShape``.

The compute part copied to the replicas reads per-replica *values*, not handles (see
:func:`saver_impl.graph.subgraph.rewrite_handle_readers`). :class:`FunctionRewriter`
makes the functions of such an op take the value instead: the argument's type becomes
the variable's dtype, ``ReadVariableOp`` becomes ``Identity``, ``ResourceGather``
``GatherV2`` and ``VariableShape`` ``Shape`` (the same bytes), and a nested functional op
that receives the argument is rewritten the same way. Any other use of the handle (an
assignment inside a branch, say) is refused: a replica has no variable to write.
The backward ops ``tf.gradients`` builds take the forward op's outputs and intermediates,
not handles, except the ``VariableShape`` of a ``While``'s passthrough output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2, function_pb2, node_def_pb2, tensor_shape_pb2, types_pb2

from saver_impl.errors import TransformError, UnsupportedGraph


@dataclass(frozen=True)
class CallSpec:
    """Where a functional op's function arguments start among its inputs, which attrs
    name its functions and which attr lists the arguments' types."""

    first_arg: int
    functions: tuple[str, ...]
    types: str


FUNCTIONAL_OPS = {
    "If": CallSpec(1, ("then_branch", "else_branch"), "Tin"),
    "StatelessIf": CallSpec(1, ("then_branch", "else_branch"), "Tin"),
    "While": CallSpec(0, ("cond", "body"), "T"),
    "StatelessWhile": CallSpec(0, ("cond", "body"), "T"),
    "PartitionedCall": CallSpec(0, ("f",), "Tin"),
    "StatefulPartitionedCall": CallSpec(0, ("f",), "Tin"),
}
WHILE_OPS = frozenset({"While", "StatelessWhile"})
READ_OPS = "ReadVariableOp, ResourceGather, VariableShape"


@dataclass(frozen=True)
class VariableType:
    """A variable's dtype (a ``DataType`` enum) and shape, as its ``VarHandleOp`` declares them."""

    dtype: int
    shape: tensor_shape_pb2.TensorShapeProto


def const_node(name: str, value: int) -> node_def_pb2.NodeDef:
    """An int32 ``Const`` node."""
    node = node_def_pb2.NodeDef(name=name, op="Const")
    node.attr["dtype"].type = types_pb2.DT_INT32
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value, dtype=tf.int32))
    return node


def value_reader(node: node_def_pb2.NodeDef, value: str, dtype: int, axis_ref: str = "") -> node_def_pb2.NodeDef:
    """``node`` (a ``ResourceGather`` or ``VariableShape``) as the same op on ``value``, the
    variable's value of ``dtype``: ``GatherV2`` (its axis, 0, read from ``axis_ref``) or ``Shape``."""
    new = node_def_pb2.NodeDef(name=node.name)
    if node.op == "ResourceGather":
        new.op = "GatherV2"
        new.input.extend([value, node.input[1], axis_ref])
        new.attr["Tparams"].CopyFrom(node.attr["dtype"])
        new.attr["Tindices"].CopyFrom(node.attr["Tindices"])
        new.attr["Taxis"].type = types_pb2.DT_INT32
        new.attr["batch_dims"].CopyFrom(
            node.attr["batch_dims"] if "batch_dims" in node.attr else attr_value_pb2.AttrValue(i=0)
        )
    else:  # VariableShape
        new.op = "Shape"
        new.input.append(value)
        new.attr["T"].type = dtype
        new.attr["out_type"].CopyFrom(node.attr["out_type"])
    new.input.extend(i for i in node.input[1 + (node.op == "ResourceGather"):] if i.startswith("^"))
    return new


def _producer(ref: str) -> str:
    """The node (or argument) a reference inside a function names: ``"a/b:output:0"`` -> ``"a/b"``."""
    return ref.lstrip("^").split(":", 1)[0]


def _topological(nodes: list[node_def_pb2.NodeDef]) -> list[node_def_pb2.NodeDef]:
    """A function's nodes, each after the nodes it reads (a library keeps no order)."""
    by_name = {node.name: node for node in nodes}
    ordered: list[node_def_pb2.NodeDef] = []
    state: dict[str, bool] = {}  # False while being visited, True once placed
    for root in nodes:
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                state[node.name] = True
                ordered.append(node)
                continue
            if node.name in state:
                continue
            state[node.name] = False
            stack.append((node, True))
            for ref in node.input:
                producer = by_name.get(_producer(ref))
                if producer is not None and producer.name not in state:
                    stack.append((producer, False))
    return ordered


class FunctionRewriter:
    """Rewrites functional ops (and the functions they call) to take variable values.

    Args:
        library: the function library the copies are imported with; rewritten functions
            are added to it under new names (the original functions stay as they are).
        variables: each variable's dtype and shape, by variable name.
    """

    def __init__(self, library: function_pb2.FunctionDefLibrary, variables: Mapping[str, VariableType]):
        self._library = library
        self.variables = variables
        self._functions = {f.signature.name: f for f in library.function}
        self._rewritten: dict[tuple[str, tuple[tuple[int, str], ...]], tuple[str, dict[int, str]]] = {}

    def add(self, function: function_pb2.FunctionDef) -> None:
        """Add a function of the original graph made after this rewriter (no-op if known)."""
        if function.signature.name not in self._functions:
            self._library.function.add().CopyFrom(function)
            self._functions[function.signature.name] = self._library.function[-1]

    def rewrite_call(self, node: node_def_pb2.NodeDef, handles: Mapping[int, str]) -> None:
        """Make functional op ``node`` take values where its inputs at positions
        ``handles`` take variable handles (position -> variable), in place: its functions
        and type attrs change; the caller points those inputs to the values. A ``While``'s
        outputs at those positions then carry the same values."""
        spec = FUNCTIONAL_OPS[node.op]
        args = {position - spec.first_arg: variable for position, variable in handles.items()}
        for attr in spec.functions:
            function = node.attr[attr].func.name
            name, returned = self._rewrite_function(function, args, node.name)
            # A loop passes a captured handle through (output i is argument i); nothing
            # else may hand a handle back to the caller.
            if returned != (args if node.op in WHILE_OPS and attr == "body" else {}):
                raise UnsupportedGraph(
                    f"function {function!r} of {node.op} {node.name!r} returns variable handles "
                    f"(output -> variable: {returned}) other than passing a loop variable through; "
                    "only reading a variable inside control flow can be replicated"
                )
            node.attr[attr].func.name = name
        for index, variable in args.items():
            var_type = self.variables[variable]
            node.attr[spec.types].list.type[index] = var_type.dtype
            if node.op in WHILE_OPS and node.attr["output_shapes"].list.shape:
                node.attr["output_shapes"].list.shape[index].CopyFrom(var_type.shape)
        if "_read_only_resource_inputs" in node.attr:
            read_only = node.attr["_read_only_resource_inputs"].list.i
            kept = [i for i in read_only if i not in handles]
            del read_only[:]
            read_only.extend(kept)

    def _rewrite_function(self, name: str, args: Mapping[int, str], caller: str) -> tuple[str, dict[int, str]]:
        """The name of a copy of function ``name`` whose arguments ``args`` (index ->
        variable) take values, and its outputs (index -> variable) that return them."""
        key = (name, tuple(sorted(args.items())))
        if key in self._rewritten:
            return self._rewritten[key]
        original = self._functions.get(name)
        if original is None:
            raise TransformError(f"{caller!r} calls function {name!r}, which is not in the graph's library")
        function = function_pb2.FunctionDef()
        function.CopyFrom(original)
        new_name = f"{name}_read_values"
        while new_name in self._functions:
            new_name += "_"
        function.signature.name = new_name
        handles: dict[str, str] = {}  # reference inside the function -> variable
        for index, variable in args.items():
            arg = function.signature.input_arg[index]
            if arg.type != types_pb2.DT_RESOURCE:
                raise TransformError(f"argument {index} of function {name!r} is not a resource handle")
            arg.type = self.variables[variable].dtype
            handles[arg.name] = variable
            function.resource_arg_unique_id.pop(index, None)
            for attr in ("_output_shapes", "_handle_dtypes", "_handle_shapes"):
                function.arg_attr[index].attr.pop(attr, None)
        renamed = self._rewrite_body(function, handles, f"function {name!r} called by {caller!r}")
        returned: dict[int, str] = {}
        for index, arg in enumerate(function.signature.output_arg):
            ref = renamed.get(function.ret[arg.name], function.ret[arg.name])
            function.ret[arg.name] = ref
            if ref in handles:
                arg.type = self.variables[handles[ref]].dtype
                returned[index] = handles[ref]
        self._library.function.add().CopyFrom(function)
        self._functions[new_name] = function
        self._rewritten[key] = (new_name, returned)
        return new_name, returned

    def _rewrite_body(self, function: function_pb2.FunctionDef, handles: dict[str, str], where: str) -> dict[str, str]:
        """Rewrite the nodes of ``function`` that use the references in ``handles``
        (extended in place with a nested ``While``'s passthrough outputs); returns the
        renamed output references (a ``ReadVariableOp``'s ``value`` becomes an
        ``Identity``'s ``output``)."""
        renamed: dict[str, str] = {}
        nodes: list[node_def_pb2.NodeDef] = []
        for original in _topological(list(function.node_def)):
            node = node_def_pb2.NodeDef()
            node.CopyFrom(original)
            for k, ref in enumerate(node.input):
                node.input[k] = renamed.get(ref, ref)
            used = {k: handles[ref] for k, ref in enumerate(node.input) if ref in handles}
            if not used:
                nodes.append(node)
                continue
            variable = used[min(used)]
            dtype = self.variables[variable].dtype
            if node.op == "ReadVariableOp":
                identity = node_def_pb2.NodeDef(name=node.name, op="Identity", input=node.input)
                identity.attr["T"].type = dtype
                renamed[f"{node.name}:value:0"] = f"{node.name}:output:0"
                nodes.append(identity)
            elif node.op == "ResourceGather" and set(used) == {0}:
                axis = const_node(f"{node.name}/axis", 0)
                nodes.extend([axis, value_reader(node, node.input[0], dtype, f"{axis.name}:output:0")])
            elif node.op == "VariableShape":
                nodes.append(value_reader(node, node.input[0], dtype))
            elif node.op in FUNCTIONAL_OPS:
                self.rewrite_call(node, used)
                if node.op in WHILE_OPS:
                    handles.update({f"{node.name}:output:{k}": v for k, v in used.items()})
                nodes.append(node)
            else:
                raise UnsupportedGraph(
                    f"variable {variable!r} is used by {node.op} {node.name!r} inside {where}; "
                    f"inside control flow only reads ({READ_OPS}) of a variable can be replicated"
                )
        del function.node_def[:]
        function.node_def.extend(nodes)
        return renamed
