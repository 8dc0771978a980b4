"""Drives an implementation under test: build a model under its ``AutoDist`` in a setting,
restore, train, save, export — and the plain-TensorFlow witness's jobs.

Everything reaches the implementation through :class:`~autodist_verify.implementation.Implementation`
(``--impl``); nothing here knows how it lays variables out, except what it reports
through the optional ``stored_copies()``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autodist_verify import model_graph
from autodist_verify.case import Setting
from autodist_verify.clusters import ClusterPool
from autodist_verify.implementation import Implementation
from autodist_verify.interface import ReportsCheckpointPlan, ReportsStoredCopies
from autodist_verify.oracle import TrainModel
from autodist_verify.oracle_pool import OraclePool
from autodist_verify.outcome import PropertyFailure
from autodist_verify.witness import Witness, WitnessError
from autodist_verify.witness_files import load_result, save_steps
from cluster_sim import LocalCluster

SAVED_MODEL_TAG = "train"
SIGNATURE = "predict"


@dataclass
class Context:
    """What a property needs besides the case."""

    impl: Implementation
    clusters: ClusterPool
    witness: Witness  # plain TensorFlow in a process that never imports ``impl``
    workdir: Path
    # What the property learned about the case from the implementation while running
    # (the faulted node's role in its layout), counted by the matrix like Case.features().
    observed: list[str] = field(default_factory=list)
    # Distributed runs done for this case so far, shared by the properties run together
    # on it (autodist_verify.runner.run_properties), by what was asked of them.
    runs: dict[tuple, DistributedRun] = field(default_factory=dict)
    # Single-device oracles of the case's model, shared the same way; whoever creates
    # the context closes them.
    oracles: OraclePool = field(default_factory=OraclePool)


@dataclass
class RefusedRestore:
    """A restore the implementation was expected to refuse, attempted in a freshly
    initialized session: what it raised (None if it accepted the checkpoint), every
    variable before and after, and the stored copies after (None when the session does
    not report them)."""

    checkpoint: str
    error: BaseException | None
    before: dict[str, np.ndarray]
    after: dict[str, np.ndarray]
    copies_after: dict[str, list] | None


@dataclass
class DistributedRun:
    """What one distributed session of the implementation produced."""

    state: dict[str, np.ndarray] = field(default_factory=dict)
    restored: dict[str, np.ndarray] = field(default_factory=dict)
    copies: dict[str, list] | None = None  # after a restore, when the session reports them
    partitioned: set[str] | None = None  # variables stored in more than one part; None: not read or reported
    checkpoint: str | None = None
    refused: RefusedRestore | None = None  # the restore attempted first (``refuse_first``)


def _partitioned(copies: Mapping[str, list]) -> set[str]:
    """The variables stored in two or more parts: their copies sit at different indices
    of the full variable (mirrors of one part share an index)."""
    return {name for name, entries in copies.items() if len({repr(index) for index, _ in entries}) > 1}


def reported_partitions(sess: Any) -> set[str] | None:
    """The variables the session reports stored in two or more parts (``stored_copies()``),
    or None when it does not report its layout."""
    return _partitioned(sess.stored_copies()) if isinstance(sess, ReportsStoredCopies) else None


def variable_state(tf, sess) -> dict[str, np.ndarray]:
    """Every global variable of the current default graph, through ``sess``."""
    variables = tf.compat.v1.global_variables()
    return sess.run({v.op.name: v for v in variables})


@contextlib.contextmanager
def distributed_session(impl: Implementation, clusters: ClusterPool, model: Mapping[str, Any], setting: Setting,
                        sharded: bool = False, cluster: LocalCluster | None = None,
                        ) -> Iterator[tuple[Any, TrainModel, Any, Any]]:
    """``model`` built under the implementation's ``AutoDist`` in ``setting``, inside its
    scope: yields (original graph, the model's handles, the implementation's Saver with
    ``sharded``, the distributed session); the ``AutoDist`` is closed afterwards. The
    session runs on ``cluster`` if given, else on the pool's cluster for the setting."""
    import tensorflow as tf

    running = cluster if cluster is not None else clusters.get(setting.cluster)
    ad = impl.AutoDist(cluster=running, **impl.strategy_arguments(setting.strategy))
    try:
        graph = tf.Graph()
        with graph.as_default(), ad.scope():
            handles = model_graph.build(model)
            saver = impl.Saver(sharded=sharded)
            yield graph, handles, saver, ad.create_distributed_session()
    finally:
        ad.close()


def run_distributed(
    ctx: Context,
    model: Mapping[str, Any],
    setting: Setting,
    feeds: list[dict],
    *,
    restore: str | None = None,
    save_prefix: str | None = None,
    export_dir: str | None = None,
    sharded: bool = False,
    layout: bool = False,
    refuse_first: str | None = None,
) -> DistributedRun:
    """Build ``model`` under the implementation in ``setting``; restore, train, save, export.
    ``sharded`` is the implementation Saver's argument. The stored copies (and from them
    which variables are partitioned) are read after a restore, or with ``layout``.
    ``refuse_first`` is a checkpoint the implementation is expected to refuse: its
    restore is attempted first, in the fresh session, and recorded in ``refused``."""
    key = (json.dumps([model, setting.cluster, setting.strategy], sort_keys=True), _digest(feeds),
           restore, save_prefix, export_dir, sharded, layout)
    done = ctx.runs.get(key)
    # A run that attempted a refused restore first also answers a request without one:
    # that restore must have left the session as it was, which the refusal's own check proves.
    if done is not None and (refuse_first is None or (done.refused and done.refused.checkpoint == refuse_first)):
        return done
    run = _run_distributed(ctx, model, setting, feeds, restore=restore, save_prefix=save_prefix,
                           export_dir=export_dir, sharded=sharded, layout=layout, refuse_first=refuse_first)
    ctx.runs[key] = run
    return run


def _digest(feeds: list[dict]) -> str:
    """A digest of a list of name-keyed feeds (their names, dtypes, shapes and bytes)."""
    digest = hashlib.sha1()
    for feed in feeds:
        for name in sorted(feed):
            value = np.ascontiguousarray(feed[name])
            digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
            digest.update(value.tobytes())
    return digest.hexdigest()


def _run_distributed(ctx: Context, model: Mapping[str, Any], setting: Setting, feeds: list[dict], *,
                     restore: str | None, save_prefix: str | None, export_dir: str | None, sharded: bool,
                     layout: bool, refuse_first: str | None) -> DistributedRun:
    import tensorflow as tf

    run = DistributedRun()
    with distributed_session(ctx.impl, ctx.clusters, model, setting, sharded) as (graph, handles, saver, sess):
        if refuse_first:
            run.refused = _attempt_restore(tf, sess, saver, refuse_first)
        if restore:
            try:
                saver.restore(sess, restore)
            except (tf.errors.OpError, ValueError) as error:
                raise PropertyFailure(
                    f"restore into {setting.label} failed: {type(error).__name__}: {first_line(error)}"
                ) from error
            run.restored = variable_state(tf, sess)
        if (restore or layout) and isinstance(sess, ReportsStoredCopies):  # optional part of the interface
            copies = sess.stored_copies()
            run.partitioned = _partitioned(copies)
            if restore:
                run.copies = copies
        for feed in feeds:
            sess.run(handles.train_op, model_graph.feed_dict(graph, feed))
        run.state = variable_state(tf, sess)
        if save_prefix:
            run.checkpoint = saver.save(sess, save_prefix, global_step=len(feeds))
        if export_dir:
            _export(ctx, graph, handles, sess, saver, export_dir)
    return run


def _attempt_restore(tf, sess, saver, checkpoint: str) -> RefusedRestore:
    """Restore ``checkpoint`` into ``sess``, recording the error instead of raising it."""
    before = variable_state(tf, sess)
    error: BaseException | None = None
    try:
        saver.restore(sess, checkpoint)
    except (tf.errors.OpError, ValueError) as raised:
        error = raised
    copies = sess.stored_copies() if isinstance(sess, ReportsStoredCopies) else None
    return RefusedRestore(checkpoint, error, before, variable_state(tf, sess), copies)


def copy_problems(where: str, copies: Mapping[str, list] | None, expected: Mapping[str, np.ndarray]) -> list[str]:
    """Every stored copy (``DistributedRun.copies``) that does not hold exactly its slice
    of ``expected``, as messages prefixed with ``where``."""
    problems = []
    for name, entries in (copies or {}).items():
        for number, (index, value) in enumerate(entries):
            want = np.asarray(expected[name])[index] if index else np.asarray(expected[name])
            if np.ascontiguousarray(value).tobytes() != np.ascontiguousarray(want).tobytes():
                problems.append(f"{where}: stored copy {number} of {name!r} (at {index}) "
                                "does not hold the checkpoint's bytes")
    return problems


def checkpoint_plan(impl: Implementation, clusters: ClusterPool, model: Mapping[str, Any], setting: Setting,
                    sharded: bool = False) -> list[dict[str, Any]] | None:
    """The plan the implementation's Saver would save ``model`` by in ``setting`` (its
    optional ``checkpoint_plan``), or None when it does not report one."""
    with distributed_session(impl, clusters, model, setting, sharded) as (_, _, saver, sess):
        return saver.checkpoint_plan(sess) if isinstance(saver, ReportsCheckpointPlan) else None


def _export(ctx: Context, graph, handles, sess, saver, export_dir: str) -> None:
    """Export with the implementation's builder. The suite does not put the train op in
    ``saved_model_train_op`` itself: recording it is the builder's job (autodist_verify.interface)."""
    import tensorflow as tf

    inputs = {name: graph.get_tensor_by_name(f"{name}:0") for name in ("x", "ids") if _has(graph, name)}
    signature = tf.compat.v1.saved_model.signature_def_utils.predict_signature_def(
        inputs=inputs, outputs={"prediction": graph.get_tensor_by_name("prediction:0")})
    builder = ctx.impl.SavedModelBuilder(export_dir)
    builder.add_meta_graph_and_variables(
        sess=sess, tags=[SAVED_MODEL_TAG], saver=saver, signature_def_map={SIGNATURE: signature})
    builder.save()


def impl_prefix(ctx: Context) -> str:
    """Where the implementation's checkpoint of a property goes. The directory must
    exist: TensorFlow's sharded Saver, unlike the unsharded one, does not create it."""
    directory = ctx.workdir / "impl"
    directory.mkdir(parents=True, exist_ok=True)
    return str(directory / "model")


def _has(graph, name: str) -> bool:
    try:
        graph.get_tensor_by_name(f"{name}:0")
        return True
    except KeyError:
        return False


def first_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def plain_tf_finetune(witness: Witness, model: Mapping[str, Any], checkpoint: str, feeds: list[dict],
                      workdir: Path) -> dict:
    """Restore and train with plain TensorFlow in the witness process."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, feeds_path, out = workdir / "model.json", workdir / "feeds.npz", workdir / "result.npz"
    spec_path.write_text(json.dumps(model, sort_keys=True))
    save_steps(feeds_path, feeds)
    witness_job(witness, "checkpoint", model_spec=spec_path, checkpoint=checkpoint, feeds=feeds_path, out=out)
    return load_result(out)


def witness_job(witness: Witness, job: str, **options: Any) -> None:
    """Run a witness job; its failure (a checkpoint or export plain TensorFlow cannot
    use) is the property's failure."""
    try:
        witness.run(job, **options)
    except WitnessError as error:
        raise PropertyFailure(str(error)) from error

