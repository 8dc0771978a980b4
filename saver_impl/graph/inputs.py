"""The input pipeline of the distributed graph: a tf.data iterator, copied once.

The ``get_next`` op of an iterator and everything behind it (the iterator, the dataset
ops, a dataset's placeholders) are copied once, onto the aux device. Each step takes
one element, the global batch; every component of rank >= 1 is split along dimension 0
into R ordered pieces, the first ``n % R`` one example larger (``np.array_split``'s
order), and a rank-0 component goes whole to every replica. An element with fewer
examples than replicas fails the step, naming the op.

Refused, naming the op: a pipeline that reads a variable, or one that runs Python
(``Dataset.from_generator``, ``tf.py_function``): it would run on a node, which cannot
call back into the process that built the graph.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from saver_impl.errors import TransformError
from saver_impl.graph.analysis import ITERATOR_RESOURCES, GraphItem, ancestors
from saver_impl.graph.subgraph import SubgraphCopier

# Ops that call back into the Python process that built the graph.
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})


class InputPipeline:
    """The single copy of the original graph's input pipeline, and its per-replica pieces.

    Args:
        item: the analysed original graph (its ``input_ops``: the ``get_next`` ops the
            compute part reads).
        graph: the distributed graph.
        copier: copies original ops into it.
        device: where the pipeline runs.
        replicas: R.
    """

    def __init__(self, item: GraphItem, graph: Any, copier: SubgraphCopier, device: str, replicas: int):
        self.item = item
        self._graph = graph
        self._copier = copier
        self._device = device
        self._replicas = replicas
        self.ops: dict[str, Any] = {}  # original op name -> its one copy
        self._pieces: dict[tuple[str, int], list[Any]] = {}
        self._copy(list(item.input_ops.values()))

    def copy_of(self, original_op) -> Any:
        """The single copy of an input-pipeline op (an iterator's ``get_next`` or
        initializer, a dataset's placeholder), made on first use; None for any other op."""
        if original_op.name in self.ops:
            return self.ops[original_op.name]
        upstream = ancestors([original_op], stop=lambda op: False)
        if not any(op.type in ITERATOR_RESOURCES for op in upstream):
            return None
        if any(op.name in self.item.compute_ops for op in upstream):
            return None
        self._copy([original_op])
        return self.ops[original_op.name]

    def piece(self, get_next: str, index: int, replica: int) -> Any:
        """Replica ``replica``'s piece of output ``index`` of the iterator op ``get_next``."""
        key = (get_next, index)
        if key not in self._pieces:
            element = self.ops[get_next].outputs[index]
            with self._graph.as_default(), tf.device(self._device):
                if element.shape.rank == 0:
                    pieces = [element] * self._replicas
                else:
                    pieces = self._split(element, get_next)
            self._pieces[key] = pieces
        return self._pieces[key][replica]

    def _copy(self, original_ops: list[Any]) -> None:
        """Copy original input-pipeline ops (and their missing ancestors) once."""
        missing = ancestors(original_ops, stop=lambda op: op.name in self.ops)
        for op in missing:
            if op.type == "VarHandleOp":
                raise TransformError(
                    f"the input pipeline uses variable {op.name!r}; an input pipeline must not read variables"
                )
        self._refuse_python(missing)

        def resolve_data(producer: str, index: int):
            return self.ops[producer].outputs[index]

        with self._graph.as_default(), tf.device(self._device):
            self.ops.update(self._copier.copy(
                self._copier.nodes(op.name for op in missing), resolve_data, self.ops.get, prefix="input",
            ))

    def _refuse_python(self, ops: list[Any]) -> None:
        library = {f.signature.name: f for f in self.item.graph.as_graph_def().library.function}
        for op in ops:
            pending = [value.func.name for value in op.node_def.attr.values() if value.func.name]
            seen: set[str] = set()
            while pending:
                name = pending.pop()
                if name in seen or name not in library:
                    continue
                seen.add(name)
                for node in library[name].node_def:
                    if node.op in PYTHON_OPS:
                        raise TransformError(
                            f"the input pipeline op {op.name!r} runs Python ({node.op} in function {name!r}, "
                            "from Dataset.from_generator or tf.py_function): it would run on a node, which "
                            "cannot call back into this process; build the dataset from tensors or files"
                        )
                    pending.extend(v.func.name for v in node.attr.values() if v.func.name)

    def _split(self, element, get_next: str) -> list[Any]:
        """``np.array_split`` along dimension 0, in graph ops, refusing empty pieces."""
        replicas = self._replicas
        if replicas == 1:
            return [element]
        count = tf.shape(element)[0]
        enough = tf.debugging.assert_greater_equal(
            count, replicas,
            message=f"{get_next}: an element of the input must hold at least {replicas} examples, "
                    "one per replica; got",
        )
        with tf.control_dependencies([enough]):
            larger = tf.cast(tf.range(replicas) < count % replicas, tf.int32)
            sizes = count // replicas + larger
        return tf.split(element, sizes, num=replicas, axis=0)
