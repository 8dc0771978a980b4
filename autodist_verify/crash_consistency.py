"""Property 6, ``crash_consistency``: a fault while training, saving or restoring leaves
the last checkpoint whole and latest, and training resumed from it is bit-identical.

The case's ``fault`` (:mod:`autodist_verify.faults`) is injected into a cluster of the
example's own (:meth:`~autodist_verify.clusters.ClusterPool.dedicated`), whose operation
timeout is :data:`OPERATION_TIMEOUT_S`. The schedule, with the case's k and m steps:

1. k steps, save A (global step k);
2. the faulted call, right after the fault: step m after m - 1 more steps (``step``);
   ``save`` B (global step k + m) after m more steps (``save_data``,
   ``save_after_data``); ``restore`` of A into a fresh session (``restore``);
3. the fault is healed (the node restarted, or its write limit lifted) and that
   session closed;
4. resumed: a fresh session restores ``tf.train.latest_checkpoint``, trains the steps
   after it, and saves again at global step k + m (the prefix of the failed save B).

Checks, values compared as raw bytes:

* the faulted call ends within :data:`BOUND_S`; if it raises, it raises a TensorFlow
  error (``tf.errors.OpError``). A step whose node runs a replica must raise; a save or
  restore may instead succeed (a node it does not need), and a save that returned
  must have written a whole checkpoint;
* the latest checkpoint is A (or B, if that save returned), A's files are
  byte-identical to what its save wrote, and every checkpoint the state file names has
  its index, all its data shards (readable) and its MetaGraph;
* plain TensorFlow restores the latest checkpoint into the original graph with the
  oracle's values at its step;
* the resumed run ends with the oracle's values after k + m steps; its save is the
  latest, and the checkpoint directory then holds nothing but the files of the
  checkpoints the state file names (a failed save's leftovers are gone by the next save
  of its prefix);
* no process is left: every node process of the example's cluster (restarted ones
  included) is gone once it stops, and the client has no child process it did not
  have before; no temporary directory is left: the example's calls run with this
  process's temporary directory (``tempfile``'s and ``$TMPDIR``) pointed at a
  directory of their own, which must be empty at the end.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from autodist_verify import checkpoints, model_graph, model_spec
from autodist_verify.case import Case
from autodist_verify.expectations import oracle_states
from autodist_verify.faults import FaultInjector
from autodist_verify.harness import Context, distributed_session, first_line, reported_partitions, variable_state
from autodist_verify.interface import ReportsCheckpointPlan
from autodist_verify.oracle_pool import OraclePool
from autodist_verify.outcome import NotApplicable, fail_if
from cluster_sim import LocalCluster

# The operation timeout of the example's cluster: a call waiting on a paused node fails
# after it. Short, but long enough for a first step on a busy 2-core machine.
OPERATION_TIMEOUT_S = 5.0
# What a faulted call may take beyond it: connection failure detection, the
# implementation's own work before and after (building its save graph, cleaning up).
SLACK_S = 10.0
BOUND_S = OPERATION_TIMEOUT_S + SLACK_S

STATE_FILE = "checkpoint"


@dataclass
class _Attempt:
    """The faulted call: how long it took, and what it raised or returned."""

    seconds: float
    error: BaseException | None = None
    value: Any = None


@dataclass
class _Faulted:
    """What the run up to the fault left: checkpoint A and its files' bytes, what a save
    that returned despite the fault returned, and the problems found so far."""

    saved: str
    saved_files: dict[str, bytes]
    returned: str | None
    problems: list[str]


def crash_consistency(ctx: Context, case: Case) -> None:
    """See the module's documentation."""
    if case.fault is None:
        raise NotApplicable("the case has no 'fault' to inject (autodist_verify.case)")
    outside = model_spec.outside_contract(case.model)
    if outside:
        raise NotApplicable(f"the oracle cannot follow this model: {outside}")
    if case.fault["moment"] != "restore" and case.m < 1:
        raise NotApplicable(f"the fault ({case.fault['moment']}) comes after steps that follow the first save, "
                            "and the schedule has none (m = 0)")
    before, after = case.feeds()
    replicas = case.source.replicas
    at_k, at_k_plus_m = oracle_states(case.model, [(replicas, before), (replicas, after)], oracles=ctx.oracles)
    expected = {case.k: at_k, case.k + case.m: at_k_plus_m}
    directory = ctx.workdir / "checkpoints"
    directory.mkdir()  # TensorFlow's sharded Saver does not create it
    problems: list[str] = []
    with ctx.clusters.dedicated(case.source.cluster, OPERATION_TIMEOUT_S) as cluster:
        children = child_processes()
        injector = FaultInjector(cluster, case.fault)
        with own_temp_dir(ctx.workdir / "tmp") as temp_dir:
            faulted = _run_to_the_fault(ctx, case, cluster, injector, str(directory / "model"), before, after)
            problems += faulted.problems
            steps = {faulted.saved: case.k, **({faulted.returned: case.k + case.m} if faulted.returned else {})}
            latest = faulted.returned or faulted.saved
            problems += _after_the_fault(ctx.oracles, case, directory, latest, faulted, steps, expected)
            found = _latest(directory)
            if found is not None and found in steps:
                problems += _resume(ctx, case, cluster, directory, found, steps, after, expected)
            else:
                problems.append("resumed run: not tried, since the latest checkpoint is not one the schedule saved")
        problems += [f"left in the temporary directory: {name}" for name in sorted(os.listdir(temp_dir))]
    problems += [f"process left behind: {what}" for what in left_processes(children, injector.pids)]
    fail_if(problems)


def _run_to_the_fault(ctx: Context, case: Case, cluster: LocalCluster, injector: FaultInjector, prefix: str,
                      before: list[dict[str, Any]], after: list[dict[str, Any]]) -> _Faulted:
    """Steps 1-3 of the schedule: k steps, save A, the faulted call, the heal."""
    moment = injector.moment
    fault = injector.description
    with distributed_session(ctx.impl, ctx.clusters, case.model, case.source, case.sharded, cluster) as (
            graph, handles, saver, sess):
        reason = case.not_applicable(case.source, reported_partitions(sess)) if case.depends_on_layout else None
        if reason:
            raise NotApplicable(reason)
        ctx.observed.append(f"faulted node {_role(saver, sess, injector.node)}")
        for feed in before:
            sess.run(handles.train_op, model_graph.feed_dict(graph, feed))
        saved = saver.save(sess, prefix, global_step=case.k)
        saved_files = _files_of(saved)
        if moment == "step":
            for feed in after[:-1]:
                sess.run(handles.train_op, model_graph.feed_dict(graph, feed))
            what = f"step {case.k + case.m} with the fault ({fault})"
            attempt = _faulted_call(injector, lambda: sess.run(handles.train_op,
                                                                model_graph.feed_dict(graph, after[-1])))
            must_fail = any(d.task_index == injector.node for d in case.source.resource_spec.replica_devices)
        elif moment != "restore":
            for feed in after:
                sess.run(handles.train_op, model_graph.feed_dict(graph, feed))
            what = f"save(global_step={case.k + case.m}) with the fault ({fault})"
            attempt = _faulted_call(injector, lambda: saver.save(sess, prefix, global_step=case.k + case.m))
            must_fail = False
    if moment == "restore":
        with distributed_session(ctx.impl, ctx.clusters, case.model, case.source, case.sharded, cluster) as (
                _, _, saver, sess):
            what = f"restore of {saved} into a new session with the fault ({fault})"
            attempt = _faulted_call(injector, lambda: saver.restore(sess, saved))
            must_fail = False
    problems = _call_problems(what, attempt, must_fail)
    returned = None
    if moment.startswith("save") and attempt.error is None:
        if isinstance(attempt.value, str):
            returned = attempt.value
        else:
            problems.append(f"{what} returned {attempt.value!r}, not the checkpoint's prefix")
    return _Faulted(saved, saved_files, returned, problems)


def _faulted_call(injector: FaultInjector, call: Callable[[], Any]) -> _Attempt:
    """Inject the fault, run ``call``, heal the fault (also when the call fails)."""
    injector.inject()
    try:
        with injector.client_writes():
            began = time.monotonic()
            try:
                value = call()
            except Exception as error:  # whatever it is, the property judges it
                return _Attempt(time.monotonic() - began, error=error)
            return _Attempt(time.monotonic() - began, value=value)
    finally:
        injector.heal()


def _call_problems(what: str, attempt: _Attempt, must_fail: bool) -> list[str]:
    """The faulted call ends within the bound, raising a TensorFlow error if it fails."""
    import tensorflow as tf

    problems = []
    if attempt.seconds > BOUND_S:
        problems.append(f"{what} took {attempt.seconds:.1f} s, beyond the bound of {BOUND_S:g} s "
                        f"(the cluster's operation timeout, {OPERATION_TIMEOUT_S:g} s, + {SLACK_S:g} s)")
    if attempt.error is None and must_fail:
        problems.append(f"{what} returned, although the node runs a replica of the step")
    elif attempt.error is not None and not isinstance(attempt.error, tf.errors.OpError):
        problems.append(f"{what} raised {type(attempt.error).__name__}: {first_line(attempt.error)} "
                        "(expected a TensorFlow error, a tf.errors.OpError)")
    return problems


def _after_the_fault(oracles: OraclePool, case: Case, directory: Path, latest: str, faulted: _Faulted,
                     steps: Mapping[str, int], expected: Mapping[int, dict[str, np.ndarray]]) -> list[str]:
    """The checkpoints as the faulted call left them."""
    when = "after the faulted call"
    found = _latest(directory)
    problems = []
    if found != latest:
        why = "the save returned it" if faulted.returned else "the call failed, so the checkpoint saved before it"
        problems.append(f"{when}: tf.train.latest_checkpoint gives {found!r}, expected {latest!r} ({why})")
    now = _files_of(faulted.saved)
    for name in sorted(set(faulted.saved_files) | set(now)):
        if faulted.saved_files.get(name) != now.get(name):
            change = "is gone" if name not in now else "is new" if name not in faulted.saved_files else "changed"
            problems.append(f"{when}: {name} of checkpoint {faulted.saved} {change}")
    problems += [f"{when}: {p}" for p in _named_checkpoint_problems(directory)]
    if found is not None and found in steps:
        problems += _plain_restore_problems(oracles, case.model, found, expected[steps[found]])
    return problems


def _resume(ctx: Context, case: Case, cluster: LocalCluster, directory: Path, latest: str,
            saved: Mapping[str, int], after: list[dict[str, Any]],
            expected: Mapping[int, dict[str, np.ndarray]]) -> list[str]:
    """Step 4: restore the latest checkpoint, one of those the schedule ``saved`` (prefix
    -> global step), into a fresh session, train the steps after it, save at k + m;
    then the state and the directory."""
    import tensorflow as tf

    label = f"resumed run (from {Path(latest).name})"
    with distributed_session(ctx.impl, ctx.clusters, case.model, case.source, case.sharded, cluster) as (
            graph, handles, saver, sess):
        try:
            saver.restore(sess, latest)
        except (tf.errors.OpError, ValueError) as error:
            return [f"{label}: the restore failed: {type(error).__name__}: {first_line(error)}"]
        for feed in after[saved[latest] - case.k:]:
            sess.run(handles.train_op, model_graph.feed_dict(graph, feed))
        problems = _value_problems(f"{label}, after step {case.k + case.m}", expected[case.k + case.m],
                                   variable_state(tf, sess))
        final = saver.save(sess, str(directory / "model"), global_step=case.k + case.m)
    if _latest(directory) != final:
        problems.append(f"{label}: tf.train.latest_checkpoint gives {_latest(directory)!r}, not its save {final!r}")
    problems += [f"{label}: {p}" for p in _named_checkpoint_problems(directory)]
    return problems + [f"{label}: left in the checkpoint directory after the next save of the same prefix: {name}"
                       for name in _stray_files(directory, [*saved, final])]


def _plain_restore_problems(oracles: OraclePool, model: Mapping[str, Any], prefix: str,
                            expected: dict[str, np.ndarray]) -> list[str]:
    """Plain TensorFlow's Saver restores ``prefix`` into the original graph, with ``expected``."""
    import tensorflow as tf

    with oracles.fresh(model) as plain:
        try:
            plain.restore(prefix)
        except (tf.errors.OpError, ValueError) as error:
            return [f"plain TensorFlow cannot restore the latest checkpoint {prefix}: {first_line(error)}"]
        return _value_problems(f"plain TensorFlow's restore of {Path(prefix).name}", expected, plain.variables())


def _value_problems(where: str, expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> list[str]:
    problems = [f"{where}: variable {name!r} is missing" for name in sorted(set(expected) - set(actual))]
    return problems + [f"{where}: {p}" for p in checkpoints.value_problems(dict(expected), dict(actual))]


def _role(saver: Any, sess: Any, node: int) -> str:
    """The faulted node's part in the layout, from the Saver's optional checkpoint plan."""
    if not isinstance(saver, ReportsCheckpointPlan):
        return "role not reported (no checkpoint_plan)"
    tasks = {int(found.group(1)) for row in saver.checkpoint_plan(sess) for device in [*row["sources"], *row["checks"]]
             for found in [re.search(r"/task:(\d+)", device)] if found}
    return "holds variables" if node in tasks else "runs replicas only"


# -- the checkpoint directory -----------------------------------------------------------


def _latest(directory: Path) -> str | None:
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(directory))
    return None if latest is None else str(latest)


def _files_of(prefix: str) -> dict[str, bytes]:
    """The bytes of every file of the checkpoint ``prefix`` (``prefix.*``)."""
    directory, base = os.path.split(prefix)
    return {name: (Path(directory) / name).read_bytes() for name in os.listdir(directory)
            if name.startswith(f"{base}.") and (Path(directory) / name).is_file()}


def _named(directory: Path) -> list[str]:
    """Every checkpoint the state file names, latest first."""
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(str(directory))
    if state is None:
        return []
    return list(dict.fromkeys([state.model_checkpoint_path, *state.all_model_checkpoint_paths]))


def _named_checkpoint_problems(directory: Path) -> list[str]:
    """Every checkpoint the state file names has its index, every data shard (and their
    bytes read back) and its MetaGraph."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import meta_graph_pb2

    problems = []
    for prefix in _named(directory):
        where = f"the state file names {prefix}, which"
        names = set(os.listdir(os.path.dirname(prefix))) if os.path.isdir(os.path.dirname(prefix)) else set()
        base = os.path.basename(prefix)
        shards = [re.fullmatch(re.escape(base) + r"\.data-(\d{5})-of-(\d{5})", name) for name in names]
        found = {(int(m.group(1)), int(m.group(2))) for m in shards if m}
        missing = [f"{base}.index"] if f"{base}.index" not in names else []
        if not found:
            missing.append(f"{base}.data-*")
        for total in {total for _, total in found}:
            missing += [f"{base}.data-{i:05d}-of-{total:05d}" for i in range(total) if (i, total) not in found]
        if f"{base}.meta" not in names:
            missing.append(f"{base}.meta")
        if missing:
            problems.append(f"{where} has no {', '.join(missing)}")
            continue
        try:
            meta_graph_pb2.MetaGraphDef().ParseFromString(Path(f"{prefix}.meta").read_bytes())
        except DecodeError as error:
            problems.append(f"{where} has a {base}.meta that is not a MetaGraph: {error}")
        try:
            checkpoints.values(prefix)
        except tf.errors.OpError as error:
            problems.append(f"{where} cannot be read: {type(error).__name__}: {first_line(error)}")
    return problems


def _stray_files(directory: Path, saved: Iterable[str]) -> list[str]:
    """Entries of the checkpoint directory that are neither the state file nor a file of
    a checkpoint it names or the schedule ``saved`` (a new Saver names only its own
    saves in the state file, as TensorFlow's does; the older files stay)."""
    bases = [f"{os.path.basename(prefix)}." for prefix in [*_named(directory), *saved]]
    return sorted(name for name in os.listdir(directory)
                  if name != STATE_FILE and not any(name.startswith(base) for base in bases))


# -- processes and temporary directories ------------------------------------------------


def child_processes() -> set[int]:
    """The pids of this process's descendants."""
    return {child.pid for child in psutil.Process().children(recursive=True)}


def _running(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def left_processes(before: set[int], node_pids: set[int], wait_s: float = 10.0) -> list[str]:
    """Node processes of the example's cluster still running, and child processes of
    this process that it did not have before, after waiting up to ``wait_s`` for them to
    end (a killed node is reaped by its parent, asynchronously)."""
    deadline = time.monotonic() + wait_s
    while True:
        left = sorted(pid for pid in (child_processes() - before) | node_pids if _running(pid))
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    described = []
    for pid in left:
        try:
            described.append(f"pid {pid} ({' '.join(psutil.Process(pid).cmdline())[:120]})")
        except psutil.Error:
            described.append(f"pid {pid}")
    return described


@contextlib.contextmanager
def own_temp_dir(path: Path) -> Iterator[Path]:
    """Point this process's temporary directory (``tempfile``'s and ``$TMPDIR``, which
    TensorFlow reads) at a new directory ``path`` meanwhile."""
    path.mkdir()
    saved, saved_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = os.environ["TMPDIR"] = str(path)
    try:
        yield path
    finally:
        tempfile.tempdir = saved
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
