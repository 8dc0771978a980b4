"""Plain TensorFlow on one device, in a process of its own: the independent witness.

Restores a checkpoint into the original graph with ``tf.compat.v1.train.Saver`` (or
loads a SavedModel with ``tf.compat.v1.saved_model.loader.load``), records what it got,
trains more steps, and writes every variable to a result file
(:mod:`autodist_verify.witness_files`). It never imports the implementation under test
(``--forbid MODULE``), and fails a job if that module was imported anyway.

    python -m autodist_verify.plain_tf --forbid saver_impl checkpoint \\
        --model-spec model.json --checkpoint ckpt/model-3 --feeds feeds.npz --out result.npz
    python -m autodist_verify.plain_tf --forbid saver_impl restore \\
        --checkpoint ckpt/model-3 --out result.npz
    python -m autodist_verify.plain_tf --forbid saver_impl savedmodel --export-dir export \\
        --tag train --signature serving --inputs inputs.npz --feeds feeds.npz --out result.npz
    python -m autodist_verify.plain_tf --forbid saver_impl signature --export-dir export \\
        --tag train --signature serving --inputs inputs.npz --out result.npz
    python -m autodist_verify.plain_tf --forbid saver_impl worker

``checkpoint`` and ``savedmodel`` run under the suite's determinism settings
(:mod:`cluster_sim.determinism`), like the oracle. ``signature`` instead runs a signature
exactly as ``saved_model_cli run`` does, in a session with TensorFlow's default
configuration: it is the like-for-like witness for that tool, whose results depend on
the CPU's kernels and thread pool and so can differ from the determinism settings' by
an ULP.

``worker`` serves the same jobs one after another, one JSON request per line on stdin
and one JSON answer per line on stdout (see :mod:`autodist_verify.witness`), so a
test session pays TensorFlow's import once instead of once per case. Every job builds
a new graph and a new session (a session's variables live in its own resource
manager), so no state passes from one job to the next.
"""

from __future__ import annotations

from cluster_sim.determinism import apply_environment

apply_environment()  # before TensorFlow is imported

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402
import numpy as np  # noqa: E402

from autodist_verify.witness_files import load_arrays, load_steps, save_result  # noqa: E402


class ForbiddenImport(RuntimeError):
    """The witness found the implementation under test among its imported modules."""


def check_independence(forbidden: tuple[str, ...]) -> None:
    """Raise :class:`ForbiddenImport` if any module in ``forbidden`` (or below it) was imported."""
    leaked = sorted(m for m in sys.modules for f in forbidden if m == f or m.startswith(f + "."))
    if leaked:
        raise ForbiddenImport(f"plain TensorFlow run imported the implementation under test: {leaked}")


def _state(tf, sess) -> dict[str, np.ndarray]:
    variables = tf.compat.v1.global_variables()
    return {v.op.name: value for v, value in zip(variables, sess.run(variables))}


# -- the jobs -----------------------------------------------------------------------


def restore_and_train(model_spec: str, checkpoint: str, feeds: str, out: str) -> None:
    """Build the original graph of the model spec file ``model_spec``, restore
    ``checkpoint`` into it, then train the steps of ``feeds``."""
    import tensorflow as tf

    from autodist_verify import model_graph
    from cluster_sim.determinism import session_config

    with open(model_spec) as file:
        spec = json.load(file)
    graph = tf.Graph()
    with graph.as_default():
        handles = model_graph.build(spec)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(config=session_config()) as sess:
            saver.restore(sess, checkpoint)
            restored = _state(tf, sess)
            for feed in load_steps(feeds):
                sess.run(handles.train_op, model_graph.feed_dict(graph, feed))
            final = _state(tf, sess)
    save_result(out, restored=restored, final=final)


def restore_from_meta(checkpoint: str, out: str) -> None:
    """Import the MetaGraph written beside ``checkpoint`` (the original graph, whatever
    built it: Keras layers, tf.data input), restore the checkpoint into it with
    ``tf.compat.v1.train.Saver``, and record every variable."""
    import tensorflow as tf

    from cluster_sim.determinism import session_config

    graph = tf.Graph()
    with graph.as_default():
        saver = tf.compat.v1.train.import_meta_graph(checkpoint + ".meta")
        with tf.compat.v1.Session(config=session_config()) as sess:
            saver.restore(sess, checkpoint)
            restored = _state(tf, sess)
    save_result(out, restored=restored)


def load_and_train(export_dir: str, tag: str, signature: str, inputs: str, feeds: str, out: str) -> None:
    """Load a SavedModel, run a signature on ``inputs``, then train with its train op."""
    import tensorflow as tf
    from tensorflow.python.saved_model import constants

    from autodist_verify import model_graph
    from cluster_sim.determinism import session_config

    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(config=session_config()) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, [tag], export_dir)
        restored = _state(tf, sess)
        sig = meta.signature_def[signature]
        feed = {graph.get_tensor_by_name(sig.inputs[k].name): value for k, value in load_arrays(inputs).items()}
        keys = sorted(sig.outputs)
        outputs = sess.run([graph.get_tensor_by_name(sig.outputs[k].name) for k in keys], feed)
        train_ops = tf.compat.v1.get_collection(constants.TRAIN_OP_KEY)
        if len(train_ops) != 1:
            raise ValueError(f"expected one train op in {constants.TRAIN_OP_KEY}, found {len(train_ops)}")
        for step_feed in load_steps(feeds):
            sess.run(train_ops[0], model_graph.feed_dict(graph, step_feed))
        final = _state(tf, sess)
    save_result(out, restored=restored, final=final, outputs=dict(zip(keys, outputs)))


def run_signature(export_dir: str, tag: str, signature: str, inputs: str, out: str) -> None:
    """Run a signature as ``saved_model_cli run`` does: a session with TensorFlow's
    default configuration, the loader, one run of the signature's sorted outputs."""
    import tensorflow as tf

    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, [tag], export_dir)
        sig = meta.signature_def[signature]
        feed = {sig.inputs[k].name: value for k, value in load_arrays(inputs).items()}
        keys = sorted(sig.outputs)
        outputs = sess.run([sig.outputs[k].name for k in keys], feed)
    save_result(out, outputs=dict(zip(keys, outputs)))


JOBS: dict[str, Callable[..., None]] = {
    "checkpoint": restore_and_train,
    "restore": restore_from_meta,
    "savedmodel": load_and_train,
    "signature": run_signature,
}


# -- the command line -----------------------------------------------------------------


@click.group()
@click.option("--forbid", "forbidden", multiple=True, required=True, metavar="MODULE",
              help="The implementation under test: a job fails if this module was imported (repeatable).")
@click.pass_context
def main(ctx: click.Context, forbidden: tuple[str, ...]) -> None:
    """Restore, load and fine-tune with plain TensorFlow (never the implementation under test)."""
    ctx.obj = forbidden


def _run_job(ctx: click.Context, job: str, **options: Any) -> None:
    JOBS[job](**options)
    try:
        check_independence(ctx.obj)
    except ForbiddenImport as error:
        raise SystemExit(str(error)) from error


@main.command()
@click.option("--model-spec", required=True, help="JSON model spec (autodist_verify.model_spec) of the original graph")
@click.option("--checkpoint", required=True, help="checkpoint prefix to restore")
@click.option("--feeds", required=True, help="feeds file (.npz) of the steps to train")
@click.option("--out", required=True, help="result file (.npz)")
@click.pass_context
def checkpoint(ctx: click.Context, **options: Any) -> None:
    """Restore CHECKPOINT into the original graph, then train the given steps."""
    _run_job(ctx, "checkpoint", **options)


@main.command()
@click.option("--checkpoint", required=True, help="checkpoint prefix to restore (its .meta is the graph)")
@click.option("--out", required=True, help="result file (.npz): restored/NAME")
@click.pass_context
def restore(ctx: click.Context, **options: Any) -> None:
    """Import CHECKPOINT.meta, restore CHECKPOINT into it, record every variable."""
    _run_job(ctx, "restore", **options)


def _signature_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that name a SavedModel's signature and its inputs."""
    for option in reversed([
        click.option("--export-dir", required=True, help="SavedModel directory"),
        click.option("--tag", required=True, help="MetaGraph tag to load"),
        click.option("--signature", required=True, help="signature to run on --inputs"),
        click.option("--inputs", required=True, help="signature inputs (.npz, by input key)"),
    ]):
        command = option(command)
    return command


@main.command()
@_signature_options
@click.option("--feeds", required=True, help="feeds file (.npz) of the steps to train")
@click.option("--out", required=True, help="result file (.npz)")
@click.pass_context
def savedmodel(ctx: click.Context, **options: Any) -> None:
    """Load a SavedModel, run a signature, then train with its train op."""
    _run_job(ctx, "savedmodel", **options)


@main.command()
@_signature_options
@click.option("--out", required=True, help="result file (.npz): outputs/KEY")
@click.pass_context
def signature(ctx: click.Context, **options: Any) -> None:
    """Run a signature as `saved_model_cli run` does (TensorFlow's default session settings)."""
    _run_job(ctx, "signature", **options)


@main.command()
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Serve jobs from stdin, one JSON object per line: {"job": NAME, "options": {...}}.

    Answers one JSON line each on stdout: {"ok": true} or {"ok": false, "error": TEXT}.
    Everything else this process prints goes to stderr.
    """
    import tensorflow  # noqa: F401 - paid once, before the first job

    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt answers
    sys.stdout = sys.stderr
    check_independence(ctx.obj)
    answers.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            JOBS[request["job"]](**request.get("options", {}))
            check_independence(ctx.obj)
            answer: dict[str, Any] = {"ok": True}
        except Exception:  # the job failed: report it, stay up for the next one
            answer = {"ok": False, "error": traceback.format_exc(limit=8)}
        answers.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
