"""Checkpoint and MetaGraph inspection, read with TensorFlow's own tools.

* what a checkpoint holds (``tf.train.load_checkpoint``): keys, shapes, dtypes, values;
* how it differs from what ``tf.compat.v1.train.Saver`` writes for an original graph;
* distribution artifacts in an exported MetaGraph (``/job:`` devices, ops that the
  original graph does not have);
* a bitwise diff of two checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from autodist_verify.compare import first_mismatch

# Save/restore machinery that tf.compat.v1.train.Saver adds under the "save" scopes,
# and SavedModel's own ops: an exported graph legitimately has these beyond the
# original's ops.
_SAVER_SCOPES = ("save/", "save_1/", "save_2/", "save_3/")


@dataclass(frozen=True)
class Entry:
    """One key of a checkpoint."""

    shape: tuple[int, ...]
    dtype: str


def contents(prefix: str) -> dict[str, Entry]:
    """Every key of the checkpoint at ``prefix`` with its shape and dtype."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    return {key: Entry(tuple(shapes[key]), dtypes[key].name) for key in shapes}


def values(prefix: str) -> dict[str, np.ndarray]:
    """Every key of the checkpoint at ``prefix`` with its value."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}


def write_without(source: str, target: str, dropped: str) -> str:
    """Write, with TensorFlow's own Saver, a checkpoint holding every key of ``source``
    but ``dropped``: an incomplete checkpoint (with one unrelated key instead when
    ``dropped`` was the only one, since a checkpoint cannot be empty). Returns its prefix."""
    import tensorflow as tf

    kept = {key: value for key, value in values(source).items() if key != dropped}
    if len(kept) == len(values(source)):
        raise KeyError(f"checkpoint {source} has no key {dropped!r}")
    if not kept:
        kept = {"not_in_the_model": np.zeros([], np.float32)}
    with tf.Graph().as_default():
        variables = {key: tf.compat.v1.Variable(value, name="copy") for key, value in kept.items()}
        saver = tf.compat.v1.train.Saver(var_list=variables)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return saver.save(sess, target, write_meta_graph=False)


def layout_problems(expected: dict[str, Entry], actual: dict[str, Entry]) -> list[str]:
    """Differences of keys, shapes and dtypes, one sentence each (empty: same layout)."""
    problems = [f"missing key {key!r} ({expected[key].dtype}{list(expected[key].shape)})"
                for key in sorted(set(expected) - set(actual))]
    problems += [f"unexpected key {key!r} ({actual[key].dtype}{list(actual[key].shape)})"
                 for key in sorted(set(actual) - set(expected))]
    for key in sorted(set(expected) & set(actual)):
        want, got = expected[key], actual[key]
        if want.shape != got.shape:
            problems.append(f"key {key!r}: shape {list(got.shape)}, expected {list(want.shape)}")
        if want.dtype != got.dtype:
            problems.append(f"key {key!r}: dtype {got.dtype}, expected {want.dtype}")
    return problems


def value_problems(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray],
                   keys: Iterable[str] | None = None) -> list[str]:
    """Bitwise differences of values present in both (one message per differing key)."""
    keys = sorted(set(expected) & set(actual)) if keys is None else keys
    problems = []
    for key in keys:
        mismatch = first_mismatch(key, expected[key], actual[key])
        if mismatch is not None:
            problems.append(str(mismatch))
    return problems


def diff(prefix_a: str, prefix_b: str) -> list[str]:
    """Everything that differs between two checkpoints: layout, then bytes."""
    problems = layout_problems(contents(prefix_a), contents(prefix_b))
    return problems + value_problems(values(prefix_a), values(prefix_b))


def distribution_artifacts(graph_def, original_graph_def=None) -> list[str]:
    """What in an exported graph betrays the distributed system, one sentence each.

    Always: nodes placed on a ``/job:``, ``/task:`` or ``/replica:`` device. With the
    original graph: nodes the original does not have, other than Saver machinery
    (``save/...``) and SavedModel's own ops.
    """
    problems = []
    for node in graph_def.node:
        if any(marker in node.device for marker in ("/job:", "/task:", "/replica:")):
            problems.append(f"node {node.name!r} is placed on {node.device!r}")
    if original_graph_def is not None:
        original = {node.name for node in original_graph_def.node}
        for node in graph_def.node:
            if node.name not in original and not node.name.startswith(_SAVER_SCOPES):
                problems.append(f"node {node.name!r} ({node.op}) is not in the original graph")
    return problems
