"""The entry point of one simulated node's process.

Started by :class:`cluster_sim.cluster.LocalCluster` with the spawn start method, the
process: ties its life to its parent's (``PR_SET_PDEATHSIG``), sends its output to its
log file, sets its environment (with ``deterministic``, the determinism settings of
:mod:`cluster_sim.determinism`) *before* importing TensorFlow, starts its
``tf.distribute.Server``, runs one real op on each of its devices, reports to the
parent over a pipe, then serves until killed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import traceback
from typing import Any

from cluster_sim.determinism import INTRA_OP_THREADS, node_environment

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Get SIGKILL when the parent dies; exit now if it already has."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _redirect_output(log_file: str) -> None:
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def self_check(tf, target: str, devices: list[str]) -> list[str]:
    """Run a real op on each device through ``target``; return the devices that ran one."""
    graph = tf.Graph()
    with graph.as_default():
        # Fed, not constant: constant inputs could be folded into one op on the chief.
        start = tf.compat.v1.placeholder(tf.float32, [])
        outputs = []
        for device in devices:
            with tf.device(device):
                outputs.append(tf.reduce_sum(tf.range(start, 4.0)) + 1.0)
        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        metadata = tf.compat.v1.RunMetadata()
        with tf.compat.v1.Session(target, graph=graph) as sess:
            values = sess.run(outputs, feed_dict={start: 0.0}, options=options, run_metadata=metadata)
    if any(v != 7.0 for v in values):
        raise RuntimeError(f"self check computed {values}, expected 7.0 on every device")
    return sorted({d.device for d in metadata.step_stats.dev_stats})


def run_node(
    cluster_def: dict[str, list[str]],
    job_name: str,
    task_index: int,
    num_devices: int,
    log_file: str | None,
    scratch_dir: str | None,
    deterministic: bool,
    parent_pid: int | None,
    report: Any,
) -> None:
    """Serve one task forever. ``report`` is a pipe connection (or None)."""
    if parent_pid is not None:
        die_with_parent(parent_pid)
    if log_file:
        _redirect_output(log_file)
    os.environ.update(node_environment(deterministic))
    if scratch_dir:
        os.environ["CLUSTER_SIM_SCRATCH_DIR"] = scratch_dir
        os.chdir(scratch_dir)
    try:
        import tensorflow as tf

        tf.compat.v1.disable_eager_execution()
        config = tf.compat.v1.ConfigProto(device_count={"CPU": num_devices})
        if deterministic:
            config.intra_op_parallelism_threads = INTRA_OP_THREADS
        server = tf.distribute.Server(
            tf.train.ClusterSpec(cluster_def), job_name=job_name, task_index=task_index,
            config=config, start=True,
        )
        devices = [f"/job:{job_name}/task:{task_index}/device:CPU:{i}" for i in range(num_devices)]
        ran = self_check(tf, server.target, devices)
        print(f"node {job_name}:{task_index} serving at {server.target}; devices {ran}", flush=True)
        if report is not None:
            report.send(("ready", os.getpid(), ran))
            report.close()
    except BaseException:
        text = traceback.format_exc()
        print(text, file=sys.stderr, flush=True)
        if report is not None:
            report.send(("error", os.getpid(), text))
            report.close()
        raise SystemExit(1) from None
    server.join()
