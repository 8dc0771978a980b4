"""The oracle against plain TensorFlow training and against the contract's arithmetic."""

import numpy as np
import pytest
import tensorflow as tf

from autodist_verify import model_graph, model_spec
from autodist_verify.oracle import Oracle, OracleError, TrainModel
from tests.specs import SPEC, plain_training

# One optimizer spec per optimizer the model specs offer (checked below), with slots
# where the optimizer has them.
OPTIMIZER_SPECS = [
    {"name": "sgd", "learning_rate": 0.1},
    {"name": "momentum", "learning_rate": 0.05, "momentum": 0.9},
    {"name": "adam", "learning_rate": 0.01},
    {"name": "adagrad", "learning_rate": 0.1},
    {"name": "rmsprop", "learning_rate": 0.01, "momentum": 0.5},
    {"name": "adadelta", "learning_rate": 0.5},
    {"name": "ftrl", "learning_rate": 0.1, "l1_regularization_strength": 0.01},
    {"name": "proximal_adagrad", "learning_rate": 0.1, "l2_regularization_strength": 0.01},
    {"name": "keras_sgd", "learning_rate": 0.1, "momentum": 0.5},
    {"name": "keras_adam", "learning_rate": 0.01},
    {"name": "keras_rmsprop", "learning_rate": 0.01, "centered": True},
]


def test_every_optimizer_of_the_model_specs_is_checked():
    assert sorted(o["name"] for o in OPTIMIZER_SPECS) == sorted(model_spec.OPTIMIZERS)


def one_replica_oracle_equals_plain_training(spec, seed: int) -> dict:
    """Three steps of the oracle with R = 1 against plain training, bit for bit; returns
    the oracle's variables."""
    feeds = model_spec.feeds(spec, steps=3, batch=6, seed=seed)
    with Oracle(lambda: model_graph.build(spec), replicas=1) as oracle:
        for feed in feeds:
            oracle.step(feed)
        got = oracle.variables()
    expected = plain_training(spec, feeds)
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name].tobytes() == expected[name].tobytes(), name
    return got


@pytest.mark.parametrize("optimizer", OPTIMIZER_SPECS, ids=lambda o: o["name"])
def test_one_replica_is_plain_training_bit_for_bit(optimizer):
    one_replica_oracle_equals_plain_training({**SPEC, "optimizer": optimizer}, seed=0)


FEATURES = {
    "batch_norm": {"batch_norm": True},
    "tied": {"tied": True},
    "int32_counters": {"counter": "int32", "global_step": "int32"},
    "clip_norm": {"clip_norm": 0.1},
    "exponential_decay": {"schedule": {"name": "exponential_decay", "decay_steps": 1, "decay_rate": 0.5,
                                       "staircase": False}},
    "piecewise_constant": {"schedule": {"name": "piecewise_constant", "boundaries": [1, 2],
                                        "scales": [1.0, 0.5, 0.1]}},
}


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_one_replica_is_plain_training_for_every_model_feature(feature):
    spec = {**SPEC, **FEATURES[feature]}
    got = one_replica_oracle_equals_plain_training(spec, seed=1)
    if "counter" in spec:
        assert got["steps_seen"] == 3 and got["steps_seen"].dtype == np.int32


def _sgd_on_one_variable() -> TrainModel:
    x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
    w = tf.compat.v1.get_variable("w", [3], initializer=tf.constant_initializer([0.3, -1.7, 2.9]))
    loss = tf.reduce_mean(tf.reduce_sum(x * w * w, axis=1))
    opt = tf.compat.v1.train.GradientDescentOptimizer(0.25)
    grads_and_vars = opt.compute_gradients(loss)
    return TrainModel(loss, opt.apply_gradients(grads_and_vars), grads_and_vars)


def _sgd_step_by_hand(pieces: list[np.ndarray]) -> np.ndarray:
    """w after one contract step of _sgd_on_one_variable, in float32 by hand:
    w <- w - lr * ((g0 + g1 + ...) / R), g_r the mean over piece r's rows of 2 x w."""
    w = np.array([0.3, -1.7, 2.9], np.float32)
    per_replica = []
    for piece in pieces:
        rows = [np.float32(2) * row * w for row in piece]
        total = rows[0]
        for row in rows[1:]:
            total = total + row
        per_replica.append(total / np.float32(len(rows)))
    aggregate = per_replica[0]
    for gradient in per_replica[1:]:
        aggregate = aggregate + gradient
    return w - aggregate / np.float32(len(pieces)) * np.float32(0.25)


def _oracle_sgd_step(x: np.ndarray, replicas: int) -> np.ndarray:
    with Oracle(_sgd_on_one_variable, replicas=replicas) as oracle:
        oracle.step({"x": x})
        return oracle.variables()["w"]


def test_three_replicas_follow_the_contract_arithmetic():
    x = np.random.default_rng(7).standard_normal((6, 3)).astype(np.float32)
    expected = _sgd_step_by_hand([x[0:2], x[2:4], x[4:6]])
    np.testing.assert_allclose(_oracle_sgd_step(x, 3), expected, rtol=0, atol=1e-6)


def test_an_uneven_batch_splits_in_array_split_order():
    """7 rows over 3 replicas: pieces of 3, 2 and 2 rows, each averaged over its own rows."""
    x = np.random.default_rng(8).standard_normal((7, 3)).astype(np.float32)
    expected = _sgd_step_by_hand([x[:3], x[3:5], x[5:]])
    np.testing.assert_allclose(_oracle_sgd_step(x, 3), expected, rtol=0, atol=1e-6)


def test_a_batch_smaller_than_the_replica_count_is_refused():
    with Oracle(lambda: model_graph.build(SPEC), replicas=4) as oracle:
        with pytest.raises(OracleError, match="'x': a batch of 3 cannot give each of 4 replicas an example"):
            oracle.step(model_spec.feeds(SPEC, 1, 3, seed=0)[0])


def test_unknown_feed_name_is_refused():
    with Oracle(lambda: model_graph.build(SPEC)) as oracle:
        with pytest.raises(OracleError, match="nonexistent"):
            oracle.step({"nonexistent": np.zeros(1)})
