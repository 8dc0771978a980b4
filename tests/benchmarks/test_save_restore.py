"""Save and restore throughput with pytest-benchmark: ours (default and durable saves),
the same layouts built natively with TensorFlow, TensorFlow's single-device Saver, the disk.

    pytest tests/benchmarks --bench-size-mib 256 --benchmark-json out.json
    pytest tests/benchmarks --benchmark-compare

Each benchmark records ``mib_per_s`` (variable bytes per second, from the median) in
``extra_info``. Timing needs the machine to itself: under ``-n`` (pytest-xdist, as in
the default test run) pytest-benchmark runs each benchmark once, untimed, and the tests
check only what was written. The default size is small so that the default test run
stays short; ``autodist-verify bench`` sweeps sizes and prints ratios.
"""

import os
import re
import shutil
import statistics
import subprocess
import sys

import pytest
import tensorflow as tf

from autodist_verify import checkpoints
from autodist_verify.bench import (
    LAYOUTS,
    MIB,
    actual_size_mib,
    build_model,
    build_native,
    cluster_spec,
    supports_durable,
    write_fsynced,
)
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
    if benchmark.disabled:  # under xdist or --benchmark-disable: run once as a test, nothing timed
        return
    median = statistics.median(benchmark.stats.stats.data)
    benchmark.extra_info["size_mib"] = size
    benchmark.extra_info["mib_per_s"] = size / median


def _bench_save_and_restore(benchmark, operation, saver, sess, directory, size):
    prefix = str(directory / "model")
    saver.save(sess, prefix)  # a checkpoint to restore, and a warm-up save
    if operation in ("save", "durable-save"):
        def fresh():
            shutil.rmtree(directory)
            directory.mkdir()
            if operation == "durable-save":
                os.sync()  # the timed save pays for its own bytes only
        benchmark.pedantic(lambda: saver.save(sess, prefix), setup=fresh, rounds=ROUNDS)
    else:
        benchmark.pedantic(lambda: saver.restore(sess, prefix), rounds=ROUNDS)
    _record(benchmark, size)
    tf.train.load_checkpoint(prefix)  # what was written is a readable checkpoint


@pytest.mark.parametrize("operation", ["save", "restore", "durable-save"])
@pytest.mark.parametrize("sharded", [False, True], ids=["single-file", "sharded"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_ours(benchmark, pool, size_mib, tmp_path, layout, sharded, operation):
    """The implementation's Saver from a distributed session (``durable-save``: with
    ``durable=True``, against ``test_raw_disk_write_with_fsync``)."""
    nodes, builder = LAYOUTS[layout]
    impl = load_implementation()
    if operation == "durable-save" and not supports_durable(impl):
        pytest.skip(f"{impl.name}: its Saver has no durable keyword")
    options = {"durable": True} if operation == "durable-save" else {}
    ad = impl.AutoDist(cluster=pool.get(cluster_spec(nodes)), **impl.strategy_arguments({"builder": builder}))
    try:
        with tf.Graph().as_default(), ad.scope():
            build_model(size_mib)
            saver = impl.Saver(sharded=sharded, max_to_keep=1, **options)
            sess = ad.create_distributed_session()
            _bench_save_and_restore(benchmark, operation, saver, sess, tmp_path, actual_size_mib(size_mib))
    finally:
        ad.close()


@pytest.mark.parametrize("operation", ["save", "restore"])
@pytest.mark.parametrize("sharded", [False, True], ids=["single-file", "sharded"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_native(benchmark, pool, size_mib, tmp_path, layout, sharded, operation):
    """The competitor: the layout built with TensorFlow alone (replica_device_setter,
    fixed_size_partitioner; ``build_native``), tf.compat.v1.train.Saver from a plain
    session on the same cluster."""
    cluster = pool.get(cluster_spec(LAYOUTS[layout][0]))
    try:
        with tf.Graph().as_default():
            saver = tf.compat.v1.train.Saver(build_native(layout, size_mib), sharded=sharded, max_to_keep=1)
            with tf.compat.v1.Session(cluster.target, config=cluster.session_config()) as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                _bench_save_and_restore(benchmark, operation, saver, sess, tmp_path, actual_size_mib(size_mib))
    finally:
        cluster.reset()


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

    benchmark.pedantic(lambda: write_fsynced(path, payload, len(payload)), setup=os.sync, rounds=ROUNDS)
    _record(benchmark, size)
    assert path.stat().st_size == len(payload)


def test_the_bench_command_prints_the_table_and_progress_only(tmp_path):
    """`autodist-verify bench`: the table on standard output, progress lines on standard
    error, and nothing else — TensorFlow's logging (of this process and of the nodes)
    goes to bench.log."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "autodist_verify", "bench", "--sizes", "1", "--rounds", "1", "--layouts", "ps-1node",
         "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout.strip().splitlines()
    assert table[0].startswith("| size MiB | variant |") and all(line.startswith("| ") for line in table[2:])
    assert {line.split(" | ")[1] for line in table[2:]} >= {
        "disk", "tensorflow", "native/ps-1node/sharded", "ours/ps-1node/single-file/durable"}
    progress = re.compile(r"\[\d+/\d+\] \S+ at 1 MiB|written: |TensorFlow's log: ")
    assert [line for line in done.stderr.splitlines() if not progress.match(line)] == []
    assert (out / "bench.log").is_file() and (out / "bench.md").read_text() == done.stdout.rstrip("\n") + "\n"


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_native_layout_saves_the_single_device_checkpoint(pool, tmp_path, layout):
    """The competitor is the same work: its variables are spread over every task of the
    cluster, and its checkpoint is, key for key and bit for bit, the single-device one."""
    nodes = LAYOUTS[layout][0]
    cluster = pool.get(cluster_spec(nodes))
    with tf.Graph().as_default():
        build_model(1)
        with tf.compat.v1.Session(config=session_config()) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            single = tf.compat.v1.train.Saver().save(sess, str(tmp_path / "single" / "model"))
    try:
        with tf.Graph().as_default():
            var_list = build_native(layout, 1)
            tasks = {v.device.split("/task:")[1][0] for v in tf.compat.v1.global_variables()}
            saver = tf.compat.v1.train.Saver(var_list)
            with tf.compat.v1.Session(cluster.target, config=cluster.session_config()) as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                native = saver.save(sess, str(tmp_path / "native" / "model"))
    finally:
        cluster.reset()
    assert tasks == {str(task) for task in range(nodes)}
    assert checkpoints.diff(single, native) == []
