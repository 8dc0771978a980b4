"""The files the suite exchanges with the plain-TensorFlow witness (numpy only, no TensorFlow).

* A feeds file (``.npz``) holds one entry per step and placeholder, named ``STEP/NAME``
  (``0/x``, ``0/y``, ``1/x``, ...).
* An inputs file (``.npz``) holds a signature's inputs by name.
* A result file (``.npz``) holds ``restored/VAR`` (right after a restore or load),
  ``final/VAR`` (after training the given steps) and ``outputs/KEY`` (a signature's
  outputs), each section only where the job produces it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

# NumPy's .npz keeps only NumPy's own dtypes: an ml_dtypes array (bfloat16) would come
# back as raw bytes. It is stored as unsigned integers of its width, its key tagged
# ``NAME@DTYPE``, and viewed back on load.
_TAG = "@"


def save_arrays(path: str | Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write named arrays to an ``.npz`` file, ml_dtypes' dtypes (bfloat16) included."""
    encoded = {}
    for key, value in arrays.items():
        value = np.asarray(value)
        if value.dtype.kind == "V" and hasattr(ml_dtypes, value.dtype.name):
            encoded[f"{key}{_TAG}{value.dtype.name}"] = value.view(f"uint{value.dtype.itemsize * 8}")
        else:
            encoded[key] = value
    np.savez(path, **encoded)


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The named arrays of a file :func:`save_arrays` wrote, with their dtypes."""
    arrays = {}
    with np.load(path) as data:
        for key in data.files:
            name, tag, dtype = key.partition(_TAG)
            arrays[name] = data[key].view(np.dtype(getattr(ml_dtypes, dtype))) if tag else data[key]
    return arrays


def load_steps(path: str | Path) -> list[dict[str, np.ndarray]]:
    """The per-step feeds of a feeds file, in step order."""
    steps: dict[int, dict[str, np.ndarray]] = defaultdict(dict)
    for key, value in load_arrays(path).items():
        step, _, name = key.partition("/")
        steps[int(step)][name] = value
    return [steps[i] for i in sorted(steps)]


def save_steps(path: str | Path, steps: list[dict[str, np.ndarray]]) -> None:
    """Write per-step feeds in the format :func:`load_steps` reads."""
    save_arrays(path, {f"{i}/{name}": value for i, feed in enumerate(steps) for name, value in feed.items()})


def save_result(path: str | Path, **sections: dict[str, np.ndarray]) -> None:
    """Write a result file: ``save_result(out, restored={...}, final={...})``."""
    save_arrays(path, {f"{section}/{name}": value for section, values in sections.items()
                       for name, value in values.items()})


def load_result(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """A result file as {section: {name: value}} (sections restored, final, outputs)."""
    result: dict[str, dict[str, np.ndarray]] = {"restored": {}, "final": {}, "outputs": {}}
    for key, value in load_arrays(path).items():
        section, _, name = key.partition("/")
        result.setdefault(section, {})[name] = value
    return result
