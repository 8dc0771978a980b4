"""Property 5: the implementation's Saver behaves as ``tf.compat.v1.train.Saver``.

Each example is a case with a Saver program — the options both Savers are built with
and a sequence of operations (train, save with and without a global step, restore the
latest, delete the oldest) — run by ``autodist_verify.properties.saver_api``: after
every operation both directories hold the same files, the same checkpoint state and
the same bytes, and restores bring back the same values. Programs shrink toward fewer
operations, and a failing one is written as a reproduction like any other case.
"""

from dataclasses import replace

from hypothesis import example, given, settings

from autodist_verify.case import Case
from property_tests.strategies import cases, saver_programs

# Retention over several saves is where Savers differ most, and random programs reach
# it rarely (most ci draws are short): these programs always run.
_SMALL_CASE = Case.from_dict({
    "model": {"dtype": "float32", "features": 2, "hidden": [2], "bias": True, "embedding": None, "scalar": False,
              "frozen": False, "global_step": True, "optimizer": {"name": "adam", "learning_rate": 0.1}, "seed": 1},
    "cluster": {"nodes": [{"address": "127.0.0.1", "chief": True}]}, "strategy": {"builder": "PS"},
    "target": {"cluster": {"nodes": [{"address": "127.0.0.1", "chief": True}]}, "strategy": {"builder": "PS"}},
    "schedule": {"k": 1, "m": 1, "batch": 2, "data_seed": 0},
})
_OPTIONS = {"max_to_keep": 1, "pad_step_number": False, "save_relative_paths": False, "sharded": False}
_RETENTION_BY_AGE = {"options": {**_OPTIONS, "keep_checkpoint_every_n_hours": 1e-7},
                     "operations": [["train"], ["save", True], ["train"], ["save", True], ["save", False],
                                    ["delete_oldest"], ["train"], ["save", True], ["restore_latest"]]}
_RETENTION_BY_COUNT = {"options": {**_OPTIONS, "max_to_keep": 2, "pad_step_number": True},
                       "operations": [["save", True], ["train"], ["save", True], ["train"], ["save", True],
                                      ["restore_latest"], ["delete_oldest"], ["save", False], ["restore_latest"]]}


@settings(max_examples=max(3, settings.default.max_examples))
@given(case=cases("PS"), program=saver_programs())
@example(case=_SMALL_CASE, program=_RETENTION_BY_AGE)
@example(case=_SMALL_CASE, program=_RETENTION_BY_COUNT)
def test_saver_api_parity(conformance, case, program):
    """The implementation's Saver and TensorFlow's behave identically on the original graph."""
    conformance.check("saver_api", replace(case, saver_program=program), column="-")
