"""Helpers shared by the tests that train with saver_impl on a simulated cluster."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from autodist_verify.oracle import Oracle
from autodist_verify.witness import Witness
from autodist_verify.witness_files import load_result, save_steps
from cluster_sim.determinism import session_config
from saver_impl import AutoDist, Saver
from tests.models import dense_embedding_model

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_REF = "tests.models:dense_embedding_model"


@dataclass
class Run:
    """What one distributed run produced."""

    state: dict[str, np.ndarray]
    losses: list[Any]
    replicas: int
    checkpoint: str | None = None
    restored: dict[str, np.ndarray] = field(default_factory=dict)
    copies: dict[str, list[np.ndarray]] = field(default_factory=dict)


def variable_state(sess) -> dict[str, np.ndarray]:
    """Every global variable of the original graph through a (distributed) session."""
    variables = tf.compat.v1.global_variables()
    return sess.run({v.op.name: v for v in variables})


def assert_copies_hold(copies, expected: dict[str, np.ndarray]) -> None:
    """Every stored part and mirror holds exactly its slice of ``expected``."""
    for name, entries in copies.items():
        for index, value in entries:
            want = expected[name][index] if index else expected[name]
            assert value.tobytes() == np.ascontiguousarray(want).tobytes(), (
                f"a copy of {name!r} at {index} does not hold the checkpoint's bytes"
            )


def train(cluster, builder, feeds, *, save_dir=None, restore=None, optimizer="adam") -> Run:
    """Build the test model under ``builder``, optionally restore, train, optionally save."""
    with AutoDist(cluster=cluster, strategy_builder=builder) as ad:
        with tf.Graph().as_default(), ad.scope():
            model = dense_embedding_model(optimizer)
            saver = Saver()
            sess = ad.create_distributed_session()
            run = Run(state={}, losses=[], replicas=len(ad.strategy.replicas))
            if restore:
                saver.restore(sess, restore)
                run.restored = variable_state(sess)
                run.copies = sess.stored_copies()
            for feed in feeds:
                run.losses.append(sess.run([model.loss, model.train_op], feed)[0])
            run.state = variable_state(sess)
            if save_dir:
                step = tf.compat.v1.train.get_global_step()
                run.checkpoint = saver.save(sess, os.path.join(save_dir, "model"), global_step=step)
    return run


def plain_tf_checkpoint(prefix: str) -> str:
    """Save the freshly initialized test model with plain ``tf.compat.v1.train.Saver``:
    what TensorFlow itself writes for the original graph. Returns the prefix."""
    graph = tf.Graph()
    with graph.as_default():
        dense_embedding_model("adam")
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(config=session_config()) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return saver.save(sess, prefix)


def oracle_run(schedule: list[tuple[int, list[dict]]], optimizer="adam", restore: str | None = None):
    """The oracle through phases of (replicas, feeds); returns its final state."""
    with Oracle(lambda: dense_embedding_model(optimizer)) as oracle:
        if restore:
            oracle.restore(restore)
        for replicas, feeds in schedule:
            for feed in feeds:
                oracle.step(feed, replicas=replicas)
        return oracle.variables()


def plain_tf_finetune(witness: Witness, checkpoint: str, feeds: list[dict],
                      workdir: Path) -> dict[str, dict[str, np.ndarray]]:
    """Restore and train in the witness process, which never imports saver_impl."""
    feeds_path, out = workdir / "feeds.npz", workdir / "plain_tf_result.npz"
    save_steps(str(feeds_path), feeds)
    witness.run("checkpoint", model=MODEL_REF, checkpoint=checkpoint, feeds=feeds_path, out=out)
    return load_result(out)
