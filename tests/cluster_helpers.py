"""Helpers shared by the tests that drive live clusters and their processes."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import tensorflow as tf

FULL_TRACE = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)


def gone(pid: int) -> bool:
    """True when the process no longer exists or is only a zombie."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def live_children(process: psutil.Process) -> set[int]:
    """The live descendants of ``process``, without multiprocess's resource tracker: the
    first spawn of a process starts that one helper, which lives as long as the process
    (it is no node and no cluster's leftover)."""
    children = set()
    for child in process.children(recursive=True):
        try:
            if not gone(child.pid) and "resource_tracker" not in " ".join(child.cmdline()):
                children.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return children


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


@contextlib.contextmanager
def parent_of_a_cluster(script: str, workdir: Path, cwd: Path) -> Iterator[tuple[subprocess.Popen, list[int]]]:
    """Run ``script`` in a new Python process that starts a cluster and prints its node
    pids as one JSON line; yield (that process, the pids). The process is killed at the
    end if still running; its stderr is shown if it printed no pids."""
    stderr_path = workdir / "parent-stderr.txt"
    with open(stderr_path, "wb") as stderr:
        parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=stderr, cwd=cwd)
        try:
            ready, _, _ = select.select([parent.stdout], [], [], 120)
            line = parent.stdout.readline() if ready else b""
            assert line, stderr_path.read_text()[-3000:]
            yield parent, json.loads(line)
        finally:
            if parent.poll() is None:
                parent.kill()
                parent.wait(timeout=10)
            parent.stdout.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def read_until(stream, done, timeout: float) -> str:
    """Read a pipe until ``done(text so far)``; fail after ``timeout`` seconds.

    Reads the raw file descriptor: a buffered readline could swallow more than a line
    and leave select() waiting for data that already arrived."""
    text = ""
    deadline = time.monotonic() + timeout
    while not done(text):
        ready, _, _ = select.select([stream], [], [], max(deadline - time.monotonic(), 0))
        assert ready, f"timed out; read so far:\n{text}"
        chunk = os.read(stream.fileno(), 65536)
        assert chunk, f"stream closed; read so far:\n{text}"
        text += chunk.decode()
    return text
