"""Properties 1-4 of the conformance suite over generated cases.

Each test draws cases (model, training setting, restore setting, schedule) whose
training strategy is the test's column of the conformance matrix, and runs one
property of ``autodist_verify.properties`` against the implementation under test
(``--impl``). Outcomes land in the matrix; a failure's shrunk case is written as a
reproduction file.

Examples per (property, strategy): the profile's example count divided by the number
of strategy columns, at least 1 (4 under ``ci``, 25 under ``thorough``). Hypothesis
tries the minimal case first, so under ``ci`` every cell sees the minimal case and three
drawn ones.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from property_tests.strategies import STRATEGY_LABELS, cases

EXAMPLES_PER_STRATEGY = max(1, settings.default.max_examples // len(STRATEGY_LABELS))

each_strategy = pytest.mark.parametrize("label", STRATEGY_LABELS)
per_strategy = settings(max_examples=EXAMPLES_PER_STRATEGY)


def _check(conformance, prop: str, label: str, data) -> None:
    conformance.check(prop, data.draw(cases(label), label="case"))


@each_strategy
@per_strategy
@given(data=st.data())
def test_save_fidelity(conformance, label, data):
    """The checkpoint has TensorFlow's keys, shapes and dtypes and the oracle's bytes."""
    _check(conformance, "save_fidelity", label, data)


@each_strategy
@per_strategy
@given(data=st.data())
def test_restore_fidelity(conformance, label, data):
    """Restoring gives the checkpoint's bytes in plain TF, the same and another setting."""
    _check(conformance, "restore_fidelity", label, data)


@each_strategy
@per_strategy
@given(data=st.data())
def test_fine_tune(conformance, label, data):
    """Save, restore anywhere, train on: bit-identical to the oracle's k + m steps."""
    _check(conformance, "fine_tune", label, data)


@each_strategy
@per_strategy
@given(data=st.data())
def test_saved_model(conformance, label, data):
    """The SavedModel loads without the implementation and matches the oracle."""
    _check(conformance, "saved_model", label, data)
