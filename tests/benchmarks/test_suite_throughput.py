"""How many examples per minute the conformance suite checks, property by property.

One fixed case — the model of :mod:`tests.specs` with batch norm, an int32 counter and
clipping, trained under PartitionedPS on two nodes (three replicas, a batch of 5 that
does not divide) and restored under AllReduce on one node, with a Saver program (and a
fault for ``crash_consistency``) — goes through the suite's own runner
(:func:`autodist_verify.runner.run_property`) against the implementation under test,
on the session's shared cluster pool and witness, as in a run. pytest-benchmark
reports seconds per example; ``extra_info`` holds examples per minute. The generated
suite checks save_fidelity, restore_fidelity and fine_tune together on each case
(:func:`autodist_verify.runner.run_properties`), which ``test_round_trip_together``
times: its ``examples_per_minute`` counts one example per property. A ``ci`` run
costs about its example count (``autodist_verify.profiles``) times these.
Under ``-n`` (the default test run) nothing is timed: run ``pytest tests/benchmarks``.
"""

from __future__ import annotations

import pytest

from autodist_verify.case import Case
from autodist_verify.outcome import PASS
from autodist_verify.properties import PROPERTIES, ROUND_TRIP
from autodist_verify.runner import run_properties, run_property
from tests.specs import SPEC

TWO_NODES = {"nodes": [{"address": "127.0.0.1", "gpus": [0, 1], "chief": True}, {"address": "127.0.0.2"}]}
ONE_NODE = {"nodes": [{"address": "127.0.0.1", "chief": True}]}
CASE = Case.from_dict({
    "model": {**SPEC, "batch_norm": True, "counter": "int32", "clip_norm": 1.0},
    "cluster": TWO_NODES,
    "strategy": {"builder": "PartitionedPS"},
    "target": {"cluster": ONE_NODE, "strategy": {"builder": "AllReduce"}},
    "schedule": {"k": 2, "m": 1, "batch": 5, "data_seed": 0},
    "saver_program": {"options": {"max_to_keep": 2, "pad_step_number": False, "save_relative_paths": False,
                                  "sharded": False},
                      "operations": [["train"], ["save", True], ["train"], ["save", True], ["restore_latest"]]},
})


# crash_consistency needs a fault to inject: the second node killed during the save.
CASE_FOR = {"crash_consistency": Case.from_dict({
    **CASE.to_dict(), "fault": {"node": 1, "kind": "kill", "moment": "save_data"}})}


@pytest.mark.parametrize("prop", sorted(PROPERTIES))
def test_one_example(benchmark, prop, conformance_impl, cluster_pool, witness):
    case = CASE_FOR.get(prop, CASE)
    if not benchmark.disabled:  # a warm-up, untimed: clusters up, witness started
        run_property(prop, case, conformance_impl, cluster_pool, witness)
    outcome = benchmark.pedantic(lambda: run_property(prop, case, conformance_impl, cluster_pool, witness),
                                 rounds=2)
    assert outcome.status == PASS, outcome
    if not benchmark.disabled:  # under xdist or --benchmark-disable the one run is untimed
        benchmark.extra_info["examples_per_minute"] = round(60 / benchmark.stats.stats.mean, 1)


def test_round_trip_together(benchmark, conformance_impl, cluster_pool, witness):
    def run():
        return run_properties(ROUND_TRIP, CASE, conformance_impl, cluster_pool, witness)

    if not benchmark.disabled:  # a warm-up, untimed
        run()
    outcomes = benchmark.pedantic(run, rounds=2)
    assert [o.status for o in outcomes] == [PASS] * len(ROUND_TRIP), outcomes
    if not benchmark.disabled:
        benchmark.extra_info["examples_per_minute"] = round(60 * len(ROUND_TRIP) / benchmark.stats.stats.mean, 1)
