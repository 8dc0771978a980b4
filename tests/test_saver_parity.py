"""saver_impl.Saver outside AutoDist behaves exactly as tf.compat.v1.train.Saver.

Both savers run on identical graphs (the model spec of :mod:`tests.specs`) in plain
sessions; the files they write, the checkpoint state and the retention must agree byte
for byte and name for name.
"""

from __future__ import annotations

import inspect
import os

import numpy as np
import pytest
import tensorflow as tf

from autodist_verify import model_graph, model_spec
from autodist_verify.compare import assert_bitwise_equal
from cluster_sim.determinism import session_config
from saver_impl import Saver
from tests.specs import SGD_SPEC, SPEC


def read_checkpoint(prefix: str) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(prefix)
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}


def dtypes_of(prefix: str) -> dict[str, tf.DType]:
    return tf.train.load_checkpoint(prefix).get_variable_to_dtype_map()


def save_sequence(saver_class, directory, steps=4, **saver_kwargs):
    """Train and save after every step; returns (paths, state, file names, latest)."""
    graph = tf.Graph()
    feeds = model_spec.feeds(SPEC, steps, 4, seed=0)
    with graph.as_default():
        model = model_graph.build(SPEC)
        saver = saver_class(**saver_kwargs)
        with tf.compat.v1.Session(config=session_config()) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            paths = []
            for feed in feeds:
                sess.run(model.train_op, model_graph.feed_dict(graph, feed))
                step = tf.compat.v1.train.get_global_step()
                paths.append(saver.save(sess, os.path.join(directory, "model"), global_step=step))
            state = tf.train.get_checkpoint_state(directory)
            return (
                [os.path.basename(p) for p in paths],
                [os.path.basename(p) for p in state.all_model_checkpoint_paths],
                sorted(os.listdir(directory)),
                os.path.basename(tf.train.latest_checkpoint(directory)),
                saver.last_checkpoints,
            )


def test_constructor_signature_is_tensorflows():
    """TensorFlow's parameters, in its order with its defaults; then only the reference's
    keyword-only extension (``durable``)."""
    ours = list(inspect.signature(Saver.__init__).parameters.values())
    theirs = list(inspect.signature(tf.compat.v1.train.Saver.__init__).parameters.values())
    assert ours[:len(theirs)] == theirs
    assert [(p.name, p.kind, p.default) for p in ours[len(theirs):]] == [
        ("durable", inspect.Parameter.KEYWORD_ONLY, False)]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_to_keep=2),
        dict(max_to_keep=3, pad_step_number=True),
        dict(max_to_keep=0),
        dict(sharded=True, max_to_keep=2),
        dict(save_relative_paths=True),
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_same_files_state_and_retention_as_tensorflow(tmp_path, kwargs):
    ours_dir, theirs_dir = tmp_path / "ours", tmp_path / "theirs"
    ours_dir.mkdir(), theirs_dir.mkdir()
    ours = save_sequence(Saver, str(ours_dir), **kwargs)
    theirs = save_sequence(tf.compat.v1.train.Saver, str(theirs_dir), **kwargs)
    paths, state_paths, files, latest, _ = ours
    t_paths, t_state_paths, t_files, t_latest, _ = theirs
    assert paths == t_paths
    assert state_paths == t_state_paths
    assert files == t_files
    assert latest == t_latest
    prefix = os.path.join(str(ours_dir), latest)
    t_prefix = os.path.join(str(theirs_dir), t_latest)
    assert dtypes_of(prefix) == dtypes_of(t_prefix)
    assert_bitwise_equal(read_checkpoint(t_prefix), read_checkpoint(prefix), what="saver_impl checkpoint")
    with open(os.path.join(str(ours_dir), "checkpoint")) as a, open(os.path.join(str(theirs_dir), "checkpoint")) as b:
        assert a.read().replace(str(ours_dir), "DIR") == b.read().replace(str(theirs_dir), "DIR")


def test_var_list_as_dict_and_list_keys(tmp_path):
    graph = tf.Graph()
    with graph.as_default():
        model = model_graph.build(SGD_SPEC)
        kernel = [v for v in tf.compat.v1.global_variables() if v.op.name == "dense_0/kernel"][0]
        by_dict = Saver(var_list={"renamed_kernel": kernel})
        by_list = Saver(var_list=[kernel])
        with tf.compat.v1.Session(config=session_config()) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            a = by_dict.save(sess, str(tmp_path / "a"))
            b = by_list.save(sess, str(tmp_path / "b"))
            value = sess.run(kernel)
    assert list(read_checkpoint(a)) == ["renamed_kernel"]
    assert list(read_checkpoint(b)) == ["dense_0/kernel"]
    assert read_checkpoint(a)["renamed_kernel"].tobytes() == value.tobytes()
    del model


@pytest.mark.parametrize("var_list, message", [
    (["dense_0/kernel"], "var_list entry 'dense_0/kernel' (str) is not a variable"),
    ({"k": "dense_0/kernel"}, "var_list['k'] holds 'dense_0/kernel' (str), not a variable"),
    ("dense_0/kernel", "var_list is 'dense_0/kernel' (str), not a list or a dict of variables"),
    ([None], "var_list entry None (NoneType) is not a variable"),
], ids=["list-of-names", "dict-of-names", "a-name", "none-entry"])
def test_var_list_of_names_is_a_type_error_naming_the_entry(var_list, message):
    """Issue 13, item 7: names instead of variables are a TypeError naming the entry and
    saying what to pass (TensorFlow's own Saver raises AttributeError for a list of names)."""
    with tf.Graph().as_default():
        model_graph.build(SGD_SPEC)
        with pytest.raises(TypeError) as raised:
            Saver(var_list=var_list)
    assert str(raised.value).startswith(f"Saver: {message}"), str(raised.value)
    assert "tf.compat.v1.global_variables()" in str(raised.value)
