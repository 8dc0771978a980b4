"""Saving and restoring the original graph from a distributed session.

:class:`Saver` and :class:`SavedModelBuilder` have TensorFlow's interfaces. A checkpoint
written from a distributed session holds the keys, shapes and dtypes TensorFlow's own
Saver writes for the original single-device graph, with the logical values.

* :mod:`.plan` (no TensorFlow): which copy of which part is written where, and which
  copies a restore writes, as plain data;
* :mod:`.planner` (no TensorFlow): :class:`CheckpointPlanner`, the Saver's extension point;
* :mod:`.saveables`: TensorFlow saveable objects built from plan entries;
* :mod:`.session_view`: what TensorFlow's Saver code is handed instead of the session;
* :mod:`.staging`: where a save writes before its checkpoint exists (the state file names
  only complete checkpoints), and client-side resolution of relative paths;
* :mod:`.visibility`: the check that every host of a sharded save or restore sees the
  checkpoint directory the client sees (:class:`CheckpointNotShared` otherwise);
* :mod:`.saver` and :mod:`.builder`: the Saver and the SavedModel builder;
  :mod:`.saved_model_builder` is AutoDist's module path of the builder (an alias:
  ``saver_impl.checkpoint.saved_model_builder.SavedModelBuilder`` is
  ``saver_impl.checkpoint.builder.SavedModelBuilder``), as :mod:`.saver` is for the Saver.

The names below are imported on first use, so the plan can be used without TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Saver": "saver_impl.checkpoint.saver",
    "SavedModelBuilder": "saver_impl.checkpoint.builder",
    "CheckpointPlanner": "saver_impl.checkpoint.planner",
    "CheckpointNotShared": "saver_impl.checkpoint.visibility",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'saver_impl.checkpoint' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
