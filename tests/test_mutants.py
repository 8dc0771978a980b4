"""The conformance properties catch real bugs.

Each mutant of :mod:`tests.mutants` wraps the reference implementation and plants one
bug; the property meant to catch it must fail on one fixed small case, with a message
naming the problem. The reference passes the same properties on the same case (these
controls run last, so they also show that loading the mutants left ``saver_impl``
unchanged).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from autodist_verify.case import Case
from autodist_verify.clusters import ClusterPool
from autodist_verify.implementation import load_implementation
from autodist_verify.outcome import FAIL, NOT_APPLICABLE, PASS
from autodist_verify.runner import run_property
from autodist_verify.witness import Witness

# Two nodes with one simulated GPU each: two replicas in two processes.
CLUSTER = {"nodes": [{"address": "127.0.0.1", "gpus": [0], "chief": True}, {"address": "127.0.0.2", "gpus": [0]}]}

# float64 (for the dtype mutant) with Adam slots, a sparse embedding, an int32 counter
# and global_step.
# PartitionedAR both partitions and mirrors every trainable variable, in two parts of
# equal size (dense_0/kernel [4, 4]: rows [0:2] and [2:4]).
CASE = Case.from_dict({
    "model": {"dtype": "float64", "features": 2, "hidden": [4], "bias": True, "embedding": {"vocab": 6, "dim": 2},
              "scalar": True, "frozen": True, "global_step": True, "counter": "int32",
              "optimizer": {"name": "adam", "learning_rate": 0.01}, "seed": 3},
    "cluster": CLUSTER,
    "strategy": {"builder": "PartitionedAR"},
    "target": {"cluster": CLUSTER, "strategy": {"builder": "PartitionedPS"}},
    "schedule": {"k": 2, "m": 1, "batch": 4, "data_seed": 1},
})

# (mutant, the property that catches it, a phrase of the failure message)
CAUGHT = [
    ("save_first_partition_only", "save_fidelity", "key 'dense_0/kernel': shape [2, 4], expected [4, 4]"),
    ("save_partitions_reversed", "save_fidelity", "values after 2 steps: dense_0/kernel: first difference"),
    ("save_float64_as_float32", "save_fidelity", "key 'scale': dtype float32, expected float64"),
    ("save_int_counters_as_float", "save_fidelity", "key 'steps_seen': dtype float32, expected int32"),
    ("drop_optimizer_slots", "save_fidelity", "missing key 'dense_0/kernel/Adam'"),
    ("drop_global_step", "save_fidelity", "missing key 'global_step'"),
    ("distributed_checkpoint_keys", "save_fidelity", "missing key 'dense_0/kernel' (float64[4, 4])"),
    ("sparse_gradient_averaged_twice", "save_fidelity", "values after 2 steps: emb: first difference"),
    ("restore_master_mirror_only", "restore_fidelity", "stored copy 1 of 'dense_0/kernel'"),
    ("restore_master_mirror_only", "fine_tune", "(b) same setting PartitionedAR: dense_0/kernel: first difference"),
    ("restore_ignores_missing_keys", "restore_fidelity",
     "(d) a checkpoint without 'out/kernel': the restore succeeded; TensorFlow's Saver raises NotFoundError"),
    ("restore_skips_global_step", "restore_fidelity", "(b) same setting PartitionedAR: global_step: first difference"),
    ("saved_model_distributed_graph", "saved_model", "plain TensorFlow witness, job 'savedmodel' failed"),
    ("saved_model_initial_values", "saved_model", "loaded variables: dense_0/kernel: first difference"),
    ("saved_model_without_train_op", "saved_model", "expected one train op in saved_model_train_op"),
    ("saver_meta_graph_distributed", "save_fidelity", ".meta: node"),
    ("declines_sparse_gradients", "save_fidelity", "the implementation declined a required feature: embedding"),
    ("saver_without_state_file", "save_fidelity", "checkpoint state file: tf.train.latest_checkpoint gives None"),
    ("batch_norm_state_from_last_replica", "save_fidelity", "values after 2 steps: bn/moving_mean: first difference"),
    ("saver_ignores_keep_every_n_hours", "saver_api", "operation 3 ['save', True]: files"),
    ("saver_state_before_data", "crash_consistency", "after the faulted call: the state file names"),
    ("slots_joined_on_axis_0", "save_fidelity", "values after 2 steps: dense_0/kernel/Adam: first difference"),
    ("slots_of_first_optimizer_only", "save_fidelity", "missing key 'out/kernel/Adagrad'"),
    ("keras_iterations_not_restored", "restore_fidelity", "Adam/iter: first difference"),
    ("saver_meta_graph_without_functions", "save_fidelity",
     "(If) calls function 'cond_false_"),
    ("tied_gradient_from_lookup_only", "save_fidelity", "values after 2 steps: emb: first difference"),
    ("clip_factor_from_master_replica", "save_fidelity", "values after 2 steps: dense_0/kernel: first difference"),
]

# Mutants whose bug needs a graph feature the fixed case lacks: the case with that feature.
def _with(**model_fields) -> Case:
    return Case.from_dict({**CASE.to_dict(), "model": {**CASE.model, **model_fields}})


# A hand-made strategy: dense_0/kernel [4, 4] in two parts along axis 1, the parts on
# the parameter servers in reverse task order; every other variable whole on task 0.
AXIS_1_STRATEGY = {"custom": {
    "replicas": ["127.0.0.1:GPU:0", "127.0.0.2:GPU:0"], "aux_device": "127.0.0.1:CPU:0",
    "variables": {
        **{name: {"synchronizer": "ps", "devices": ["127.0.0.1:CPU:0"]}
           for name in ("emb", "dense_0/bias", "out/kernel", "scale", "frozen", "steps_seen", "global_step")},
        "dense_0/kernel": {"synchronizer": "ps", "partition": {"axis": 1, "sizes": [2, 2]},
                           "devices": ["127.0.0.2:CPU:0", "127.0.0.1:CPU:0"]},
    }}}

CASE_FOR = {
    "slots_joined_on_axis_0": replace(CASE, source=replace(CASE.source, strategy=AXIS_1_STRATEGY)),
    "slots_of_first_optimizer_only": _with(head_optimizer={"name": "adagrad", "learning_rate": 0.1}),
    "keras_iterations_not_restored": _with(optimizer={"name": "keras_adam", "learning_rate": 0.01}),
    "batch_norm_state_from_last_replica": _with(batch_norm=True),
    "saver_meta_graph_without_functions": _with(control_flow="cond"),
    "tied_gradient_from_lookup_only": _with(tied=True),
    # A clip norm far below the gradients' norms: every replica's gradients are clipped.
    "clip_factor_from_master_replica": _with(clip_norm=0.01),
    "saver_ignores_keep_every_n_hours": replace(CASE, saver_program={
        "options": {"max_to_keep": 1, "pad_step_number": False, "save_relative_paths": False, "sharded": False,
                    "keep_checkpoint_every_n_hours": 1e-7},
        "operations": [["train"], ["save", True], ["train"], ["save", True]]}),
    # Node 1 killed before the save: PartitionedAR's mirrors there make the save fail.
    "saver_state_before_data": replace(CASE, fault={"node": 1, "kind": "kill", "moment": "save_data"}),
}

MUTANT_CASES = [pytest.param(mutant, prop, phrase, id=f"{mutant}-{prop}") for mutant, prop, phrase in CAUGHT]


@pytest.fixture(scope="module")
def pool():
    with ClusterPool() as running:
        yield running


@pytest.fixture(scope="module")
def mutant_witness():
    """A witness that never imports the reference nor a mutant built on it."""
    with Witness(forbidden="saver_impl") as running:
        yield running


@pytest.mark.parametrize("mutant, prop, phrase", MUTANT_CASES)
def test_the_property_catches_the_mutant(mutant, prop, phrase, pool, mutant_witness):
    case = CASE_FOR.get(mutant, CASE)
    outcome = run_property(prop, case, load_implementation(f"tests.mutants.{mutant}"), pool, mutant_witness)
    assert outcome.status == FAIL, outcome
    assert phrase in outcome.detail


@pytest.mark.parametrize("prop", sorted({prop for mutant, prop, _ in CAUGHT if mutant not in CASE_FOR}))
def test_the_reference_passes_the_same_property(prop, pool, mutant_witness):
    outcome = run_property(prop, CASE, load_implementation("saver_impl"), pool, mutant_witness)
    assert outcome.status == PASS, outcome


@pytest.mark.parametrize("mutant", sorted(CASE_FOR))
def test_the_reference_passes_the_special_cases(mutant, pool, mutant_witness):
    props = sorted({prop for name, prop, _ in CAUGHT if name == mutant})
    for prop in props:
        outcome = run_property(prop, CASE_FOR[mutant], load_implementation("saver_impl"), pool, mutant_witness)
        assert outcome.status == PASS, (prop, outcome)


def test_an_optional_feature_the_implementation_declines_is_not_applicable(pool, mutant_witness):
    """saver_impl declines reference variables with NotImplementedError: n/a, with why."""
    case = Case.from_dict({**CASE.to_dict(), "model": {**CASE.model, "reference_variables": True}})
    outcome = run_property("save_fidelity", case, load_implementation("saver_impl"), pool, mutant_witness)
    assert outcome.status == NOT_APPLICABLE, outcome
    assert "does not support reference variables" in outcome.detail and "is a reference variable" in outcome.detail


def test_not_applicable_comes_from_the_layout_the_implementation_built(pool, mutant_witness):
    """float32 Adagrad: PartitionedAR splits the dense kernel (n/a, TensorFlow's kernel is
    not bit-stable across parts); PS keeps every variable whole (checked, passes)."""
    model = {**CASE.model, "dtype": "float32", "optimizer": {"name": "adagrad", "learning_rate": 0.1}}
    impl = load_implementation("saver_impl")
    partitioned = Case.from_dict({**CASE.to_dict(), "model": model})
    outcome = run_property("save_fidelity", partitioned, impl, pool, mutant_witness)
    assert outcome.status == NOT_APPLICABLE and "PartitionedAR" in outcome.detail, outcome
    whole = Case.from_dict({**CASE.to_dict(), "model": model, "strategy": {"builder": "PS"}})
    assert run_property("save_fidelity", whole, impl, pool, mutant_witness).status == PASS
