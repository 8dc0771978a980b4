"""Property 6: a fault while training, saving or restoring leaves the last checkpoint
whole and latest, and training resumed from it is bit-identical.

Each example is a case with a fault (``autodist_verify.faults``): a node of the
training cluster, a kind (kill, pause, disk full) and a moment (between steps, the
save's data write, after it, a restore), run by
``autodist_verify.crash_consistency`` on a cluster of its own. One test per fault kind,
so that every kind runs in every profile (a tenth of its examples, at least 2: 6 each
under ``ci``, 2 under ``quick``); the node, the moment and the rest of the case are
drawn. Failing cases shrink and are written as reproductions like any other.

AutoDist's builders put variables on every node, so the generated cases hardly ever
fault a node that only runs replicas; three pinned cases do: a save or a restore that
does not need that node may succeed, and must then have written a whole checkpoint.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autodist_verify import model_spec
from autodist_verify.case import Case
from autodist_verify.faults import KINDS
from property_tests.strategies import crash_cases

EXAMPLES_PER_KIND = max(2, settings.default.max_examples // 10)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=EXAMPLES_PER_KIND)
@given(data=st.data())
def test_crash_consistency(conformance, kind, data):
    """The faulted call fails with a TensorFlow error within the bound, the previous
    checkpoint stays latest and whole, and the resumed run equals the oracle."""
    conformance.check("crash_consistency", data.draw(crash_cases(kind), label="case"), column="-")


_MODEL = {"dtype": "float32", "features": 3, "hidden": [2], "bias": True, "embedding": None, "scalar": False,
          "frozen": False, "global_step": True, "optimizer": {"name": "momentum", "learning_rate": 0.1,
                                                                "momentum": 0.9, "use_nesterov": False}, "seed": 5}
_TWO_NODES = {"nodes": [{"address": "127.0.0.1", "chief": True}, {"address": "127.0.0.2", "gpus": [0]}]}
# Every variable on the chief: node 1 runs a replica and holds nothing.
_ON_THE_CHIEF = {"custom": {
    "replicas": ["127.0.0.1:CPU:0", "127.0.0.2:GPU:0"], "aux_device": "127.0.0.1:CPU:0",
    "variables": {v["name"]: {"synchronizer": "ps", "devices": ["127.0.0.1:CPU:0"]}
                  for v in model_spec.variables(_MODEL)}}}
_SETTING = {"cluster": _TWO_NODES, "strategy": _ON_THE_CHIEF}


@pytest.mark.parametrize("kind, moment", [("kill", "save_data"), ("pause", "restore"), ("pause", "step")])
def test_crash_consistency_of_a_replica_only_node(conformance, kind, moment):
    """A save or restore may succeed without the node; the step it runs a replica of may not."""
    case = Case.from_dict({"model": _MODEL, **_SETTING, "target": _SETTING,
                           "schedule": {"k": 1, "m": 2, "batch": 4, "data_seed": 2},
                           "fault": {"node": 1, "kind": kind, "moment": moment}})
    conformance.check("crash_consistency", case, column="-")


def test_disk_full_while_merging_a_parallel_save(conformance):
    """The disk fills on the chief's host after the tasks wrote their parts of an
    unsharded save from two nodes, while the client merges them into the single data
    file: the save must fail with a TensorFlow error (it raised Python's OSError once:
    found by the ``ci`` profile at 64 examples)."""
    two_nodes = {"nodes": [{"address": "127.0.0.1", "chief": True}, {"address": "127.0.0.2"}]}
    setting = {"cluster": two_nodes, "strategy": {"builder": "PS"}}
    model = {"dtype": "float32", "features": 1, "hidden": [], "bias": False, "embedding": None, "scalar": False,
             "frozen": False, "global_step": False, "optimizer": {"name": "sgd", "learning_rate": 0.1}, "seed": 0,
             "control_flow": "cond"}
    case = Case.from_dict({"model": model, **setting, "target": setting,
                           "schedule": {"k": 1, "m": 1, "batch": 2, "data_seed": 0, "sharded": False},
                           "fault": {"node": 0, "kind": "disk_full", "moment": "save_after_data"}})
    conformance.check("crash_consistency", case, column="-")
