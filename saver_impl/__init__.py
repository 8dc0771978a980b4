"""Reference AutoDist-style implementation whose checkpoints the suite verifies.

``from saver_impl import AutoDist, Saver, SavedModelBuilder`` and
``from saver_impl.strategy import PS, ...`` port an AutoDist program by changing imports.

Extension points, each documented where it is defined (defaults: the reference behaviour):

* ``Saver.planner`` (a ``CheckpointPlanner``, set by a subclass): what is saved and restored, as plans;
* ``Saver.exported_graph``: the graph whose MetaGraph ``save`` writes;
* ``SavedModelBuilder.exported_graph`` and ``.exported_train_op``: what a SavedModel exports;
* ``AutoDist(aggregation=GradientAggregation subclass)``: how gradients are combined.

The names below are imported on first use, so ``saver_impl.strategy`` (plain data)
can be used without paying TensorFlow's import time.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AutoDist": "saver_impl.autodist",
    "AutoDistError": "saver_impl.errors",
    "TransformError": "saver_impl.errors",
    "UnsupportedGraph": "saver_impl.errors",
    "Saver": "saver_impl.checkpoint.saver",
    "SavedModelBuilder": "saver_impl.checkpoint.builder",
    "CheckpointPlanner": "saver_impl.checkpoint.planner",
    "GradientAggregation": "saver_impl.graph.aggregation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'saver_impl' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
