"""The conformance properties, as plain functions of a case.

Each property runs one :class:`~autodist_verify.case.Case` against an implementation
and raises :class:`~autodist_verify.outcome.PropertyFailure` with every problem it
found, or :class:`~autodist_verify.outcome.NotApplicable` when the property cannot hold
for that case (the reason is reported, never counted as a pass).
:mod:`autodist_verify.runner` runs one on one case; ``property_tests/`` over generated
cases, ``autodist-verify replay`` on a case from a file.

Values are compared as raw bytes (:mod:`autodist_verify.compare`). The expected values
come from the single-device oracle (:mod:`.expectations`) and from TensorFlow's own
Saver and loaders (:mod:`.checkpoints`, :mod:`.exports`, the witness). The
implementation is driven by :mod:`.harness`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from autodist_verify import checkpoints, model_spec
from autodist_verify.case import Case, Setting
from autodist_verify.crash_consistency import crash_consistency
from autodist_verify.expectations import oracle_continuations, oracle_state
from autodist_verify.exports import meta_file_problems, saved_model_artifacts, state_file_problems
from autodist_verify.harness import (
    SAVED_MODEL_TAG,
    SIGNATURE,
    Context,
    DistributedRun,
    RefusedRestore,
    copy_problems,
    first_line,
    impl_prefix,
    plain_tf_finetune,
    run_distributed,
    witness_job,
)
from autodist_verify.oracle import Oracle
from autodist_verify.outcome import NotApplicable, PropertyFailure, fail_if
from autodist_verify.saver_parity import saver_api
from autodist_verify.witness_files import load_result, save_arrays, save_steps

__all__ = ["PROPERTIES", "ROUND_TRIP", "Context", "NotApplicable", "PropertyFailure"]


def _applicable(case: Case, setting: Setting, run: DistributedRun) -> None:
    """Raise NotApplicable if the layout the implementation built rules the case out."""
    reason = case.not_applicable(setting, run.partitioned)
    if reason:
        raise NotApplicable(reason)


def _problems(where: str, expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> list[str]:
    problems = [f"{where}: variable {name!r} is missing" for name in sorted(set(expected) - set(actual))]
    return problems + [f"{where}: {p}" for p in checkpoints.value_problems(dict(expected), dict(actual))]


def save_fidelity(ctx: Context, case: Case) -> None:
    """The checkpoint holds TensorFlow's keys/shapes/dtypes and the oracle's values after
    k steps (for a model outside the equivalence contract: the distributed session's own
    values at the save)."""
    before, _ = case.feeds()
    run = run_distributed(ctx, case.model, case.source, before, save_prefix=impl_prefix(ctx),
                          sharded=case.sharded, layout=case.depends_on_layout)
    _applicable(case, case.source, run)
    expected_prefix = str(ctx.workdir / "oracle" / "model")
    outside = model_spec.outside_contract(case.model)
    # Outside the contract the oracle still gives the layout TensorFlow's Saver writes
    # (no step needed), and the session itself the values.
    expected = oracle_state(case.model, [] if outside else [(case.source.replicas, before)],
                            save_prefix=expected_prefix, oracles=ctx.oracles)
    if outside:
        expected = run.state
    problems = [f"layout: {p}" for p in checkpoints.layout_problems(
        checkpoints.contents(expected_prefix), checkpoints.contents(run.checkpoint))]
    source = "the session's values" if outside else "values"
    problems += [f"{source} after {case.k} steps: {p}" for p in
                 checkpoints.value_problems(expected, checkpoints.values(run.checkpoint))]
    problems += state_file_problems(run.checkpoint)
    problems += meta_file_problems(ctx.oracles.original_graph_def(case.model), run.checkpoint)
    fail_if(problems)


def restore_fidelity(ctx: Context, case: Case) -> None:
    """Restoring the implementation's checkpoint gives its bytes: in plain TensorFlow,
    in the same setting and in the target setting, in every part and mirror; and the
    checkpoint without one key is refused as TensorFlow's Saver refuses it, with every
    variable left as it was.

    The refusal (d) is attempted in the fresh sessions of (a) and (b), before their
    restore of the whole checkpoint: one session per setting, and (b) also shows that
    a refused restore leaves the session able to restore."""
    import tensorflow as tf
    before, after = case.feeds()
    run = run_distributed(ctx, case.model, case.source, before, save_prefix=impl_prefix(ctx),
                          sharded=case.sharded, layout=case.depends_on_layout)
    saved = checkpoints.values(run.checkpoint)
    incomplete = _without_dropped_key(ctx, run.checkpoint)
    with ctx.oracles.fresh(case.model) as plain:
        expected_error = _refusal(tf, plain, incomplete)
        try:
            plain.restore(run.checkpoint)
        except (tf.errors.OpError, ValueError) as error:
            raise PropertyFailure(
                f"(a) plain TensorFlow's Saver cannot restore the checkpoint: {first_line(error)}") from error
        problems = _problems("(a) plain TensorFlow", saved, plain.variables())
    refused = None
    for label, setting in (("(b) same setting", case.source), ("(c) target setting", case.target)):
        refuse_first = incomplete if expected_error and setting is case.source else None
        # It trains the m steps after, unchecked here: fine_tune, run on the same case,
        # checks them on this run (autodist_verify.runner.run_properties).
        restored = run_distributed(ctx, case.model, setting, after, restore=run.checkpoint, sharded=case.sharded,
                                   refuse_first=refuse_first)
        if refuse_first:
            refused = restored.refused
        problems += _problems(f"{label} {setting.label}", saved, restored.restored)
        problems += copy_problems(f"{label} {setting.label}", restored.copies, saved)
    if expected_error:
        problems += _refusal_problems(expected_error, refused)
    fail_if(problems)


# The key dropped from the checkpoint in restore_fidelity (d): every model spec has it.
DROPPED_KEY = "out/kernel"
REFUSAL = f"(d) a checkpoint without {DROPPED_KEY!r}"


def _without_dropped_key(ctx: Context, checkpoint: str) -> str:
    """``checkpoint`` without DROPPED_KEY, written by TensorFlow's Saver."""
    (ctx.workdir / "incomplete").mkdir(parents=True, exist_ok=True)
    return checkpoints.write_without(checkpoint, str(ctx.workdir / "incomplete" / "model"), DROPPED_KEY)


def _refusal(tf, plain: Oracle, incomplete: str) -> str | None:
    """The error class TensorFlow's Saver refuses ``incomplete`` with on the original
    graph, or None if it accepts it (then nothing holds the implementation to a refusal)."""
    try:
        plain.restore(incomplete)
    except tf.errors.OpError as error:
        return type(error).__name__
    return None


def _refusal_problems(expected_error: str, attempt: RefusedRestore | None) -> list[str]:
    """(d) The implementation refused the incomplete checkpoint as TensorFlow's Saver
    does: the same error, naming the key, and nothing written."""
    if attempt is None or attempt.error is None:
        return [f"{REFUSAL}: the restore succeeded; TensorFlow's Saver raises {expected_error}"]
    problems = []
    if type(attempt.error).__name__ != expected_error:
        problems.append(f"{REFUSAL}: raised {type(attempt.error).__name__}, TensorFlow's Saver raises {expected_error}")
    if DROPPED_KEY not in str(attempt.error):
        problems.append(f"{REFUSAL}: the error does not name the key: {first_line(attempt.error)}")
    problems += [f"{REFUSAL}, after the refused restore: {p}"
                 for p in checkpoints.value_problems(attempt.before, attempt.after)]
    # Every part and mirror must still hold its slice of the values from before.
    return problems + copy_problems(f"{REFUSAL}, after the refused restore", attempt.copies_after, attempt.before)


def fine_tune(ctx: Context, case: Case) -> None:
    """k distributed steps, save, restore (plain TF / same / target setting), m steps ==
    the oracle's k + m steps with the matching replica counts."""
    outside = model_spec.outside_contract(case.model)
    if outside:
        raise NotApplicable(f"the oracle cannot follow this model: {outside}")
    before, after = case.feeds()
    first = run_distributed(ctx, case.model, case.source, before, save_prefix=impl_prefix(ctx),
                            sharded=case.sharded, layout=case.depends_on_layout)
    _applicable(case, case.source, first)
    expected = oracle_continuations(case.model, (case.source.replicas, before), after,
                                    {1, case.source.replicas, case.target.replicas}, oracles=ctx.oracles)
    problems = []
    plain = plain_tf_finetune(ctx.witness, case.model, first.checkpoint, after, ctx.workdir / "plain_tf")
    problems += _problems("(a) plain TensorFlow in a process without the implementation", expected[1],
                          plain["final"])
    for label, setting in (("(b) same setting", case.source), ("(c) target setting", case.target)):
        resumed = run_distributed(ctx, case.model, setting, after, restore=first.checkpoint, sharded=case.sharded)
        reason = case.not_applicable(setting, resumed.partitioned)
        if reason:  # what was found in the other settings still counts
            fail_if(problems)
            raise NotApplicable(reason)
        problems += _problems(f"{label} {setting.label}", expected[setting.replicas], resumed.state)
    fail_if(problems)


def saved_model(ctx: Context, case: Case) -> None:
    """The export loads in a process without the implementation; its variables,
    signature and train op match the oracle (for a model outside the equivalence
    contract: its variables are the session's); the MetaGraph has no distribution
    artifacts."""
    before, after = case.feeds()
    export_dir = ctx.workdir / "export"
    run = run_distributed(ctx, case.model, case.source, before, export_dir=str(export_dir), sharded=case.sharded,
                          layout=case.depends_on_layout)
    _applicable(case, case.source, run)
    inputs = {k: v for k, v in model_spec.feeds(case.model, 1, case.batch, case.data_seed + 1)[0].items() if k != "y"}
    workdir = ctx.workdir / "plain_tf_saved_model"
    workdir.mkdir(parents=True, exist_ok=True)
    inputs_path, feeds_path, out = workdir / "inputs.npz", workdir / "feeds.npz", workdir / "result.npz"
    save_arrays(inputs_path, inputs)
    save_steps(feeds_path, after)
    original = ctx.oracles.original_graph_def(case.model)
    problems = [f"MetaGraph: {p}" for p in saved_model_artifacts(original, export_dir)]
    try:
        witness_job(ctx.witness, "savedmodel", export_dir=export_dir, tag=SAVED_MODEL_TAG, signature=SIGNATURE,
                 inputs=inputs_path, feeds=feeds_path, out=out)
    except PropertyFailure as failure:
        fail_if([str(failure)] + problems)
    loaded = load_result(out)
    if model_spec.outside_contract(case.model):  # no oracle: the export must hold the session's state
        fail_if(problems + _problems("loaded variables", run.state, loaded["restored"]))
        return
    with ctx.oracles.fresh(case.model) as oracle:
        for feed in before:
            oracle.step(feed, replicas=case.source.replicas)
        problems += _problems("loaded variables", oracle.variables(), loaded["restored"])
        prediction = oracle.evaluate("prediction:0", inputs)
        problems += _problems("signature output", {"prediction": prediction}, loaded["outputs"])
        for feed in after:
            oracle.step(feed, replicas=1)
        problems += _problems(f"after {case.m} steps of the loaded train op", oracle.variables(), loaded["final"])
    fail_if(problems)



PROPERTIES: dict[str, Callable[[Context, Case], None]] = {
    "save_fidelity": save_fidelity,
    "restore_fidelity": restore_fidelity,
    "fine_tune": fine_tune,
    "saved_model": saved_model,
    "saver_api": saver_api,
    "crash_consistency": crash_consistency,
}

# The properties the generated suite checks together on one case: the distributed runs
# they ask for alike (train and save; restore into the same and the target setting, then
# train on) are done once for all three (autodist_verify.runner.run_properties).
ROUND_TRIP = ["save_fidelity", "restore_fidelity", "fine_tune"]
