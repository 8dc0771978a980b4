"""Save and restore throughput with pytest-benchmark: ours, TensorFlow's Saver, the disk.

    pytest tests/benchmarks --bench-size-mib 256 --benchmark-json out.json
    pytest tests/benchmarks --benchmark-compare

Each benchmark records ``mib_per_s`` (variable bytes per second, from the median) in
``extra_info``. The default size is small so that the default test run stays short;
``autodist-verify bench`` sweeps sizes and prints ratios.
"""

import os
import shutil
import statistics

import pytest
import tensorflow as tf

from autodist_verify.bench import LAYOUTS, MIB, actual_size_mib, build_model, cluster_spec, write_fsynced
from autodist_verify.clusters import ClusterPool
from autodist_verify.implementation import load_implementation
from cluster_sim.determinism import session_config

ROUNDS = 3


@pytest.fixture(scope="module")
def size_mib(pytestconfig):
    return pytestconfig.getoption("bench_size_mib")


@pytest.fixture(scope="module")
def pool():
    with ClusterPool(capacity=2) as running:
        yield running


def _record(benchmark, size):
    median = statistics.median(benchmark.stats.stats.data)
    benchmark.extra_info["size_mib"] = size
    benchmark.extra_info["mib_per_s"] = size / median


def _bench_save_and_restore(benchmark, operation, saver, sess, directory, size):
    prefix = str(directory / "model")
    saver.save(sess, prefix)  # a checkpoint to restore, and a warm-up save
    if operation == "save":
        def fresh():
            shutil.rmtree(directory)
            directory.mkdir()
        benchmark.pedantic(lambda: saver.save(sess, prefix), setup=fresh, rounds=ROUNDS)
    else:
        benchmark.pedantic(lambda: saver.restore(sess, prefix), rounds=ROUNDS)
    _record(benchmark, size)
    tf.train.load_checkpoint(prefix)  # what was written is a readable checkpoint


@pytest.mark.parametrize("operation", ["save", "restore"])
@pytest.mark.parametrize("sharded", [False, True], ids=["single-file", "sharded"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_ours(benchmark, pool, size_mib, tmp_path, layout, sharded, operation):
    """The implementation's Saver from a distributed session."""
    nodes, builder = LAYOUTS[layout]
    impl = load_implementation()
    ad = impl.AutoDist(cluster=pool.get(cluster_spec(nodes)), **impl.strategy_arguments({"builder": builder}))
    try:
        with tf.Graph().as_default(), ad.scope():
            build_model(size_mib)
            saver = impl.Saver(sharded=sharded, max_to_keep=1)
            sess = ad.create_distributed_session()
            _bench_save_and_restore(benchmark, operation, saver, sess, tmp_path, actual_size_mib(size_mib))
    finally:
        ad.close()


@pytest.mark.parametrize("operation", ["save", "restore"])
def test_tensorflow_single_device(benchmark, size_mib, tmp_path, operation):
    """Baseline: tf.compat.v1.train.Saver on the single-device graph, in this process."""
    with tf.Graph().as_default():
        build_model(size_mib)
        saver = tf.compat.v1.train.Saver(max_to_keep=1)
        with tf.compat.v1.Session(config=session_config()) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            _bench_save_and_restore(benchmark, operation, saver, sess, tmp_path, actual_size_mib(size_mib))


def test_raw_disk_write_with_fsync(benchmark, size_mib, tmp_path):
    """The practical limit: the same number of bytes written and fsynced."""
    size = actual_size_mib(size_mib)
    payload = os.urandom(int(size * MIB))
    path = tmp_path / "blob"

    benchmark.pedantic(lambda: write_fsynced(path, payload, len(payload)), rounds=ROUNDS)
    _record(benchmark, size)
    assert path.stat().st_size == len(payload)
