"""Helpers shared by the tests that drive live clusters and their processes."""

from __future__ import annotations

import time

import psutil
import tensorflow as tf

FULL_TRACE = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)


def gone(pid: int) -> bool:
    """True when the process no longer exists or is only a zombie."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids, timeout: float = 10.0) -> bool:
    """Poll until every process of ``pids`` is gone, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(gone(p) for p in pids):
            return True
        time.sleep(0.1)
    return all(gone(p) for p in pids)


def step_on(target: str, devices, config, value: float = 3.0):
    """Run ``x * 2 + 1`` on each device in a new session on ``target`` (x fed, so nothing
    is folded on the chief); return (values, devices in the step's trace, without
    "/replica:0")."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [])
        outputs = []
        for device in devices:
            with tf.device(device):
                outputs.append(x * 2.0 + 1.0)
        metadata = tf.compat.v1.RunMetadata()
        with tf.compat.v1.Session(target, graph=graph, config=config) as sess:
            values = sess.run(outputs, {x: value}, options=FULL_TRACE, run_metadata=metadata)
    ran = {d.device.replace("/replica:0", "") for d in metadata.step_stats.dev_stats}
    return [float(v) for v in values], ran
