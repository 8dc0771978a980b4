"""Bitwise comparison of tensors, with failure messages that locate the difference.

Values are equal when their raw bytes are equal: NaN payloads and the sign of zero
count, ``0.0 == -0.0`` does not make them equal. A mismatch reports the variable, the
first differing index, both values, their bit patterns and their distance in ULPs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

_UINT_OF_SIZE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


@dataclass(frozen=True)
class Mismatch:
    """The first difference between two arrays that should be bitwise equal."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


def _ordered_int(bits: np.ndarray, size: int) -> int:
    """Map a float's bit pattern to an integer that is monotonic in the float's value."""
    value = int(bits)
    sign = 1 << (size * 8 - 1)
    return -(value & (sign - 1)) if value & sign else value


def ulp_distance(a, b) -> int | None:
    """Number of representable floats between ``a`` and ``b`` (None for non-floats)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.dtype.kind != "f":
        return None
    size = a.dtype.itemsize
    uint = _UINT_OF_SIZE[size]
    return abs(_ordered_int(a.view(uint), size) - _ordered_int(b.view(uint), size))


def first_mismatch(name: str, expected, actual) -> Mismatch | None:
    """None if ``expected`` and ``actual`` are bitwise equal, else where they differ."""
    expected, actual = np.asarray(expected), np.asarray(actual)
    if expected.dtype != actual.dtype:
        return Mismatch(name, f"dtype {actual.dtype} != expected {expected.dtype}")
    if expected.shape != actual.shape:
        return Mismatch(name, f"shape {actual.shape} != expected {expected.shape}")
    if expected.tobytes() == actual.tobytes():
        return None
    if expected.dtype.itemsize not in _UINT_OF_SIZE or expected.dtype.kind == "O":
        return Mismatch(name, "contents differ")
    uint = _UINT_OF_SIZE[expected.dtype.itemsize]
    exp_bits = np.ascontiguousarray(expected).view(uint).reshape(-1)
    act_bits = np.ascontiguousarray(actual).view(uint).reshape(-1)
    flat = int(np.flatnonzero(exp_bits != act_bits)[0])
    index = np.unravel_index(flat, expected.shape) if expected.shape else ()
    exp_value, act_value = expected.reshape(-1)[flat], actual.reshape(-1)[flat]
    width = expected.dtype.itemsize * 2
    differing = int(np.count_nonzero(exp_bits != act_bits))
    reason = (
        f"first difference at index {tuple(int(i) for i in index)}: "
        f"expected {exp_value!r} (0x{int(exp_bits[flat]):0{width}x}), "
        f"got {act_value!r} (0x{int(act_bits[flat]):0{width}x})"
    )
    distance = ulp_distance(exp_value, act_value)
    if distance is not None:
        reason += f", {distance} ULP apart"
    reason += f"; {differing} of {exp_bits.size} elements differ"
    return Mismatch(name, reason)


def compare_states(
    expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]
) -> list[Mismatch]:
    """Every difference between two name -> array maps (missing names included)."""
    problems = [Mismatch(n, "missing") for n in sorted(set(expected) - set(actual))]
    problems += [Mismatch(n, "unexpected") for n in sorted(set(actual) - set(expected))]
    for name in sorted(set(expected) & set(actual)):
        mismatch = first_mismatch(name, expected[name], actual[name])
        if mismatch:
            problems.append(mismatch)
    return problems


def assert_bitwise_equal(
    expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], what: str = "state"
) -> None:
    """Raise AssertionError listing every variable whose bytes differ."""
    problems = compare_states(expected, actual)
    if problems:
        lines = "\n  ".join(str(p) for p in problems)
        raise AssertionError(f"{what} is not bitwise equal to the expected state:\n  {lines}")
