"""``tf.compat.v1.saved_model.Builder`` for a distributed session.

The variables are saved through the AutoDist :class:`~saver_impl.checkpoint.saver.Saver`
(required), and the exported MetaGraph is the original graph's: no ``/job:`` devices, no
replica copies, no partition or aggregation ops. The captured train op is added to the
``saved_model_train_op`` collection so a loader can fine-tune.
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

    Two methods may be overridden: :meth:`exported_graph` and :meth:`exported_train_op`.
    """

    def exported_graph(self, sess) -> Any:
        """The graph whose MetaGraph is added (default: ``sess.graph``, which for a
        distributed session is the original graph)."""
        return sess.graph

    def exported_train_op(self, sess) -> Any:
        """The op recorded in the ``saved_model_train_op`` collection of ``sess.graph``
        so a loader can fine-tune, or None to record nothing (default: a distributed
        session's train op; None for a plain session)."""
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
    ):
        """Save the variables through ``saver`` and add the original graph's MetaGraph."""
        if not isinstance(saver, Saver):
            raise AutoDistError(
                "SavedModelBuilder.add_meta_graph_and_variables needs saver=saver_impl.Saver(...) "
                f"(got {type(saver).__name__}): only it saves the original graph's variables"
            )
        train_op = self.exported_train_op(sess)
        if train_op is not None:
            with sess.graph.as_default():
                if train_op not in tf.compat.v1.get_collection(constants.TRAIN_OP_KEY):
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
