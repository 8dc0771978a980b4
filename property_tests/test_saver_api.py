"""Property 5: the implementation's Saver behaves as ``tf.compat.v1.train.Saver``.

Each example is a case with a Saver program — the options both Savers are built with
and a sequence of operations (train, save with and without a global step, restore the
latest, delete the oldest) — run by ``autodist_verify.properties.saver_api``: after
every operation both directories hold the same files, the same checkpoint state and
the same bytes, and restores bring back the same values. Programs shrink toward fewer
operations, and a failing one is written as a reproduction like any other case.
"""

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from property_tests.strategies import cases, saver_programs


@settings(max_examples=max(3, settings.default.max_examples))
@given(data=st.data())
def test_saver_api_parity(conformance, data):
    """The implementation's Saver and TensorFlow's behave identically on the original graph."""
    case = replace(data.draw(cases("PS"), label="case"), saver_program=data.draw(saver_programs(), label="program"))
    conformance.check("saver_api", case, column="-")
