"""The bitwise comparator: what counts as equal and what a mismatch message says."""

import numpy as np
import pytest

from autodist_verify.compare import assert_bitwise_equal, first_mismatch, ulp_distance


def test_equal_bytes_are_equal():
    a = np.array([1.0, np.nan, -0.0], np.float32)
    assert first_mismatch("v", a, a.copy()) is None


def test_negative_zero_is_not_zero():
    mismatch = first_mismatch("v", np.array([0.0], np.float32), np.array([-0.0], np.float32))
    assert mismatch is not None
    assert "0x00000000" in mismatch.reason and "0x80000000" in mismatch.reason


def test_nan_payloads_differ():
    quiet = np.array([0x7FC00000], np.uint32).view(np.float32)
    other = np.array([0x7FC00001], np.uint32).view(np.float32)
    assert first_mismatch("v", quiet, other) is not None


def test_message_names_variable_index_values_bits_and_ulps():
    expected = np.zeros((2, 3), np.float32)
    actual = expected.copy()
    actual[1, 2] = np.nextafter(np.float32(0), np.float32(1))
    message = str(first_mismatch("dense/kernel", expected, actual))
    assert "dense/kernel" in message
    assert "(1, 2)" in message
    assert "0x00000001" in message
    assert "1 ULP apart" in message
    assert "1 of 6 elements differ" in message


def test_ulp_distance_across_zero():
    tiny = np.nextafter(np.float64(0), np.float64(1))
    assert ulp_distance(np.float64(-tiny), np.float64(tiny)) == 2
    assert ulp_distance(np.float32(1.0), np.float32(1.0)) == 0


def test_shape_and_dtype_differences_are_reported():
    assert "shape" in first_mismatch("v", np.zeros(2), np.zeros(3)).reason
    assert "dtype" in first_mismatch("v", np.zeros(2), np.zeros(2, np.float32)).reason


def test_assert_lists_missing_and_unexpected_names():
    with pytest.raises(AssertionError) as err:
        assert_bitwise_equal({"a": np.zeros(1), "b": np.zeros(1)}, {"a": np.ones(1), "c": np.zeros(1)})
    text = str(err.value)
    assert "b: missing" in text and "c: unexpected" in text and "a: first difference" in text
