"""Whether every task of a sharded save or restore sees the checkpoint the client sees.

A sharded save (``Saver(sharded=True)``) writes each shard on the task that holds its
variables and merges the shards on one of those tasks; the client then renames the
files into place and writes the state file. A sharded restore reads on each of those
tasks. Every one of these processes opens the checkpoint by its path, so the path must
lead to the same directory on all their hosts: a filesystem they share. Without one, a
save fails only after some hosts wrote (``NotFoundError ... _temp``, or
``MergeV2Checkpoints ... did not exist``) and leaves partial files on their disks, and a
restore fails with TensorFlow's misleading "a Variable name or other graph key that is
missing from the checkpoint", when the tasks that could read may have written their
variables already.

So the Saver checks first, and writes or restores nothing if a task cannot see:

* before a sharded save, :func:`require_shared_directory`: the client writes a probe
  file (a random name and content) into the checkpoint directory, and each task of the
  save reads it back with a ``ReadFile`` op placed on that task's CPU:0 (the path is
  fed, so no graph optimization can read it elsewhere); the probe is removed at once;
* before a sharded restore, :func:`require_visible_checkpoint`: each task of the restore
  reads the checkpoint's index and compares it with the client's bytes. Nothing is
  written, as a checkpoint may be restored from a read-only directory; a copy of the
  checkpoint at the same path on each host passes, as it restores correctly.

An unsharded save asks the same of every task holding a value it writes
(:func:`shares_directory`): if they all see the directory, each writes its own values
in parallel and the client merges them into the one data file
(:class:`~.parallel_save.ParallelSave`); if not, the save is TensorFlow's, on one task.

Any restore asks the same of every task holding a copy it writes
(:func:`sees_checkpoint`): if they all see the checkpoint, each reads its own copies'
values (:func:`~.saveables.local_restore`); if not, an unsharded restore reads on the
chief as TensorFlow's does.

A task that cannot see raises :class:`CheckpointNotShared` naming its host; a task that
does not answer raises TensorFlow's error as any step would. A directory found shared
is remembered per (directory, session), so only the first sharded save to a directory
pays for the check: one step on the cluster, about 3 ms on three loopback nodes (the
session's first check also builds and registers the step: about 0.1 s), against 15 ms
for the sharded save of a small model. A refusal is not remembered: a save retried once
the directory is shared goes ahead. What the memory cannot see is a filesystem mounted
or unmounted under the same path later in the session; such a save then fails as it did
without the check, after writing.
"""

from __future__ import annotations

import os
import uuid
import weakref
from collections.abc import Iterable

import tensorflow as tf

from saver_impl.checkpoint.plan import task_device
from saver_impl.session import DistributedSession

# Errors that say a task is unreachable, not that it cannot see the file: raised as they are.
_UNREACHABLE = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
                tf.errors.CancelledError)


class CheckpointNotShared(tf.errors.FailedPreconditionError):
    """A sharded save or restore refused before it started: some of its tasks do not see
    the checkpoint directory the client sees. The message names their hosts and what to
    do (a shared filesystem, or ``sharded=False``).

    A ``tf.errors.FailedPreconditionError``: code that handles a failed save or restore
    as a TensorFlow error handles this one too, and the condition is the cluster's
    setup, which the operator fixes, not an argument of the call.
    """


class _Probe:
    """The probe ops of one distributed session and the directories found shared. (It
    holds no reference to the session, which keys it in a weak dictionary.)"""

    def __init__(self) -> None:
        self._path: tf.Tensor | None = None
        self._expected: tf.Tensor | None = None
        self._reads: dict[str, tf.Tensor] = {}
        self.shared: dict[str, set[str]] = {}

    def _read(self, session: DistributedSession, task: str) -> tf.Tensor:
        """Whether ``task`` reads the expected bytes at the fed path (built once per task)."""
        if task not in self._reads:
            with session.distributed_graph.as_default(), tf.name_scope("checkpoint_visibility"):
                if self._path is None:
                    self._path = tf.compat.v1.placeholder(tf.string, [], name="path")
                    self._expected = tf.compat.v1.placeholder(tf.string, [], name="expected")
                with tf.device(task):
                    self._reads[task] = tf.equal(tf.io.read_file(self._path), self._expected)
        return self._reads[task]

    def unseeing(self, session: DistributedSession, tasks: Iterable[str], path: str,
                 expected: bytes) -> dict[str, str]:
        """The tasks among ``tasks`` that do not read ``expected`` at ``path``, each with
        what it found. One step for all tasks; a step per task only if one fails."""
        reads = {task: self._read(session, task) for task in tasks}
        feed = {self._path: path, self._expected: expected}
        run = session.raw_session.run
        try:
            return {task: "another file" for task, same in zip(reads, run(list(reads.values()), feed))
                    if not same}
        except _UNREACHABLE:
            raise
        except tf.errors.OpError:
            pass  # some task cannot read it: ask each one alone to name them all
        found = {}
        for task, read in reads.items():
            try:
                if not run(read, feed):
                    found[task] = "another file"
            except _UNREACHABLE:
                raise
            except tf.errors.OpError as error:
                found[task] = type(error).__name__
        return found


_probes: weakref.WeakKeyDictionary[DistributedSession, _Probe] = weakref.WeakKeyDictionary()


def _probe(session: DistributedSession) -> _Probe:
    if session not in _probes:
        _probes[session] = _Probe()
    return _probes[session]


def require_shared_directory(session: DistributedSession, prefix: str, tasks: Iterable[str]) -> None:
    """Raise :class:`CheckpointNotShared` unless every task of ``tasks`` (task devices)
    sees the directory of the checkpoint ``prefix`` as the client does: a probe file the
    client writes there is read back on each task, then removed.

    Raises:
        ValueError: the directory does not exist on the client (TensorFlow's error for a
            save whose parent directory is missing, raised before anything is written).
        tf.errors.OpError: the client cannot write the probe (TensorFlow's error), or a
            task does not answer.
    """
    directory = os.path.dirname(prefix)
    if not tf.io.gfile.isdir(directory):
        raise ValueError(f"Parent directory of {prefix} doesn't exist, can't save.")
    unseeing = _tasks_not_seeing_directory(session, directory, tasks)
    if unseeing:
        raise CheckpointNotShared(None, None, (
            f"Saver(sharded=True) cannot save to {directory}: {_hosts(session, unseeing)} would write shards "
            f"of this save there but {'does' if len(unseeing) == 1 else 'do'} not see the directory the client "
            f"sees (a probe file the client wrote there, read on each host: {_details(unseeing)}). A sharded "
            "save writes each shard on the host that holds its variables, so the directory must be on a "
            "filesystem shared by the client and those hosts. Save to a shared filesystem, or with "
            "Saver(sharded=False), which writes the whole checkpoint on the chief's host. Nothing was written."))


def shares_directory(session: DistributedSession, prefix: str, tasks: Iterable[str]) -> bool:
    """Whether every task of ``tasks`` sees the directory of the checkpoint ``prefix`` as
    the client does (the probe of :func:`require_shared_directory`; False when the
    client has no such directory or cannot write the probe). The Saver asks before an
    unsharded save, which the tasks holding the values then write in parallel."""
    directory = os.path.dirname(prefix)
    if "://" in prefix or not os.path.isdir(directory):
        return False
    try:
        return not _tasks_not_seeing_directory(session, directory, tasks)
    except _UNREACHABLE:
        raise
    except (OSError, tf.errors.OpError):
        return False


def _tasks_not_seeing_directory(session: DistributedSession, directory: str, tasks: Iterable[str]) -> dict[str, str]:
    """The tasks of ``tasks`` that do not read back a probe file the client writes into
    ``directory``, each with what it found. A directory found shared is remembered."""
    probe = _probe(session)
    tasks = sorted(set(tasks), key=_task_order)
    known = probe.shared.get(directory, set())
    missing = [task for task in tasks if task not in known]
    if not missing:
        return {}
    token = uuid.uuid4().hex
    path = os.path.join(directory, f".saver_impl-probe-{token}")
    with tf.io.gfile.GFile(path, "wb") as probe_file:
        probe_file.write(token.encode())
    try:
        unseeing = probe.unseeing(session, missing, path, token.encode())
    finally:
        try:
            tf.io.gfile.remove(path)
        except tf.errors.OpError:
            pass  # a probe that cannot be removed is no reason to fail the save
    if not unseeing:
        probe.shared.setdefault(directory, set()).update(missing)
    return unseeing


def require_visible_checkpoint(session: DistributedSession, prefix: str, tasks: Iterable[str]) -> None:
    """Raise :class:`CheckpointNotShared` unless every task of ``tasks`` reads the same
    index of the checkpoint ``prefix`` as the client (nothing is written). Does nothing
    when the client finds no index (TensorFlow's restore then reports the checkpoint),
    or when the directory was found shared by a save in this session.

    Raises:
        tf.errors.OpError: a task does not answer.
    """
    unseeing = _tasks_not_seeing(session, prefix, tasks)
    if unseeing:
        raise CheckpointNotShared(None, None, (
            f"Saver(sharded=True) cannot restore {prefix}: {_hosts(session, unseeing)} would read part of it "
            f"but {'does' if len(unseeing) == 1 else 'do'} not see the checkpoint the client sees (its index, "
            f"read on each host: {_details(unseeing)}). A sharded restore reads each variable on the host that "
            "holds it, so the checkpoint must be on a filesystem shared by the client and those hosts (or "
            "copied to the same path on each). Restore from there, or with Saver(sharded=False), which reads "
            "the checkpoint on the chief's host. Nothing was restored."))


def sees_checkpoint(session: DistributedSession, prefix: str, tasks: Iterable[str]) -> bool:
    """Whether every task of ``tasks`` reads the same index of the checkpoint ``prefix``
    as the client (False also when the client finds no index). The Saver asks before a
    restore, which it then reads on the tasks holding the copies (else on the chief)."""
    return _tasks_not_seeing(session, prefix, tasks) == {}


def _tasks_not_seeing(session: DistributedSession, prefix: str, tasks: Iterable[str]) -> dict[str, str] | None:
    """The tasks of ``tasks`` that do not read the client's index of ``prefix``, each
    with what it found; None when the client finds no index. A directory found shared
    by a save in this session is not read again."""
    probe = _probe(session)
    tasks = sorted(set(tasks), key=_task_order)
    if probe.shared.get(os.path.dirname(prefix), set()) >= set(tasks):
        return {}
    index = f"{prefix}.index"
    try:
        expected = tf.io.gfile.GFile(index, "rb").read()
    except tf.errors.NotFoundError:
        return None
    return probe.unseeing(session, tasks, index, expected)


def _task_hosts(session: DistributedSession) -> dict[str, str]:
    """Task device -> the address of its node, from the strategy's logical device names
    (``"127.0.0.2:CPU:0"``) and their TensorFlow names."""
    dist = session.dist
    logical = [*dist.strategy.replicas, dist.strategy.aux_device]
    physical = [*dist.replica_devices, dist.aux_device]
    return {task_device(tf_name): name.rsplit(":", 2)[0] for name, tf_name in zip(logical, physical)}


def _task_order(task: str) -> tuple[str, int]:
    spec = tf.DeviceSpec.from_string(task)
    return spec.job or "", spec.task or 0


def _task_name(task: str) -> str:
    return task.removesuffix("/device:CPU:0")


def _hosts(session: DistributedSession, unseeing: dict[str, str]) -> str:
    """``host 127.0.0.2 (/job:worker/task:1) and host ...``, in task order."""
    hosts = _task_hosts(session)
    names = [f"host {hosts[task]} ({_task_name(task)})" if task in hosts else _task_name(task) for task in unseeing]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _details(unseeing: dict[str, str]) -> str:
    return ", ".join(f"{_task_name(task)}: {reason}" for task, reason in unseeing.items())
