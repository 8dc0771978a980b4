"""Checkpoints written from distributed sessions are the original graph's checkpoints.

Every run goes through the conformance suite's harness (``run_distributed``, the
oracle's ``expectations``, the plain-TensorFlow witness) on the model spec of
:mod:`tests.specs`.

* For every strategy builder on a 2-node cluster with simulated gpus: k distributed
  steps, save; the checkpoint equals the oracle after k steps and has exactly the keys,
  shapes and dtypes TensorFlow's Saver writes for the original graph; a fresh process
  without saver_impl restores it with plain TensorFlow and trains m more steps,
  bit-identically to the oracle after k+m steps.
* Across strategies and clusters: PartitionedPS on 2 nodes -> AllReduce on 3 nodes and
  the reverse; every part and mirror holds the checkpoint's bytes after restore, and
  training goes on bit-identically. A plain TensorFlow checkpoint restores too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autodist_verify import checkpoints, model_spec
from autodist_verify.case import BUILDERS, Setting
from autodist_verify.compare import assert_bitwise_equal
from autodist_verify.expectations import oracle_state
from autodist_verify.harness import copy_problems, impl_prefix, plain_tf_finetune, run_distributed
from cluster_sim import ResourceSpec
from tests.specs import SPEC

K, M, BATCH = 2, 2, 12

TWO_NODES = ResourceSpec.local(nodes=2, gpus_per_node=1).to_dict()
THREE_NODES = ResourceSpec.local(nodes=3).to_dict()
CLUSTERS = {"two_nodes": TWO_NODES, "three_nodes": THREE_NODES}


def assert_copies_hold(copies, expected: dict[str, np.ndarray]) -> None:
    """Every stored part and mirror of every variable holds exactly its slice of ``expected``."""
    assert copies, "the session reports no stored copies (stored_copies())"
    assert sorted(copies) == sorted(expected), "stored copies of other variables than the checkpoint's"
    problems = copy_problems("restore", copies, expected)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("builder", BUILDERS)
def test_save_then_plain_tensorflow_finetune(harness_context, builder, tmp_path):
    first, later = model_spec.feeds(SPEC, K, BATCH, seed=1), model_spec.feeds(SPEC, M, BATCH, seed=2)
    setting = Setting(TWO_NODES, {"builder": builder})
    run = run_distributed(harness_context, SPEC, setting, first, save_prefix=impl_prefix(harness_context))
    # What tf.compat.v1.train.Saver writes for the original graph after the same k steps.
    reference = str(tmp_path / "tensorflow_reference")
    after_k = oracle_state(SPEC, [(setting.replicas, first)], save_prefix=reference)
    assert checkpoints.contents(run.checkpoint) == checkpoints.contents(reference)
    assert_bitwise_equal(after_k, checkpoints.values(run.checkpoint), what=f"checkpoint saved under {builder}")
    # one data file, as TensorFlow's unsharded Saver writes, and nothing else of the save
    # (the parts several tasks write in parallel are merged into it and removed)
    saved = Path(run.checkpoint)
    written = sorted(p.name.removeprefix(saved.name) for p in saved.parent.iterdir() if p.name.startswith(saved.name))
    assert [name for name in written if name != ".meta"] == [".data-00000-of-00001", ".index"]

    plain = plain_tf_finetune(harness_context.witness, SPEC, run.checkpoint, later, tmp_path / "plain_tf")
    assert_bitwise_equal(after_k, plain["restored"], what="plain TensorFlow restore")
    after_k_plus_m = oracle_state(SPEC, [(setting.replicas, first), (1, later)])
    assert_bitwise_equal(after_k_plus_m, plain["final"], what="plain TensorFlow fine-tune")


@pytest.mark.parametrize(
    "save_under, restore_under",
    [(("two_nodes", "PartitionedPS"), ("three_nodes", "AllReduce")),
     (("three_nodes", "AllReduce"), ("two_nodes", "PartitionedPS"))],
    ids=["PartitionedPS@2->AllReduce@3", "AllReduce@3->PartitionedPS@2"],
)
def test_restore_under_another_strategy_and_cluster(harness_context, save_under, restore_under):
    first, later = model_spec.feeds(SPEC, K, BATCH, seed=3), model_spec.feeds(SPEC, M, BATCH, seed=4)
    source = Setting(CLUSTERS[save_under[0]], {"builder": save_under[1]})
    target = Setting(CLUSTERS[restore_under[0]], {"builder": restore_under[1]})
    saved = run_distributed(harness_context, SPEC, source, first, save_prefix=impl_prefix(harness_context))
    values = checkpoints.values(saved.checkpoint)

    resumed = run_distributed(harness_context, SPEC, target, later, restore=saved.checkpoint)
    assert_bitwise_equal(values, resumed.restored, what="logical state after restore")
    assert_copies_hold(resumed.copies, values)
    expected = oracle_state(SPEC, [(source.replicas, first), (target.replicas, later)])
    assert_bitwise_equal(expected, resumed.state, what="training after a cross-strategy restore")


def test_plain_tensorflow_checkpoint_restores_into_a_distributed_session(harness_context, tmp_path):
    """The oracle trains with plain TensorFlow in this process and saves with
    ``tf.compat.v1.train.Saver``; the distributed session restores that checkpoint."""
    first, later = model_spec.feeds(SPEC, K, BATCH, seed=5), model_spec.feeds(SPEC, M, BATCH, seed=6)
    prefix = str(tmp_path / "plain")
    oracle_state(SPEC, [(1, first)], save_prefix=prefix)
    values = checkpoints.values(prefix)
    setting = Setting(TWO_NODES, {"builder": "PartitionedPS"})
    resumed = run_distributed(harness_context, SPEC, setting, later, restore=prefix)
    assert_copies_hold(resumed.copies, values)
    expected = oracle_state(SPEC, [(1, first), (setting.replicas, later)])
    assert_bitwise_equal(expected, resumed.state, what="training after restoring a plain checkpoint")
