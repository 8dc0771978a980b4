"""Recording the user's optimizer step while the original graph is being built.

Inside ``AutoDist.scope()`` every ``apply_gradients`` call (``minimize`` calls it too) on
the scope's graph is recorded: the optimizer, the ``(gradient, variable)`` pairs,
``global_step`` and the op or tensor it returned. The graph transformation needs exactly
these to copy the gradient computation per replica and to re-apply the optimizer to the
distributed storage. Three optimizer families are recorded:

* ``tf.compat.v1.train.Optimizer`` (``GradientDescentOptimizer``, ``AdamOptimizer``, ...);
* Keras 2's ``OptimizerV2`` (``tf.keras.optimizers.legacy.*`` with ``tf_keras``);
* Keras 2's newer ``Optimizer`` (``tf.keras.optimizers.*`` and ``tf.optimizers.*`` with
  ``tf_keras``). It is written for TF2 functions: in TF1 graph code TensorFlow builds its
  updates without control dependencies, and the op ``apply_gradients`` returns only
  increments ``iteration`` (plain TensorFlow then never changes the weights). Inside
  ``ad.scope()`` its slots are created first and the update is built under automatic
  control dependencies, as inside a ``tf.function``: each state is read after it is
  written, and the returned train op runs every update.

Keras 3 (TensorFlow's default ``tf.keras`` since 2.16) has no TF1 graph mode: a Keras 3
layer or optimizer used inside the scope raises :class:`KerasVersionError`, which says
what to do instead.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import tensorflow as tf
from tensorflow.python.framework import auto_control_deps

from saver_impl.errors import AutoDistError

_lock = threading.Lock()
_active: list[CaptureLog] = []
_patches: list[tuple[Any, str, Any]] = []  # (class, attribute, original), while any scope is open

LEGACY_KERAS_HINT = (
    "set TF_USE_LEGACY_KERAS=1 before TensorFlow is imported, and install the Keras 2 "
    "package (`pip install tf_keras`), so that tf.keras is Keras 2, which builds TF1 graphs"
)


class KerasVersionError(AutoDistError):
    """Keras 3 was used inside ``AutoDist.scope()``."""


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


def _logs_of_current_graph() -> list[CaptureLog]:
    graph = tf.compat.v1.get_default_graph()
    return [log for log in _active if log.graph is graph]


def _record(optimizer, grads_and_vars, global_step, train_op) -> None:
    for log in _logs_of_current_graph():
        log.steps.append(OptimizerStep(optimizer, grads_and_vars, global_step, train_op))


def _v1_apply_gradients(original: Callable) -> Callable:
    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        grads_and_vars = list(grads_and_vars)
        train_op = original(self, grads_and_vars, global_step=global_step, name=name)
        _record(self, grads_and_vars, global_step, train_op)
        return train_op

    return apply_gradients


def _keras_v2_apply_gradients(original: Callable) -> Callable:
    def apply_gradients(self, grads_and_vars, name=None, **kwargs):
        grads_and_vars = list(grads_and_vars)
        train_op = original(self, grads_and_vars, name=name, **kwargs)
        _record(self, grads_and_vars, None, train_op)
        return train_op

    return apply_gradients


def _keras_apply_gradients(original: Callable) -> Callable:
    def apply_gradients(self, grads_and_vars, name=None, **kwargs):
        grads_and_vars = list(grads_and_vars)
        if not _logs_of_current_graph():
            return original(self, grads_and_vars, name=name, **kwargs)
        # Slots first, outside the automatic dependencies (their initializers must not
        # become part of every step), as the optimizer makes them: in its name scope,
        # under tf.init_scope (free of the caller's control dependencies).
        with tf.name_scope(name or self.name or "optimizer"), tf.init_scope():
            self.build([v for _, v in grads_and_vars])
        with auto_control_deps.AutomaticControlDependencies() as dependencies:
            result = original(self, grads_and_vars, name=name, **kwargs)
            train_op = dependencies.mark_as_return(tf.convert_to_tensor(result))
        _record(self, grads_and_vars, None, train_op)
        return train_op

    return apply_gradients


def _refuse_keras3(what: str) -> Callable:
    def refuse(original: Callable) -> Callable:
        def call(self, *args, **kwargs):
            if _logs_of_current_graph():
                raise KerasVersionError(
                    f"{type(self).__name__} is a Keras 3 {what}: Keras 3 cannot build the TF1 "
                    f"graphs AutoDist transforms. To use tf.keras inside ad.scope(), {LEGACY_KERAS_HINT}."
                )
            return original(self, *args, **kwargs)

        return call

    return refuse


def _legacy_keras_requested() -> bool:
    return os.environ.get("TF_USE_LEGACY_KERAS", "").lower() in ("1", "true")


def _patch_targets() -> list[tuple[Any, str, Callable[[Callable], Callable]]]:
    """(class, method, wrapper factory) for every optimizer family this process can use."""
    targets: list[tuple[Any, str, Callable[[Callable], Callable]]] = [
        (tf.compat.v1.train.Optimizer, "apply_gradients", _v1_apply_gradients),
    ]
    if importlib.util.find_spec("tf_keras") is not None:
        optimizer_v2 = importlib.import_module("tf_keras.src.optimizers.legacy.optimizer_v2")
        keras_optimizer = importlib.import_module("tf_keras.src.optimizers.optimizer")
        targets.append((optimizer_v2.OptimizerV2, "apply_gradients", _keras_v2_apply_gradients))
        targets.append((keras_optimizer.Optimizer, "apply_gradients", _keras_apply_gradients))
    if not _legacy_keras_requested() and importlib.util.find_spec("keras") is not None:
        keras = importlib.import_module("keras")
        if keras.__version__.startswith("3."):
            targets.append((keras.layers.Layer, "__call__", _refuse_keras3("layer")))
            targets.append((keras.optimizers.Optimizer, "apply_gradients", _refuse_keras3("optimizer")))
    return targets


def _install() -> None:
    for cls, attribute, wrap in _patch_targets():
        own = cls.__dict__.get(attribute)  # None: inherited, restored by deleting ours
        _patches.append((cls, attribute, own))
        setattr(cls, attribute, wrap(getattr(cls, attribute)))


def _uninstall() -> None:
    while _patches:
        cls, attribute, own = _patches.pop()
        if own is None:
            delattr(cls, attribute)
        else:
            setattr(cls, attribute, own)


@contextlib.contextmanager
def capture_optimizer_steps(graph) -> Iterator[CaptureLog]:
    """Record the optimizer steps built on ``graph`` while the context is open."""
    log = CaptureLog(graph=graph, steps=[])
    with _lock:
        if not _active:
            _install()
        _active.append(log)
    try:
        yield log
    finally:
        with _lock:
            _active.remove(log)
            if not _active:
                _uninstall()
