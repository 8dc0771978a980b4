"""Single-device oracles shared by the properties checked on one case.

Building an oracle (the original graph, its Saver, a session, the initializer) costs
about as much as a distributed session's graph transformation, and the properties of
one case ask for an oracle of the same model several times: save_fidelity's k steps,
restore_fidelity's plain restore, fine_tune's continuations, crash_consistency's two
states and its plain restore; save_fidelity and saved_model also compare exports
with the original graph. An :class:`OraclePool` builds one oracle per model and, on
each later use, loads the initial values it captured right after initialization; it
keeps the original graph as each oracle's model builder left it, before the oracle
added its own ops.

That reset is exact because, within the equivalence contract, an oracle's only state
is its global variables: generated models take their batches from placeholders, and
a model with stateful random ops (dropout, whose kernels keep their own counters) is
outside the contract, so it gets a new oracle each time.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from autodist_verify import model_graph, model_spec
from autodist_verify.oracle import Oracle, TrainModel


def _key(model: Mapping[str, Any]) -> str:
    """One model spec's key, the same for equal specs."""
    return json.dumps(model, sort_keys=True)


class OraclePool:
    """Oracles of model specs, each handed out with every variable at its initial value.

    An oracle in use is never handed out twice: a second concurrent request for the same
    model builds another. :meth:`close` closes every oracle built.
    """

    def __init__(self) -> None:
        self._idle: dict[str, list[tuple[Oracle, dict[str, np.ndarray]]]] = {}
        self._built: list[Oracle] = []
        self._graph_defs: dict[str, Any] = {}

    @contextlib.contextmanager
    def fresh(self, model: Mapping[str, Any]) -> Iterator[Oracle]:
        """An oracle of ``model`` (R = 1 by default, as :class:`Oracle`) as a newly
        built one is: its variables at their initial values."""
        key = _key(model)
        reusable = model_spec.outside_contract(model) is None
        idle = self._idle.setdefault(key, [])
        if reusable and idle:
            oracle, initial = idle.pop()
            oracle.load(initial)
        else:
            oracle = Oracle(lambda: self._build(model, key))
            self._built.append(oracle)
            initial = oracle.variables() if reusable else {}
        try:
            yield oracle
        finally:
            if reusable:
                idle.append((oracle, initial))

    def original_graph_def(self, model: Mapping[str, Any]) -> Any:
        """The ``GraphDef`` of ``model``'s original graph, built by plain TensorFlow
        (an oracle's graph before the oracle's own ops)."""
        key = _key(model)
        if key not in self._graph_defs:
            with self.fresh(model):
                pass
        return self._graph_defs[key]

    def _build(self, model: Mapping[str, Any], key: str) -> TrainModel:
        import tensorflow as tf

        handles = model_graph.build(model)
        self._graph_defs.setdefault(key, tf.compat.v1.get_default_graph().as_graph_def())
        return handles

    def close(self) -> None:
        """Close every oracle the pool built."""
        for oracle in self._built:
            oracle.close()
        self._built.clear()
        self._idle.clear()

    def __enter__(self) -> OraclePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def fresh_oracle(model: Mapping[str, Any], oracles: OraclePool | None = None) -> Iterator[Oracle]:
    """A freshly initialized oracle of ``model``: from ``oracles`` if given, else built
    for this use and closed after it."""
    if oracles is not None:
        with oracles.fresh(model) as oracle:
            yield oracle
        return
    with OraclePool() as pool, pool.fresh(model) as oracle:
        yield oracle
