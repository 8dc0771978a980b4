"""Properties 1-4 of the conformance suite over generated cases.

Each test draws cases (model, training setting, restore setting, schedule) whose
training strategy is the test's column of the conformance matrix, and runs properties
of ``autodist_verify.properties`` against the implementation under test (``--impl``):
``test_round_trip`` runs save_fidelity, restore_fidelity and fine_tune on each case
together, sharing the distributed runs they ask for alike
(``autodist_verify.runner.run_properties``); ``test_saved_model`` runs saved_model,
whose session exports instead of saving. Outcomes land in the matrix, one per property;
a failure's shrunk case is written as a reproduction file for each property that failed.

Examples per (property, strategy): the profile's example count divided by the number
of strategy columns, at least 1 (see ``autodist_verify.profiles``). Hypothesis tries
the minimal case first, so every cell sees the minimal case and drawn ones.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autodist_verify.properties import ROUND_TRIP
from property_tests.strategies import STRATEGY_LABELS, cases

EXAMPLES_PER_STRATEGY = max(1, settings.default.max_examples // len(STRATEGY_LABELS))

each_strategy = pytest.mark.parametrize("label", STRATEGY_LABELS)
per_strategy = settings(max_examples=EXAMPLES_PER_STRATEGY)


@each_strategy
@per_strategy
@given(data=st.data())
def test_round_trip(conformance, label, data):
    """save_fidelity: the checkpoint has TensorFlow's keys, shapes and dtypes and the
    oracle's bytes; restore_fidelity: restoring gives its bytes in plain TF, the same and
    another setting; fine_tune: save, restore anywhere, train on: bit-identical to the
    oracle's k + m steps."""
    conformance.check_all(ROUND_TRIP, data.draw(cases(label), label="case"))


@each_strategy
@per_strategy
@given(data=st.data())
def test_saved_model(conformance, label, data):
    """The SavedModel loads without the implementation and matches the oracle."""
    conformance.check("saved_model", data.draw(cases(label), label="case"))
