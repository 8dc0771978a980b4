"""Save and restore throughput of an implementation's Saver, beside TensorFlow's and the disk's.

Every figure is MiB of variable bytes per second, so sizes and variants compare. Three
things are measured in the same run, on the same bytes, in the same directory:

* **ours**: the implementation's ``Saver.save`` / ``restore`` from a distributed session
  on a simulated cluster, per layout (where the variables live) and ``sharded`` setting;
* **tensorflow**: ``tf.compat.v1.train.Saver`` on the single-device graph, in this process;
* **disk**: writing the same number of bytes with ``os.write`` and ``fsync`` (and reading
  them back), the practical limit of the storage.

The model is four float32 variables of shape ``[rows, 1024]`` (a quarter of the size
each), trained by plain gradient descent so there are no optimizer slots: the
checkpoint holds exactly the variable bytes. Peak memory is sampled with psutil in
every process of the run (the client and each node) during saves: how much each grew
above its level before the save.
"""

from __future__ import annotations

import os
import shutil
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from autodist_verify.clusters import ClusterPool
from autodist_verify.implementation import Implementation

MIB = 1024 * 1024
ROW_BYTES = 1024 * 4  # one row of a [rows, 1024] float32 variable
VARIABLES = 4

# layout -> (number of nodes, strategy builder)
LAYOUTS: dict[str, tuple[int, str]] = {
    "ps-1node": (1, "PS"),
    "ps-2nodes": (2, "PS"),
    "partitioned-ps": (2, "PartitionedPS"),
    "allreduce": (2, "AllReduce"),
}


@dataclass
class Measurement:
    """The timings of one variant at one size."""

    variant: str  # "ours/ps-2nodes/sharded", "tensorflow", "disk"
    size_mib: float
    save_s: list[float] = field(default_factory=list)
    restore_s: list[float] = field(default_factory=list)
    peak_extra_mib: dict[str, float] = field(default_factory=dict)  # process -> peak growth during saves

    @property
    def save_mib_s(self) -> float:
        return self.size_mib / statistics.median(self.save_s)

    @property
    def restore_mib_s(self) -> float:
        return self.size_mib / statistics.median(self.restore_s)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "save_mib_s": self.save_mib_s, "restore_mib_s": self.restore_mib_s}


def cluster_spec(nodes: int) -> dict[str, Any]:
    return {"nodes": [{"address": f"127.0.0.{i + 1}", **({"chief": True} if i == 0 else {})} for i in range(nodes)]}


def build_model(size_mib: float):
    """The benchmark's original graph, in the current default graph; returns the train op."""
    import tensorflow as tf

    rows = max(1, int(size_mib * MIB) // (VARIABLES * ROW_BYTES))
    variables = [
        tf.compat.v1.get_variable(f"block_{i}/w", [rows, 1024], tf.float32,
                                  initializer=tf.compat.v1.constant_initializer(0.5 + i))
        for i in range(VARIABLES)
    ]
    loss = tf.add_n([tf.reduce_sum(v[:1]) for v in variables])
    return tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss)


def actual_size_mib(size_mib: float) -> float:
    """The model's real size: whole rows of each variable."""
    rows = max(1, int(size_mib * MIB) // (VARIABLES * ROW_BYTES))
    return rows * ROW_BYTES * VARIABLES / MIB


class MemorySampler:
    """Samples the RSS of some processes in a thread; reports each one's peak growth."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.01):
        self._processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._interval_s = interval_s
        self._baseline = {name: p.memory_info().rss for name, p in self._processes.items()}
        self._peak = dict(self._baseline)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, process in self._processes.items():
                try:
                    self._peak[name] = max(self._peak[name], process.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(self._interval_s)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def peak_extra_mib(self) -> dict[str, float]:
        return {name: (self._peak[name] - self._baseline[name]) / MIB for name in self._processes}


def write_fsynced(path: Path, chunk: bytes, total: int) -> None:
    """Write ``total`` bytes (``chunk`` repeated) to ``path`` and fsync: the durable write."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        written = 0
        while written < total:
            written += os.write(fd, chunk[: min(len(chunk), total - written)])
        os.fsync(fd)
    finally:
        os.close(fd)


def _timed(action: Callable[..., Any], *args: Any) -> float:
    began = time.perf_counter()
    action(*args)
    return time.perf_counter() - began


def _read_all(path: Path) -> None:
    with open(path, "rb", buffering=0) as handle:
        while handle.read(16 * MIB):
            pass


def _merge_peaks(into: dict[str, float], new: dict[str, float]) -> None:
    for name, value in new.items():
        into[name] = max(into.get(name, 0.0), value)


class Bench:
    """Runs the measurements; ``workdir`` is where checkpoints are written (and removed)."""

    def __init__(self, impl: Implementation, pool: ClusterPool, workdir: Path, rounds: int = 3,
                 progress: Callable[[str], None] = lambda _: None):
        self.impl = impl
        self.pool = pool
        self.workdir = Path(workdir)
        self.rounds = rounds
        self.progress = progress

    def _fresh_dir(self, name: str) -> Path:
        path = self.workdir / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def ours(self, layout: str, sharded: bool, size_mib: float) -> Measurement:
        """The implementation's Saver from a distributed session."""
        import tensorflow as tf

        nodes, builder = LAYOUTS[layout]
        cluster = self.pool.get(cluster_spec(nodes))
        variant = f"ours/{layout}/{'sharded' if sharded else 'single-file'}"
        result = Measurement(variant, actual_size_mib(size_mib))
        self.progress(f"{variant} at {result.size_mib:.0f} MiB")
        pids = {"client": os.getpid(), **{f"node{i}": cluster.pid(i) for i in range(nodes)}}
        ad = self.impl.AutoDist(cluster=cluster, **self.impl.strategy_arguments({"builder": builder}))
        try:
            with tf.Graph().as_default(), ad.scope():
                build_model(size_mib)
                saver = self.impl.Saver(sharded=sharded, max_to_keep=1)
                sess = ad.create_distributed_session()
                for _ in range(self.rounds):
                    directory = self._fresh_dir("ours")
                    with MemorySampler(pids) as sampler:
                        result.save_s.append(_timed(saver.save, sess, str(directory / "model")))
                    _merge_peaks(result.peak_extra_mib, sampler.peak_extra_mib())
                    result.restore_s.append(_timed(saver.restore, sess, str(directory / "model")))
        finally:
            ad.close()
            shutil.rmtree(self.workdir / "ours", ignore_errors=True)
        return result

    def tensorflow(self, size_mib: float) -> Measurement:
        """``tf.compat.v1.train.Saver`` on the single-device graph, in this process."""
        import tensorflow as tf

        from cluster_sim.determinism import session_config

        result = Measurement("tensorflow", actual_size_mib(size_mib))
        self.progress(f"tensorflow at {result.size_mib:.0f} MiB")
        graph = tf.Graph()
        with graph.as_default():
            build_model(size_mib)
            saver = tf.compat.v1.train.Saver(max_to_keep=1)
            with tf.compat.v1.Session(config=session_config()) as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                for _ in range(self.rounds):
                    directory = self._fresh_dir("tensorflow")
                    with MemorySampler({"client": os.getpid()}) as sampler:
                        result.save_s.append(_timed(saver.save, sess, str(directory / "model")))
                    _merge_peaks(result.peak_extra_mib, sampler.peak_extra_mib())
                    result.restore_s.append(_timed(saver.restore, sess, str(directory / "model")))
        shutil.rmtree(self.workdir / "tensorflow", ignore_errors=True)
        return result

    def disk(self, size_mib: float) -> Measurement:
        """Write the same bytes with fsync, then read them back: the storage's limit."""
        result = Measurement("disk", actual_size_mib(size_mib))
        self.progress(f"disk at {result.size_mib:.0f} MiB")
        payload = os.urandom(MIB) * 16  # 16 MiB chunks
        total = int(result.size_mib * MIB)
        for _ in range(self.rounds):
            path = self._fresh_dir("disk") / "blob"
            result.save_s.append(_timed(write_fsynced, path, payload, total))
            result.restore_s.append(_timed(_read_all, path))
        shutil.rmtree(self.workdir / "disk", ignore_errors=True)
        return result
