"""Training programs as AutoDist users write them: Keras 2 layers and optimizers, tf.data
input, an embedding, a float64 regression.

Each builder builds its original graph into the current default graph and returns an
:class:`autodist_verify.oracle.TrainModel`, so the same function builds the graph inside
``ad.scope()`` (the distributed side) and inside the oracle's graph. ``tf.keras`` is
Keras 2 here (``TF_USE_LEGACY_KERAS=1``, set by the root conftest before TensorFlow is
imported).

Keras 2's newer optimizers (``tf.keras.optimizers.Adam``, ``tf.optimizers.SGD``) build
their step for TF2 functions. ``AutoDist.scope()`` builds it as a ``tf.function`` would,
with automatic control dependencies (saver_impl/capture.py); the oracle side, plain
TensorFlow, must be told to: ``ordered_step=True`` builds it so with
:func:`step_as_in_a_function`, the contract's rule written independently of saver_impl.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import auto_control_deps

from autodist_verify.oracle import TrainModel

IMAGE_SHAPE = (6, 6, 1)
CLASSES = 3
EXAMPLES = 15
# 5 does not divide by 2 replicas: each step's pieces hold 3 and 2 examples.
BATCH = 5

_rng = np.random.RandomState(11)
IMAGES = _rng.rand(EXAMPLES, *IMAGE_SHAPE).astype(np.float32)
LABELS = _rng.randint(0, CLASSES, EXAMPLES).astype(np.int64)


def step_as_in_a_function(optimizer, grads_and_vars) -> tf.Tensor:
    """A Keras 2 ``Optimizer`` step built as inside a ``tf.function``: slots created
    first, then the update under automatic control dependencies; returns the train op."""
    with tf.name_scope(optimizer.name), tf.init_scope():
        optimizer.build([v for _, v in grads_and_vars])
    with auto_control_deps.AutomaticControlDependencies() as dependencies:
        result = optimizer.apply_gradients(grads_and_vars)
        return dependencies.mark_as_return(tf.convert_to_tensor(result))


def _keras_optimizer(kind: str, learning_rate: float):
    if kind == "legacy":  # Keras 2's OptimizerV2
        return tf.keras.optimizers.legacy.Adam(learning_rate)
    if kind == "keras":  # Keras 2's newer Optimizer
        return tf.keras.optimizers.Adam(learning_rate)
    raise ValueError(f"optimizer kind {kind!r}")


def _apply(optimizer, grads_and_vars, ordered_step: bool):
    if ordered_step and not isinstance(optimizer, tf.keras.optimizers.legacy.Optimizer):
        return step_as_in_a_function(optimizer, grads_and_vars)
    return optimizer.apply_gradients(grads_and_vars)


def image_iterator(initializable: bool = False):
    """An iterator over the images, BATCH per element, repeated forever: one-shot, or
    initializable from placeholders named ``images`` and ``labels``."""
    # The tests' process runs under op determinism, which wants a graph seed before a
    # one-shot iterator is made (a user's program, without determinism, does not).
    tf.compat.v1.set_random_seed(7)
    if not initializable:
        dataset = tf.data.Dataset.from_tensor_slices((IMAGES, LABELS)).batch(BATCH).repeat()
        return tf.compat.v1.data.make_one_shot_iterator(dataset)
    images = tf.compat.v1.placeholder(tf.float32, [None, *IMAGE_SHAPE], name="images")
    labels = tf.compat.v1.placeholder(tf.int64, [None], name="labels")
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(BATCH).repeat()
    return tf.compat.v1.data.make_initializable_iterator(dataset)


def keras_cnn(optimizer: str = "legacy", dropout: float | None = None, ordered_step: bool = False,
              iterator=None) -> TrainModel:
    """Conv2D, BatchNormalization, [Dropout], Dense on tf.data input, a Keras Adam.

    The batch-norm moving averages are updated by the train op (``model.updates`` as
    control dependencies). Dropout, when asked for, has an op seed. ``iterator``
    (default: a one-shot :func:`image_iterator`) gives the input.
    """
    images, labels = (iterator or image_iterator()).get_next()
    layers = [
        tf.keras.layers.Conv2D(2, 3, activation="relu", kernel_initializer=tf.keras.initializers.GlorotUniform(seed=1)),
        tf.keras.layers.BatchNormalization(),
        tf.keras.layers.Flatten(),
    ]
    if dropout is not None:
        layers.append(tf.keras.layers.Dropout(dropout, seed=3))
    layers.append(tf.keras.layers.Dense(CLASSES, kernel_initializer=tf.keras.initializers.GlorotUniform(seed=2)))
    model = tf.keras.Sequential(layers)
    logits = model(images, training=True)
    loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
    variables = model.trainable_variables
    grads_and_vars = list(zip(tf.gradients(loss, variables), variables))
    with tf.control_dependencies(model.updates):
        train_op = _apply(_keras_optimizer(optimizer, 0.01), grads_and_vars, ordered_step)
    return TrainModel(loss=loss, train_op=train_op, grads_and_vars=grads_and_vars)


VOCAB, DIM, IDS_PER_EXAMPLE = 10, 4, 2


def embedding_feeds(steps: int, batch: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.RandomState(seed)
    return [
        {"ids": rng.randint(0, VOCAB, (batch, IDS_PER_EXAMPLE)).astype(np.int32),
         "y": rng.rand(batch).astype(np.float32)}
        for _ in range(steps)
    ]


def keras_adam_embedding(ordered_step: bool = False) -> TrainModel:
    """A Keras Embedding layer (sparse gradients) and a dense head, trained by Keras 2's Adam."""
    ids = tf.compat.v1.placeholder(tf.int32, [None, IDS_PER_EXAMPLE], name="ids")
    y = tf.compat.v1.placeholder(tf.float32, [None], name="y")
    embedding = tf.keras.layers.Embedding(
        VOCAB, DIM, embeddings_initializer=tf.keras.initializers.RandomUniform(seed=1))
    w = tf.Variable(tf.random.stateless_uniform([DIM, 1], seed=[3, 4]), name="w")
    hidden = tf.reduce_mean(embedding(ids), axis=1)
    prediction = tf.squeeze(tf.matmul(hidden, w), 1)
    loss = tf.reduce_mean(tf.square(prediction - y), name="loss")
    variables = [*embedding.trainable_variables, w]
    grads_and_vars = list(zip(tf.gradients(loss, variables), variables))
    train_op = _apply(_keras_optimizer("keras", 0.05), grads_and_vars, ordered_step)
    return TrainModel(loss=loss, train_op=train_op, grads_and_vars=grads_and_vars)


REGRESSION_EXAMPLES = 50
_regression_rng = np.random.RandomState(5)
REGRESSION_X = _regression_rng.randn(REGRESSION_EXAMPLES)
REGRESSION_Y = REGRESSION_X * 3.0 + 2.0 + _regression_rng.randn(REGRESSION_EXAMPLES)


def float64_regression(ordered_step: bool = False) -> TrainModel:
    """``W * x + b`` in float64 with ``tf.optimizers.SGD``; ``x`` has a fixed shape, so
    every replica gets the whole of it (as in AutoDist's SavedModel test)."""
    x = tf.compat.v1.placeholder(tf.float64, [REGRESSION_EXAMPLES], name="x")
    w = tf.Variable(5.0, dtype=tf.float64, name="W")
    b = tf.Variable(0.0, dtype=tf.float64, name="b")
    prediction = tf.identity(w * x + b, name="prediction")
    loss = tf.reduce_mean(tf.square(prediction - REGRESSION_Y), name="loss")
    grads_and_vars = list(zip(tf.gradients(loss, [w, b]), [w, b]))
    train_op = _apply(tf.optimizers.SGD(0.01), grads_and_vars, ordered_step)
    return TrainModel(loss=loss, train_op=train_op, grads_and_vars=grads_and_vars)
