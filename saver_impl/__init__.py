"""Reference AutoDist-style implementation whose checkpoints the suite verifies.

``from saver_impl import AutoDist, Saver, SavedModelBuilder`` and
``from saver_impl.strategy import PS, ...`` port an AutoDist program by changing imports.

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
    "Saver": "saver_impl.checkpoint",
    "SavedModelBuilder": "saver_impl.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'saver_impl' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
