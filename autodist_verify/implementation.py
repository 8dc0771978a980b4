"""Loading the implementation under test, and handing it cases' strategies.

An implementation is a Python module (``--impl MODULE``, default ``saver_impl``) that
exposes, with AutoDist's API and TensorFlow's Saver interfaces (the protocols of
:mod:`autodist_verify.interface`):

* ``AutoDist(resource_spec_file=None, strategy_builder=None, *, strategy=None,
  cluster=None)`` with ``scope()``, ``create_distributed_session()`` and ``close()``;
  ``cluster`` is a running :class:`cluster_sim.LocalCluster` to use, ``strategy`` a
  hand-made :class:`autodist_verify.strategy_format.Strategy` (the suite's format);
* ``Saver`` (``tf.compat.v1.train.Saver``'s interface: ``save`` also updates the
  checkpoint state file and writes the *original* graph's MetaGraph beside the
  checkpoint) and ``SavedModelBuilder`` (``tf.compat.v1.saved_model.Builder``'s; it
  exports the original graph and records the train op in the ``saved_model_train_op``
  collection so a loader can fine-tune);
* a ``strategy`` submodule (or attribute) with AutoDist's builders (``PS``,
  ``PartitionedPS``, ...).

Optional: a distributed session's ``stored_copies()`` returns, per variable, every
stored part and mirror as ``[(numpy index of the part in the full variable, value),
...]``. With it the suite checks every copy directly after a restore; without it, only
through training (a wrong mirror or part changes the next steps' results). It is also
how the suite learns which variables the implementation split into parts (copies at
different indices): float32 Adagrad on a partitioned dense variable is not applicable
(see ``Case.not_applicable``), and without ``stored_copies()`` every float32 Adagrad
case is, since the layout is unknown.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from autodist_verify.interface import REQUIRED
from autodist_verify.strategy_format import Strategy

DEFAULT_IMPLEMENTATION = "saver_impl"


class ImplementationError(ImportError):
    """The module named by ``--impl`` cannot be used; the message says why."""


@dataclass
class Implementation:
    """A loaded implementation under test."""

    name: str
    module: ModuleType
    strategy_module: ModuleType

    @property
    def AutoDist(self) -> Any:  # noqa: N802 - the interface's own name
        return self.module.AutoDist

    @property
    def Saver(self) -> Any:  # noqa: N802
        return self.module.Saver

    @property
    def SavedModelBuilder(self) -> Any:  # noqa: N802
        return self.module.SavedModelBuilder

    def strategy_arguments(self, strategy: Mapping[str, Any]) -> dict[str, Any]:
        """``AutoDist`` keyword arguments for a case's ``{builder: NAME}`` or ``{custom: ...}``."""
        if "builder" in strategy:
            builder = getattr(self.strategy_module, strategy["builder"], None)
            if builder is None:
                raise ImplementationError(f"{self.name}: its strategy module has no builder {strategy['builder']!r}")
            return {"strategy_builder": builder()}
        return {"strategy": Strategy.from_dict(strategy["custom"], source="case strategy")}


def _import(name: str) -> ModuleType:
    """Import ``name`` from ``sys.path``, else from the current directory (as ``python -m``
    would: an installed ``autodist-verify`` command does not search it by itself)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        top = name.split(".")[0]
        if err.name != top or os.getcwd() in sys.path or not (Path(top).is_dir() or Path(f"{top}.py").is_file()):
            raise
        sys.path.insert(0, os.getcwd())
        return importlib.import_module(name)


def _summary(error: BaseException) -> str:
    """An exception's type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def load_implementation(name: str = DEFAULT_IMPLEMENTATION) -> Implementation:
    """Import ``name`` (from ``sys.path`` or the current directory) and check that it
    provides the interface. Whatever its import raises (a module exiting included)
    becomes an :class:`ImplementationError` naming the module, the exception's type and
    the first line of its message."""
    try:
        module = _import(name)
    except (Exception, SystemExit) as err:  # a module that cannot be imported is bad input, whatever it raises
        raise ImplementationError(f"--impl {name}: cannot import it: {_summary(err)}") from err
    missing = [attr for attr in REQUIRED if not hasattr(module, attr)]
    if missing:
        raise ImplementationError(
            f"--impl {name}: the module has no {', '.join(missing)} (an implementation "
            f"exposes {', '.join(REQUIRED)})"
        )
    try:
        strategy_module = importlib.import_module(f"{name}.strategy")
    except ImportError:
        strategy_module = getattr(module, "strategy", None)
    except (Exception, SystemExit) as err:
        raise ImplementationError(f"--impl {name}: cannot import {name}.strategy: {_summary(err)}") from err
    if strategy_module is None:
        raise ImplementationError(
            f"--impl {name}: no strategy module ({name}.strategy or the attribute {name}.strategy) "
            "with AutoDist's builders"
        )
    return Implementation(name=name, module=module, strategy_module=strategy_module)
