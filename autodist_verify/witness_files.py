"""The files the suite exchanges with the plain-TensorFlow witness (numpy only, no TensorFlow).

* A feeds file (``.npz``) holds one entry per step and placeholder, named ``STEP/NAME``
  (``0/x``, ``0/y``, ``1/x``, ...).
* A result file (``.npz``) holds ``restored/VAR`` (right after a restore or load),
  ``final/VAR`` (after training the given steps) and ``outputs/KEY`` (a signature's
  outputs), each section only where the job produces it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np


def load_steps(path: str | Path) -> list[dict[str, np.ndarray]]:
    """The per-step feeds of a feeds file, in step order."""
    steps: dict[int, dict[str, np.ndarray]] = defaultdict(dict)
    with np.load(path) as data:
        for key in data.files:
            step, _, name = key.partition("/")
            steps[int(step)][name] = data[key]
    return [steps[i] for i in sorted(steps)]


def save_steps(path: str | Path, steps: list[dict[str, np.ndarray]]) -> None:
    """Write per-step feeds in the format :func:`load_steps` reads."""
    np.savez(path, **{f"{i}/{name}": value for i, feed in enumerate(steps) for name, value in feed.items()})


def save_result(path: str | Path, **sections: dict[str, np.ndarray]) -> None:
    """Write a result file: ``save_result(out, restored={...}, final={...})``."""
    np.savez(path, **{f"{section}/{name}": value for section, values in sections.items()
                      for name, value in values.items()})


def load_result(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """A result file as {section: {name: value}} (sections restored, final, outputs)."""
    result: dict[str, dict[str, np.ndarray]] = {"restored": {}, "final": {}, "outputs": {}}
    with np.load(path) as data:
        for key in data.files:
            section, _, name = key.partition("/")
            result.setdefault(section, {})[name] = data[key]
    return result
