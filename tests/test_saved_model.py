"""SavedModels exported from a distributed session are the original graph's.

The export loads in a process that never imports saver_impl; its serving signature gives
the oracle's outputs bit for bit (a single-device forward pass of the whole batch: the
distributed session computes each replica's share of a batch, and a matmul of fewer rows
may round otherwise on CPUs whose kernels depend on the batch size, as on the AMD EPYC
AVX2 machines this suite runs on); its train op fine-tunes like the oracle;
TensorFlow's saved_model_cli reads and runs it; its MetaGraph carries no distribution
artifact.

The model is the spec of :mod:`tests.specs`. Exports whose session outputs are compared
drive saver_impl's ``SavedModelBuilder`` directly; the others export through the
harness (``run_distributed``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from autodist_verify import exports, model_graph, model_spec
from autodist_verify.case import Setting
from autodist_verify.compare import assert_bitwise_equal
from autodist_verify.expectations import oracle_state
from autodist_verify.harness import SAVED_MODEL_TAG, SIGNATURE, run_distributed
from autodist_verify.oracle import Oracle
from autodist_verify.witness_files import load_result, save_steps
from cluster_sim import ResourceSpec
from cluster_sim.determinism import DETERMINISM_ENV
from saver_impl import AutoDist, AutoDistError, SavedModelBuilder, Saver
from saver_impl.strategy import PartitionedAR, PartitionedPS
from tests.specs import SGD_SPEC, SPEC

REPO_ROOT = Path(__file__).resolve().parents[1]
TAG = "train"
K, M, BATCH = 2, 2, 8
CLUSTER = ResourceSpec.local(nodes=2, gpus_per_node=1).to_dict()


@pytest.fixture
def cluster(cluster_pool):
    return cluster_pool.get(CLUSTER)


def export(cluster, builder, feeds, export_dir, serve_inputs):
    """Train k steps under ``builder`` and export; returns (the session's serving
    outputs, replicas)."""
    with AutoDist(cluster=cluster, strategy_builder=builder) as ad:
        with tf.Graph().as_default() as graph, ad.scope():
            model = model_graph.build(SPEC)
            saver = Saver()
            sess = ad.create_distributed_session()
            for feed in feeds:
                sess.run(model.train_op, feed)
            x, ids = graph.get_tensor_by_name("x:0"), graph.get_tensor_by_name("ids:0")
            prediction = graph.get_tensor_by_name("prediction:0")
            signature = tf.compat.v1.saved_model.predict_signature_def(
                inputs={"x": x, "ids": ids}, outputs={"prediction": prediction}
            )
            outputs = sess.run(prediction, {"x": serve_inputs["x"], "ids": serve_inputs["ids"]})
            builder_ = SavedModelBuilder(str(export_dir))
            builder_.add_meta_graph_and_variables(
                sess=sess, tags=[TAG], saver=saver, signature_def_map={"serving": signature}
            )
            builder_.save()
            return outputs, len(ad.strategy.replicas)


@pytest.mark.parametrize("builder", [PartitionedPS, PartitionedAR], ids=lambda b: b.__name__)
def test_export_loads_serves_and_finetunes_without_saver_impl(cluster, witness, builder, tmp_path):
    first, later = model_spec.feeds(SPEC, K, BATCH, seed=11), model_spec.feeds(SPEC, M, BATCH, seed=12)
    serve = model_spec.feeds(SPEC, 1, 4, seed=13)[0]
    export_dir = tmp_path / "export"
    outputs, replicas = export(cluster, builder(), first, export_dir, serve)
    assert replicas == len(cluster.spec.replica_devices)

    inputs_path, feeds_path, out = tmp_path / "inputs.npz", tmp_path / "feeds.npz", tmp_path / "out.npz"
    np.savez(inputs_path, x=serve["x"], ids=serve["ids"])
    save_steps(str(feeds_path), later)
    witness.run("savedmodel", export_dir=export_dir, tag=TAG, signature="serving", inputs=inputs_path,
                feeds=feeds_path, out=out)
    result = load_result(out)
    with Oracle(lambda: model_graph.build(SPEC)) as oracle:
        for feed in first:
            oracle.step(feed, replicas=replicas)
        expected_outputs = oracle.evaluate("prediction:0", {"x": serve["x"], "ids": serve["ids"]})
    assert result["outputs"]["prediction"].tobytes() == expected_outputs.tobytes()
    np.testing.assert_allclose(outputs, expected_outputs, rtol=1e-5)  # the session's, computed per replica
    assert_bitwise_equal(oracle_state(SPEC, [(replicas, first)]), result["restored"], what="SavedModel variables")
    expected = oracle_state(SPEC, [(replicas, first), (1, later)])
    assert_bitwise_equal(expected, result["final"], what="fine-tuning the SavedModel's train op")


def test_metagraph_has_no_distribution_artifacts(harness_context, tmp_path):
    export_dir = tmp_path / "export"
    run_distributed(harness_context, SPEC, Setting(CLUSTER, {"builder": "PartitionedAR"}),
                    model_spec.feeds(SPEC, 1, BATCH, seed=0), export_dir=str(export_dir))
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    (meta,) = saved_model.meta_graphs
    nodes = meta.graph_def.node
    assert not [n.name for n in nodes if "/job:" in n.device]
    artifacts = ("replica_", "part_", "apply/", "read_barrier", "all_copies", "original_graph_saver")
    assert not [n.name for n in nodes if any(a in n.name for a in artifacts)]
    original = exports.original_graph_def(SPEC)
    assert {n.name for n in original.node} <= {n.name for n in nodes}
    assert exports.saved_model_artifacts(original, export_dir) == []


def test_saved_model_cli_shows_and_runs_the_export(harness_context, witness, tmp_path):
    """TensorFlow's own tool reads and runs the export.

    ``saved_model_cli run`` evaluates in a session with TensorFlow's default
    configuration (graph rewrites on, the default thread pool), not the suite's
    determinism settings, so its bits depend on the CPU's kernels and need not equal
    the distributed session's. The like-for-like witness is plain TensorFlow running
    the same export the way the tool does (the witness's ``signature`` job), in a process
    with the same environment as the tool's (this process's). That the export serves
    the oracle's outputs bit for bit, under the determinism settings on both sides, is
    checked by ``test_export_loads_serves_and_finetunes_without_saver_impl``.
    """
    cli = shutil.which("saved_model_cli", path=str(REPO_ROOT / ".venv" / "bin")) or shutil.which(
        "saved_model_cli", path=sys.prefix + "/bin"
    )
    assert cli, "saved_model_cli is installed with TensorFlow"
    export_dir = tmp_path / "export"
    serve = model_spec.feeds(SPEC, 1, 4, seed=21)[0]
    run_distributed(harness_context, SPEC, Setting(CLUSTER, {"builder": "PartitionedPS"}),
                    model_spec.feeds(SPEC, 1, BATCH, seed=0), export_dir=str(export_dir))
    assert DETERMINISM_ENV.items() <= os.environ.items(), "the witness inherited this environment"
    shown = subprocess.run([cli, "show", "--dir", str(export_dir), "--all"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert f"signature_def['{SIGNATURE}']" in shown.stdout and "prediction" in shown.stdout
    np.save(tmp_path / "x.npy", serve["x"])
    np.save(tmp_path / "ids.npy", serve["ids"])
    ran = subprocess.run(
        [cli, "run", "--dir", str(export_dir), "--tag_set", SAVED_MODEL_TAG, "--signature_def", SIGNATURE,
         "--inputs", f"x={tmp_path / 'x.npy'};ids={tmp_path / 'ids.npy'}",
         "--outdir", str(tmp_path / "cli_out")],
        capture_output=True, text=True,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    inputs_path, out = tmp_path / "inputs.npz", tmp_path / "served.npz"
    np.savez(inputs_path, x=serve["x"], ids=serve["ids"])
    witness.run("signature", export_dir=export_dir, tag=SAVED_MODEL_TAG, signature=SIGNATURE, inputs=inputs_path,
                out=out)
    expected = load_result(out)["outputs"]["prediction"]
    assert_bitwise_equal({"prediction": expected},
                         {"prediction": np.load(tmp_path / "cli_out" / "prediction.npy")},
                         what="saved_model_cli run vs plain TensorFlow with the tool's session settings")


def test_builder_requires_the_autodist_saver(cluster, tmp_path):
    with AutoDist(cluster=cluster, strategy_builder=PartitionedPS()) as ad:
        with tf.Graph().as_default(), ad.scope():
            model_graph.build(SGD_SPEC)
            sess = ad.create_distributed_session()
            builder = SavedModelBuilder(str(tmp_path / "export"))
            with pytest.raises(AutoDistError, match="saver_impl.Saver"):
                builder.add_meta_graph_and_variables(sess, [TAG], saver=tf.compat.v1.train.Saver())
