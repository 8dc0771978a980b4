"""Recording the user's optimizer step while the original graph is being built.

Inside ``AutoDist.scope()`` every call of ``tf.compat.v1.train.Optimizer.apply_gradients``
(``minimize`` calls it too) on the scope's graph is recorded: the optimizer, the
``(gradient, variable)`` pairs, ``global_step`` and the op it returned. The graph
transformation needs exactly these to copy the gradient computation per replica and to
re-apply the optimizer to the distributed storage.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

_Optimizer = tf.compat.v1.train.Optimizer
_original_apply_gradients = _Optimizer.apply_gradients
_lock = threading.Lock()
_active: list[CaptureLog] = []


@dataclass
class OptimizerStep:
    """One recorded ``apply_gradients`` call."""

    optimizer: Any
    grads_and_vars: list[tuple[Any, Any]]
    global_step: Any
    train_op: Any


@dataclass
class CaptureLog:
    """The optimizer steps recorded for one graph."""

    graph: Any
    steps: list[OptimizerStep]


def _recording_apply_gradients(self, grads_and_vars, global_step=None, name=None):
    grads_and_vars = list(grads_and_vars)
    train_op = _original_apply_gradients(self, grads_and_vars, global_step=global_step, name=name)
    graph = tf.compat.v1.get_default_graph()
    for log in _active:
        if log.graph is graph:
            log.steps.append(OptimizerStep(self, grads_and_vars, global_step, train_op))
    return train_op


@contextlib.contextmanager
def capture_optimizer_steps(graph) -> Iterator[CaptureLog]:
    """Record the optimizer steps built on ``graph`` while the context is open."""
    log = CaptureLog(graph=graph, steps=[])
    with _lock:
        _active.append(log)
        _Optimizer.apply_gradients = _recording_apply_gradients
    try:
        yield log
    finally:
        with _lock:
            _active.remove(log)
            if not _active:
                _Optimizer.apply_gradients = _original_apply_gradients
