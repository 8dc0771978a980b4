"""``tf.compat.v1.saved_model.Builder`` for a distributed session.

The variables are saved through the AutoDist :class:`~saver_impl.checkpoint.saver.Saver`
(required), and the exported MetaGraph is the original graph's: no ``/job:`` devices, no
replica copies, no partition or aggregation ops. A train op is added to the
``saved_model_train_op`` collection so a loader can fine-tune: the ``train_op=`` argument
of :meth:`SavedModelBuilder.add_meta_graph_and_variables` when given (as in AutoDist's
builder and TensorFlow's v2 builder), else :meth:`SavedModelBuilder.exported_train_op`
(by default the captured train op of a distributed session).

AutoDist programs import it as ``saver_impl.checkpoint.saved_model_builder.SavedModelBuilder``
(an alias of this class).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
from tensorflow.python.saved_model import constants

from saver_impl.checkpoint.saver import Saver
from saver_impl.errors import AutoDistError
from saver_impl.session import DistributedSession


class SavedModelBuilder(tf.compat.v1.saved_model.Builder):
    """TensorFlow's SavedModel builder; ``saver`` must be a :class:`Saver`.

    Two methods may be overridden: :meth:`exported_graph` and :meth:`exported_train_op`
    (the latter decides only when ``add_meta_graph_and_variables`` gets no ``train_op``).
    """

    def exported_graph(self, sess) -> Any:
        """The graph whose MetaGraph is added (default: ``sess.graph``, which for a
        distributed session is the original graph)."""
        return sess.graph

    def exported_train_op(self, sess) -> Any:
        """The op recorded in the ``saved_model_train_op`` collection of ``sess.graph``
        so a loader can fine-tune, or None to record nothing (default: a distributed
        session's train op; None for a plain session). Not called when
        :meth:`add_meta_graph_and_variables` is given ``train_op``."""
        if isinstance(sess, DistributedSession):
            return sess.dist.item.train_op
        return None

    def add_meta_graph_and_variables(
        self,
        sess,
        tags,
        signature_def_map=None,
        assets_collection=None,
        legacy_init_op=None,
        clear_devices=False,
        main_op=None,
        strip_default_attrs=False,
        saver=None,
        train_op=None,
    ):
        """Save the variables through ``saver`` and add the original graph's MetaGraph.

        The arguments are TensorFlow's (``tf.compat.v1.saved_model.Builder``), plus
        AutoDist's ``train_op``: an operation or tensor of ``sess.graph`` (for a
        distributed session, the original graph) recorded in the
        ``saved_model_train_op`` collection instead of :meth:`exported_train_op`'s.

        Raises:
            AutoDistError: ``saver`` is not a :class:`Saver`, or ``train_op`` is neither an
                operation nor a tensor of ``sess.graph``.
        """
        if not isinstance(saver, Saver):
            raise AutoDistError(
                "SavedModelBuilder.add_meta_graph_and_variables needs saver=saver_impl.Saver(...) "
                f"(got {type(saver).__name__}): only it saves the original graph's variables"
            )
        if train_op is not None:
            _check_train_op(train_op, sess.graph)
        else:
            train_op = self.exported_train_op(sess)
        if train_op is not None:
            with sess.graph.as_default():
                if not any(op is train_op for op in tf.compat.v1.get_collection(constants.TRAIN_OP_KEY)):
                    tf.compat.v1.add_to_collection(constants.TRAIN_OP_KEY, train_op)
        with self.exported_graph(sess).as_default():
            return super().add_meta_graph_and_variables(
                sess,
                tags,
                signature_def_map=signature_def_map,
                assets_collection=assets_collection,
                legacy_init_op=legacy_init_op,
                clear_devices=clear_devices,
                main_op=main_op,
                strip_default_attrs=strip_default_attrs,
                saver=saver,
            )


def _check_train_op(train_op: Any, graph: Any) -> None:
    """Refuse a ``train_op=`` that is not an operation or tensor of ``graph``."""
    if not isinstance(train_op, (tf.Operation, tf.Tensor)):
        raise AutoDistError(
            f"SavedModelBuilder.add_meta_graph_and_variables: train_op={train_op!r} is a "
            f"{type(train_op).__name__}; it must be an operation or a tensor of the session's graph"
        )
    if train_op.graph is not graph:
        raise AutoDistError(
            f"SavedModelBuilder.add_meta_graph_and_variables: train_op {train_op.name!r} belongs to "
            "another graph; it must be an operation or a tensor of sess.graph (for a distributed "
            "session, the original graph built in ad.scope())"
        )
