"""Plain TensorFlow on one device, in a fresh process: the independent witness.

Restores a checkpoint into the original graph with ``tf.compat.v1.train.Saver`` (or
loads a SavedModel with ``tf.compat.v1.saved_model.loader.load``), records what it got,
trains more steps, and writes every variable to an ``.npz`` file. It never imports an
implementation under test, and fails if one was imported anyway.

    python -m autodist_verify.plain_tf checkpoint --model tests.models:dense_embedding_model \\
        --checkpoint ckpt/model-3 --feeds feeds.npz --out result.npz
    python -m autodist_verify.plain_tf savedmodel --export-dir export --tag train \\
        --signature serving --inputs inputs.npz --feeds feeds.npz --out result.npz

Feeds files hold one entry per step and placeholder, named ``STEP/NAME`` (``0/x``).
The result holds ``restored/VAR`` (right after restoring), ``final/VAR`` (after the
steps) and, for a SavedModel, ``outputs/KEY`` (the signature's outputs on ``--inputs``).
"""

from __future__ import annotations

from cluster_sim.determinism import apply_environment

apply_environment()  # before TensorFlow is imported

import importlib  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from collections import defaultdict  # noqa: E402

import click  # noqa: E402
import numpy as np  # noqa: E402

FORBIDDEN_MODULE = "saver_impl"


def load_steps(path: str) -> list[dict[str, np.ndarray]]:
    """The per-step feeds of a feeds file, in step order."""
    steps: dict[int, dict[str, np.ndarray]] = defaultdict(dict)
    with np.load(path) as data:
        for key in data.files:
            step, _, name = key.partition("/")
            steps[int(step)][name] = data[key]
    return [steps[i] for i in sorted(steps)]


def save_steps(path: str, steps: list[dict[str, np.ndarray]]) -> None:
    """Write per-step feeds in the format :func:`load_steps` reads."""
    np.savez(path, **{f"{i}/{name}": value for i, feed in enumerate(steps) for name, value in feed.items()})


def load_result(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """A result file as {section: {name: value}} (sections restored, final, outputs)."""
    result: dict[str, dict[str, np.ndarray]] = {"restored": {}, "final": {}, "outputs": {}}
    with np.load(path) as data:
        for key in data.files:
            section, _, name = key.partition("/")
            result.setdefault(section, {})[name] = data[key]
    return result


def _feed(graph, feed: dict[str, np.ndarray]) -> dict:
    return {graph.get_tensor_by_name(f"{name}:0"): value for name, value in feed.items()}


def _state(tf, sess) -> dict[str, np.ndarray]:
    variables = tf.compat.v1.global_variables()
    return {v.op.name: value for v, value in zip(variables, sess.run(variables))}


def _check_independence() -> None:
    leaked = sorted(m for m in sys.modules if m == FORBIDDEN_MODULE or m.startswith(FORBIDDEN_MODULE + "."))
    if leaked:
        raise SystemExit(f"plain TensorFlow run imported the implementation: {leaked}")


@click.group()
def main() -> None:
    """Restore and fine-tune with plain TensorFlow (no implementation under test)."""


def _model_builder(model: str | None, model_spec_path: str | None):
    """The function that builds the original graph: MODULE:FUNCTION or a model spec file."""
    if (model is None) == (model_spec_path is None):
        raise click.UsageError("give exactly one of --model and --model-spec")
    if model_spec_path is not None:
        import json

        from autodist_verify import model_spec

        spec = json.loads(open(model_spec_path).read())
        return lambda: model_spec.build(spec)
    module_name, _, function = model.partition(":")
    return getattr(importlib.import_module(module_name), function)


@main.command()
@click.option("--model", help="MODULE:FUNCTION building the original graph")
@click.option("--model-spec", "model_spec_path", help="JSON model spec (autodist_verify.model_spec) instead")
@click.option("--checkpoint", required=True, help="checkpoint prefix to restore")
@click.option("--feeds", "feeds_path", required=True, help="feeds file (.npz) of the steps to train")
@click.option("--out", required=True, help="result file (.npz)")
def checkpoint(model: str | None, model_spec_path: str | None, checkpoint: str, feeds_path: str, out: str) -> None:
    """Restore CHECKPOINT into the original graph, then train the given steps."""
    import tensorflow as tf

    build = _model_builder(model, model_spec_path)
    graph = tf.Graph()
    with graph.as_default():
        handles = build()
        saver = tf.compat.v1.train.Saver()
        from cluster_sim.determinism import session_config

        with tf.compat.v1.Session(config=session_config()) as sess:
            saver.restore(sess, checkpoint)
            restored = _state(tf, sess)
            for feed in load_steps(feeds_path):
                sess.run(handles.train_op, _feed(graph, feed))
            final = _state(tf, sess)
    _check_independence()
    np.savez(out, **{f"restored/{k}": v for k, v in restored.items()}, **{f"final/{k}": v for k, v in final.items()})


@main.command()
@click.option("--export-dir", required=True, help="SavedModel directory")
@click.option("--tag", required=True, help="MetaGraph tag to load")
@click.option("--signature", required=True, help="signature to run on --inputs")
@click.option("--inputs", "inputs_path", required=True, help="signature inputs (.npz, by input key)")
@click.option("--feeds", "feeds_path", required=True, help="feeds file (.npz) of the steps to train")
@click.option("--out", required=True, help="result file (.npz)")
def savedmodel(export_dir: str, tag: str, signature: str, inputs_path: str, feeds_path: str, out: str) -> None:
    """Load a SavedModel, run a signature, then train with its train op."""
    import tensorflow as tf
    from tensorflow.python.saved_model import constants

    from cluster_sim.determinism import session_config

    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(config=session_config()) as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, [tag], export_dir)
        restored = _state(tf, sess)
        sig = meta.signature_def[signature]
        with np.load(inputs_path) as data:
            feed = {graph.get_tensor_by_name(sig.inputs[k].name): data[k] for k in data.files}
        keys = sorted(sig.outputs)
        outputs = sess.run([graph.get_tensor_by_name(sig.outputs[k].name) for k in keys], feed)
        train_ops = tf.compat.v1.get_collection(constants.TRAIN_OP_KEY)
        if len(train_ops) != 1:
            raise SystemExit(f"expected one train op in {constants.TRAIN_OP_KEY}, found {len(train_ops)}")
        for step_feed in load_steps(feeds_path):
            sess.run(train_ops[0], _feed(graph, step_feed))
        final = _state(tf, sess)
    _check_independence()
    np.savez(
        out,
        **{f"restored/{k}": v for k, v in restored.items()},
        **{f"final/{k}": v for k, v in final.items()},
        **{f"outputs/{k}": v for k, v in zip(keys, outputs)},
    )


if __name__ == "__main__":
    main()
