"""The conformance properties, as plain functions of a case.

Each property runs one :class:`~autodist_verify.case.Case` against an implementation
and raises :class:`PropertyFailure` with every problem it found, or
:class:`NotApplicable` when the property cannot hold for that case (the reason is
reported, never counted as a pass). ``property_tests/`` runs them over Hypothesis-
generated cases; ``autodist-verify replay`` runs them on one case from a file.

Values are compared as raw bytes (:mod:`autodist_verify.compare`). The expected values
come from the single-device oracle and from TensorFlow's own Saver and loaders.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autodist_verify import checkpoints, model_spec
from autodist_verify.case import Case, Setting
from autodist_verify.clusters import ClusterPool
from autodist_verify.implementation import Implementation
from autodist_verify.oracle import Oracle
from autodist_verify.witness import Witness, WitnessError
from autodist_verify.witness_files import load_result, save_steps

SAVED_MODEL_TAG = "train"
SIGNATURE = "predict"


class PropertyFailure(AssertionError):
    """A property does not hold; the message lists every problem."""


class NotApplicable(Exception):
    """The property cannot hold for this case, for a reason outside the implementation."""


@dataclass
class Context:
    """What a property needs besides the case."""

    impl: Implementation
    clusters: ClusterPool
    witness: Witness  # plain TensorFlow in a process that never imports ``impl``
    workdir: Path


@dataclass
class DistributedRun:
    """What one distributed session of the implementation produced."""

    state: dict[str, np.ndarray] = field(default_factory=dict)
    restored: dict[str, np.ndarray] = field(default_factory=dict)
    copies: dict[str, list] | None = None  # after a restore, when the session reports them
    partitioned: set[str] | None = None  # variables stored in more than one part; None: not reported
    checkpoint: str | None = None


def _partitioned(copies: Mapping[str, list]) -> set[str]:
    """The variables stored in two or more parts: their copies sit at different indices
    of the full variable (mirrors of one part share an index)."""
    return {name for name, entries in copies.items() if len({repr(index) for index, _ in entries}) > 1}


def _applicable(case: Case, setting: Setting, run: DistributedRun) -> None:
    """Raise NotApplicable if the layout the implementation built rules the case out."""
    reason = case.not_applicable(setting, run.partitioned)
    if reason:
        raise NotApplicable(reason)


def _variable_state(tf, sess) -> dict[str, np.ndarray]:
    variables = tf.compat.v1.global_variables()
    return sess.run({v.op.name: v for v in variables})


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
) -> DistributedRun:
    """Build ``model`` under the implementation in ``setting``; restore, train, save, export.
    ``sharded`` is the implementation Saver's argument."""
    import tensorflow as tf

    cluster = ctx.clusters.get(setting.cluster)
    ad = ctx.impl.AutoDist(cluster=cluster, **ctx.impl.strategy_arguments(setting.strategy))
    run = DistributedRun()
    try:
        graph = tf.Graph()
        with graph.as_default(), ad.scope():
            handles = model_spec.build(model)
            saver = ctx.impl.Saver(sharded=sharded)
            sess = ad.create_distributed_session()
            if restore:
                try:
                    saver.restore(sess, restore)
                except (tf.errors.OpError, ValueError) as error:
                    raise PropertyFailure(
                        f"restore into {setting.label} failed: {type(error).__name__}: {_first_line(error)}"
                    ) from error
                run.restored = _variable_state(tf, sess)
            if hasattr(sess, "stored_copies"):  # optional part of the interface
                copies = sess.stored_copies()
                run.partitioned = _partitioned(copies)
                if restore:
                    run.copies = copies
            for feed in feeds:
                sess.run(handles.train_op, model_spec.feed_dict(graph, feed))
            run.state = _variable_state(tf, sess)
            if save_prefix:
                run.checkpoint = saver.save(sess, save_prefix, global_step=len(feeds))
            if export_dir:
                _export(ctx, graph, handles, sess, saver, export_dir)
    finally:
        ad.close()
    return run


def _export(ctx: Context, graph, handles, sess, saver, export_dir: str) -> None:
    """Export with the implementation's builder. The suite does not put the train op in
    ``saved_model_train_op`` itself: recording it is the builder's job (DESIGN.md)."""
    import tensorflow as tf

    inputs = {name: graph.get_tensor_by_name(f"{name}:0") for name in ("x", "ids") if _has(graph, name)}
    signature = tf.compat.v1.saved_model.signature_def_utils.predict_signature_def(
        inputs=inputs, outputs={"prediction": graph.get_tensor_by_name("prediction:0")})
    builder = ctx.impl.SavedModelBuilder(export_dir)
    builder.add_meta_graph_and_variables(
        sess=sess, tags=[SAVED_MODEL_TAG], saver=saver, signature_def_map={SIGNATURE: signature})
    builder.save()


def _impl_prefix(ctx: Context) -> str:
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


def oracle_state(model: Mapping[str, Any], phases: list[tuple[int, list[dict]]],
                 save_prefix: str | None = None) -> dict[str, np.ndarray]:
    """The oracle's variables after training ``phases`` of (replicas, feeds)."""
    with Oracle(lambda: model_spec.build(model)) as oracle:
        for replicas, feeds in phases:
            for feed in feeds:
                oracle.step(feed, replicas=replicas)
        if save_prefix:
            oracle.save(save_prefix)
        return oracle.variables()


def _problems(where: str, expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> list[str]:
    problems = [f"{where}: variable {name!r} is missing" for name in sorted(set(expected) - set(actual))]
    return problems + [f"{where}: {p}" for p in checkpoints.value_problems(dict(expected), dict(actual))]


def _copy_problems(where: str, copies: Mapping[str, list] | None, expected: Mapping[str, np.ndarray]) -> list[str]:
    problems = []
    for name, entries in (copies or {}).items():
        for number, (index, value) in enumerate(entries):
            want = np.asarray(expected[name])[index] if index else np.asarray(expected[name])
            if np.ascontiguousarray(value).tobytes() != np.ascontiguousarray(want).tobytes():
                problems.append(f"{where}: stored copy {number} of {name!r} (at {index}) "
                                "does not hold the checkpoint's bytes")
    return problems


MAX_REPORTED_PROBLEMS = 40


def _fail_if(problems: list[str]) -> None:
    if problems:
        shown = problems[:MAX_REPORTED_PROBLEMS]
        more = len(problems) - len(shown)
        raise PropertyFailure("\n".join(shown) + (f"\n... and {more} more" if more else ""))


def _first_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


# -- 1. save fidelity --------------------------------------------------------------


def save_fidelity(ctx: Context, case: Case) -> None:
    """The checkpoint holds TensorFlow's keys/shapes/dtypes and the oracle's values after k steps."""
    before, _ = case.feeds()
    run = run_distributed(ctx, case.model, case.source, before, save_prefix=_impl_prefix(ctx),
                          sharded=case.sharded)
    _applicable(case, case.source, run)
    expected_prefix = str(ctx.workdir / "oracle" / "model")
    expected = oracle_state(case.model, [(case.source.replicas, before)], save_prefix=expected_prefix)
    problems = [f"layout: {p}" for p in checkpoints.layout_problems(
        checkpoints.contents(expected_prefix), checkpoints.contents(run.checkpoint))]
    problems += [f"values after {case.k} steps: {p}" for p in
                 checkpoints.value_problems(expected, checkpoints.values(run.checkpoint))]
    problems += _state_file_problems(run.checkpoint)
    problems += _meta_file_problems(case.model, run.checkpoint)
    _fail_if(problems)


def _state_file_problems(checkpoint: str) -> list[str]:
    """The directory's checkpoint state file names the checkpoint save() returned."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(Path(checkpoint).parent))
    if latest != checkpoint:
        return [f"checkpoint state file: tf.train.latest_checkpoint gives {latest!r}, "
                f"not the path save() returned ({checkpoint!r})"]
    return []


def _meta_file_problems(model: Mapping[str, Any], checkpoint: str) -> list[str]:
    """The MetaGraph that save() writes beside the checkpoint is the original graph."""
    from tensorflow.core.protobuf import meta_graph_pb2

    path = Path(f"{checkpoint}.meta")
    if not path.exists():
        return [f".meta: save() wrote no MetaGraph at {path} (write_meta_graph defaults to True)"]
    meta = meta_graph_pb2.MetaGraphDef()
    meta.ParseFromString(path.read_bytes())
    return [f".meta: {p}" for p in checkpoints.distribution_artifacts(meta.graph_def, _original_graph_def(model))]


# -- 2. restore fidelity -----------------------------------------------------------


def restore_fidelity(ctx: Context, case: Case) -> None:
    """Restoring the implementation's checkpoint gives its bytes: in plain TensorFlow,
    in the same setting and in the target setting, in every part and mirror."""
    import tensorflow as tf
    before, _ = case.feeds()
    run = run_distributed(ctx, case.model, case.source, before, save_prefix=_impl_prefix(ctx),
                          sharded=case.sharded)
    saved = checkpoints.values(run.checkpoint)
    with Oracle(lambda: model_spec.build(case.model)) as plain:
        try:
            plain.restore(run.checkpoint)
        except (tf.errors.OpError, ValueError) as error:
            raise PropertyFailure(
                f"(a) plain TensorFlow's Saver cannot restore the checkpoint: {_first_line(error)}") from error
        problems = _problems("(a) plain TensorFlow", saved, plain.variables())
    for label, setting in (("(b) same setting", case.source), ("(c) target setting", case.target)):
        restored = run_distributed(ctx, case.model, setting, [], restore=run.checkpoint, sharded=case.sharded)
        problems += _problems(f"{label} {setting.label}", saved, restored.restored)
        problems += _copy_problems(f"{label} {setting.label}", restored.copies, saved)
    _fail_if(problems)


# -- 3. fine-tune ------------------------------------------------------------------


def fine_tune(ctx: Context, case: Case) -> None:
    """k distributed steps, save, restore (plain TF / same / target setting), m steps ==
    the oracle's k + m steps with the matching replica counts."""
    before, after = case.feeds()
    first = run_distributed(ctx, case.model, case.source, before, save_prefix=_impl_prefix(ctx),
                            sharded=case.sharded)
    _applicable(case, case.source, first)
    expected = oracle_continuations(case.model, (case.source.replicas, before), after,
                                    {1, case.source.replicas, case.target.replicas})
    problems = []
    plain = plain_tf_finetune(ctx.witness, case.model, first.checkpoint, after, ctx.workdir / "plain_tf")
    problems += _problems("(a) plain TensorFlow in a process without the implementation", expected[1],
                          plain["final"])
    for label, setting in (("(b) same setting", case.source), ("(c) target setting", case.target)):
        resumed = run_distributed(ctx, case.model, setting, after, restore=first.checkpoint, sharded=case.sharded)
        reason = case.not_applicable(setting, resumed.partitioned)
        if reason:  # what was found in the other settings still counts
            _fail_if(problems)
            raise NotApplicable(reason)
        problems += _problems(f"{label} {setting.label}", expected[setting.replicas], resumed.state)
    _fail_if(problems)


def oracle_continuations(model: Mapping[str, Any], first: tuple[int, list[dict]], then: list[dict],
                         replica_counts: set[int]) -> dict[int, dict[str, np.ndarray]]:
    """The oracle's variables after the ``first`` phase (replicas, feeds), then ``then``
    with each of ``replica_counts``: the first phase is trained once and its exact state
    reloaded before each continuation."""
    replicas, feeds = first
    with Oracle(lambda: model_spec.build(model)) as oracle:
        for feed in feeds:
            oracle.step(feed, replicas=replicas)
        saved = oracle.variables()
        result = {}
        for count in sorted(replica_counts):
            oracle.load(saved)
            for feed in then:
                oracle.step(feed, replicas=count)
            result[count] = oracle.variables()
        return result


def plain_tf_finetune(witness: Witness, model: Mapping[str, Any], checkpoint: str, feeds: list[dict],
                      workdir: Path) -> dict:
    """Restore and train with plain TensorFlow in the witness process."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, feeds_path, out = workdir / "model.json", workdir / "feeds.npz", workdir / "result.npz"
    spec_path.write_text(_json(model))
    save_steps(feeds_path, feeds)
    _witness(witness, "checkpoint", model_spec=spec_path, checkpoint=checkpoint, feeds=feeds_path, out=out)
    return load_result(out)


# -- 4. SavedModel -----------------------------------------------------------------


def saved_model(ctx: Context, case: Case) -> None:
    """The export loads in a process without the implementation; its variables,
    signature and train op match the oracle; the MetaGraph has no distribution artifacts."""
    before, after = case.feeds()
    export_dir = ctx.workdir / "export"
    run = run_distributed(ctx, case.model, case.source, before, export_dir=str(export_dir), sharded=case.sharded)
    _applicable(case, case.source, run)
    inputs = {k: v for k, v in model_spec.feeds(case.model, 1, case.batch, case.data_seed + 1)[0].items() if k != "y"}
    workdir = ctx.workdir / "plain_tf_saved_model"
    workdir.mkdir(parents=True, exist_ok=True)
    inputs_path, feeds_path, out = workdir / "inputs.npz", workdir / "feeds.npz", workdir / "result.npz"
    np.savez(inputs_path, **inputs)
    save_steps(feeds_path, after)
    problems = [f"MetaGraph: {p}" for p in _artifacts(case.model, export_dir)]
    try:
        _witness(ctx.witness, "savedmodel", export_dir=export_dir, tag=SAVED_MODEL_TAG, signature=SIGNATURE,
                 inputs=inputs_path, feeds=feeds_path, out=out)
    except PropertyFailure as failure:
        _fail_if([str(failure)] + problems)
    loaded = load_result(out)
    with Oracle(lambda: model_spec.build(case.model)) as oracle:
        for feed in before:
            oracle.step(feed, replicas=case.source.replicas)
        problems += _problems("loaded variables", oracle.variables(), loaded["restored"])
        prediction = oracle.evaluate("prediction:0", inputs)
        problems += _problems("signature output", {"prediction": prediction}, loaded["outputs"])
        for feed in after:
            oracle.step(feed, replicas=1)
        problems += _problems(f"after {case.m} steps of the loaded train op", oracle.variables(), loaded["final"])
    _fail_if(problems)


def _artifacts(model: Mapping[str, Any], export_dir: Path) -> list[str]:
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    original = _original_graph_def(model)
    return [p for meta in saved.meta_graphs for p in checkpoints.distribution_artifacts(meta.graph_def, original)]


def _original_graph_def(model: Mapping[str, Any]):
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        model_spec.build(model)
    return graph.as_graph_def()


# -- 5. the Saver's TensorFlow interface ---------------------------------------------


def saver_api(ctx: Context, case: Case) -> None:
    """The implementation's Saver and ``tf.compat.v1.train.Saver``, built with the same
    options on the original graph in one plain session and each writing to its own
    directory, go through the case's Saver program (train, save with or without a step,
    restore the latest, delete the oldest): after every operation both directories hold
    the same file names and checkpoint state, saves hold the same keys and bytes, and
    restores bring back the same values."""
    import tensorflow as tf

    program = case.saver_program
    if program is None:
        raise NotApplicable("the case has no saver_program")
    dirs = {"impl": ctx.workdir / "impl", "tf": ctx.workdir / "tf"}
    for directory in dirs.values():
        directory.mkdir(parents=True, exist_ok=True)
    feeds = model_spec.feeds(case.model, max(1, len(program["operations"])), case.batch, case.data_seed)
    graph, steps = tf.Graph(), 0
    with graph.as_default():
        handles = model_spec.build(case.model)
        savers = {"impl": ctx.impl.Saver(**program["options"]), "tf": tf.compat.v1.train.Saver(**program["options"])}
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            for number, (name, *arguments) in enumerate(program["operations"]):
                where = f"operation {number} {[name, *arguments]}"
                if name == "train":
                    sess.run(handles.train_op, model_spec.feed_dict(graph, feeds[steps % len(feeds)]))
                    steps += 1
                elif name == "save":
                    step = steps if arguments[0] else None
                    paths = {k: s.save(sess, str(dirs[k] / "model"), global_step=step) for k, s in savers.items()}
                    if Path(paths["impl"]).name != Path(paths["tf"]).name:
                        raise PropertyFailure(f"{where}: save returned {paths['impl']!r}, TensorFlow {paths['tf']!r}")
                    _fail_if([f"{where}: {p}" for p in checkpoints.diff(paths["tf"], paths["impl"])])
                elif name == "restore_latest":
                    _fail_if(_restore_latest_problems(where, tf, sess, savers, dirs))
                elif name == "delete_oldest":
                    for directory in dirs.values():
                        retained = _checkpoint_state(tf, directory)[1]
                        if retained:
                            tf.compat.v1.train.remove_checkpoint(str(directory / retained[0]))
                _fail_if(_directory_problems(where, tf, dirs))


def _checkpoint_state(tf, directory: Path) -> tuple[str | None, list[str]]:
    """The latest and retained checkpoints of a directory's state file, as base names."""
    state = tf.train.get_checkpoint_state(str(directory))
    if state is None:
        return None, []
    return Path(state.model_checkpoint_path).name, [Path(p).name for p in state.all_model_checkpoint_paths]


def _directory_problems(where: str, tf, dirs: Mapping[str, Path]) -> list[str]:
    listings = {k: sorted(p.name for p in d.iterdir()) for k, d in dirs.items()}
    problems = []
    if listings["impl"] != listings["tf"]:
        problems.append(f"{where}: files {listings['impl']} where TensorFlow's Saver has {listings['tf']}")
    states = {k: _checkpoint_state(tf, d) for k, d in dirs.items()}
    if states["impl"] != states["tf"]:
        problems.append(f"{where}: checkpoint state (latest, retained) {states['impl']} "
                        f"where TensorFlow's Saver has {states['tf']}")
    return problems


def _restore_latest_problems(where: str, tf, sess, savers, dirs: Mapping[str, Path]) -> list[str]:
    """Restore each directory's latest checkpoint (while one is left) and compare values."""
    if tf.train.latest_checkpoint(str(dirs["tf"])) is None:
        return []
    values = {}
    for kind, saver in savers.items():
        latest = tf.train.latest_checkpoint(str(dirs[kind]))
        if latest is None:
            return [f"{where}: no latest checkpoint in the implementation's directory"]
        saver.restore(sess, latest)
        values[kind] = _variable_state(tf, sess)
    return [f"{where}: restore: {p}" for p in checkpoints.value_problems(values["tf"], values["impl"])]


# -- helpers -----------------------------------------------------------------------


def _json(data: Any) -> str:
    import json

    return json.dumps(data, sort_keys=True)


def _witness(witness: Witness, job: str, **options: Any) -> None:
    """Run a witness job; its failure (a checkpoint or export plain TensorFlow cannot
    use) is the property's failure."""
    try:
        witness.run(job, **options)
    except WitnessError as error:
        raise PropertyFailure(str(error)) from error


PROPERTIES: dict[str, Callable[[Context, Case], None]] = {
    "save_fidelity": save_fidelity,
    "restore_fidelity": restore_fidelity,
    "fine_tune": fine_tune,
    "saved_model": saved_model,
    "saver_api": saver_api,
}
