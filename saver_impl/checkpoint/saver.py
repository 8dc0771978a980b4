"""A ``tf.compat.v1.train.Saver`` that saves the original graph from a distributed session.

:class:`Saver` *is* TensorFlow's Saver, built on the original graph, with the same
constructor: checkpoint naming, ``global_step`` suffixes, the state file, retention
(``max_to_keep``, ``keep_checkpoint_every_n_hours``), ``export_meta_graph`` and
``as_saver_def`` are TensorFlow's own code. With a plain session a successful save
leaves exactly the files and state TensorFlow's Saver leaves. One thing is ordered
differently, with any session: a save writes its files under a staging prefix and
renames them into place before it updates the state file (:mod:`.staging`), so the
state never names an incomplete checkpoint and a failed save changes nothing. One
setting is added, keyword-only after TensorFlow's: ``durable=True`` syncs the data,
index, MetaGraph and state file to the storage before ``save`` returns (off by default,
as TensorFlow's Saver never syncs).

With a :class:`~saver_impl.session.DistributedSession`, the Saver first builds a
*counterpart* in the distributed graph: a TensorFlow Saver with the same settings whose
saveables are built from the checkpoint plans of its :class:`~.planner.CheckpointPlanner`
(:mod:`.plan`, :mod:`.saveables`). TensorFlow's save and restore code is then handed a
:class:`~.session_view.CheckpointSession`, which runs the counterpart's save and restore
where that code asks for the original ones. The Saver can be created inside
``ad.scope()`` before the session (as AutoDist requires) or after it.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf
from tensorflow.core.protobuf import saver_pb2
from tensorflow.python.checkpoint import checkpoint_management
from tensorflow.python.ops.variables import PartitionedVariable
from tensorflow.python.trackable.base import Trackable
from tensorflow.python.training import training_util
from tensorflow.python.training.saving import saveable_object_util
from tensorflow.python.training.saving.saveable_object import SaveableObject
from tensorflow.python.util import compat

from saver_impl.checkpoint.parallel_save import ParallelSave
from saver_impl.checkpoint.plan import paired
from saver_impl.checkpoint.planner import CheckpointPlanner
from saver_impl.checkpoint.restorable import ExpectedKey, check_restorable
from saver_impl.checkpoint.saveables import PlannedSaveable, copy_tasks, local_restore
from saver_impl.checkpoint.session_view import CheckpointSession, Counterpart
from saver_impl.checkpoint.staging import StagedSave, client_path, remove_litter, sync_state_file
from saver_impl.checkpoint.visibility import (
    require_shared_directory,
    require_visible_checkpoint,
    sees_checkpoint,
    shares_directory,
)
from saver_impl.errors import AutoDistError
from saver_impl.session import DistributedSession


def _variable_name(key: str, value) -> str:
    """The original variable behind a checkpoint entry (a variable or a read of one)."""
    if isinstance(value, tf.Variable):
        return value.op.name
    op = getattr(value, "op", None)
    if op is not None and op.type == "VarHandleOp":
        return op.name
    if op is not None and op.type == "ReadVariableOp" and op.inputs[0].op.type == "VarHandleOp":
        return op.inputs[0].op.name
    raise AutoDistError(
        f"checkpoint entry {key!r} is a {type(value).__name__}; a Saver used with a "
        "distributed session saves resource variables only"
    )


# What TensorFlow's Saver takes as a var_list entry (a tf.Variable is a Trackable).
_SAVEABLE_TYPES = (tf.Tensor, PartitionedVariable, SaveableObject, Trackable)


def check_var_list(var_list: Any) -> None:
    """Refuse a ``var_list`` that TensorFlow's Saver would fail on obscurely (an
    ``AttributeError`` for a list of names, "not a variable: Tensor Const" for a dict of
    names): raise a ``TypeError`` naming the bad entry. ``var_list`` is None, a list,
    tuple or set (nested lists allowed, as TensorFlow flattens them) of variables or
    saveables, or a dict from checkpoint names to a variable or a list of its slices."""
    if var_list is None:
        return
    hint = ("pass the variable objects (for example from tf.compat.v1.global_variables()), "
            "or a dict {checkpoint name: variable}")
    if isinstance(var_list, Mapping):
        for key, value in var_list.items():
            if not isinstance(key, str):
                raise TypeError(f"Saver: var_list key {key!r} ({type(key).__name__}) is not a checkpoint name (str)")
            for entry in tf.nest.flatten(value):
                if not isinstance(entry, _SAVEABLE_TYPES):
                    raise TypeError(f"Saver: var_list[{key!r}] holds {entry!r} ({type(entry).__name__}), "
                                    f"not a variable; {hint}")
        return
    if not isinstance(var_list, (list, tuple, set)):
        raise TypeError(f"Saver: var_list is {var_list!r} ({type(var_list).__name__}), "
                        f"not a list or a dict of variables; {hint}")
    for entry in tf.nest.flatten(list(var_list)):
        if not isinstance(entry, _SAVEABLE_TYPES):
            raise TypeError(f"Saver: var_list entry {entry!r} ({type(entry).__name__}) is not a variable; {hint}")


class Saver(tf.compat.v1.train.Saver):
    """TensorFlow's Saver, able to save and restore through a distributed session.

    The constructor is TensorFlow's, plus ``durable`` (keyword-only): when True, a
    :meth:`save` returns only once the data, index and MetaGraph files, the checkpoint
    state file and their directory are fsynced (:mod:`.staging` says how, and what a
    client can sync when nodes on other hosts write the data). It costs the time the
    storage takes to write the bytes; the default (False) is TensorFlow's behaviour. It
    takes the V2 format (``write_version``) and a local path.

    Extension points, for subclasses:

    * :attr:`planner`, a :class:`~saver_impl.checkpoint.planner.CheckpointPlanner`: what is
      saved and restored from a distributed session (default: the reference planner);
    * :meth:`exported_graph`: the graph whose MetaGraph :meth:`save` writes.
    """

    planner: CheckpointPlanner = CheckpointPlanner()

    def __init__(
        self,
        var_list=None,
        reshape=False,
        sharded=False,
        max_to_keep=5,
        keep_checkpoint_every_n_hours=10000.0,
        name=None,
        restore_sequentially=False,
        saver_def=None,
        builder=None,
        defer_build=False,
        allow_empty=False,
        write_version=saver_pb2.SaverDef.V2,
        pad_step_number=False,
        save_relative_paths=False,
        filename=None,
        *,
        durable: bool = False,
    ):
        check_var_list(var_list)
        if durable and write_version != saver_pb2.SaverDef.V2:
            raise ValueError("Saver(durable=True) syncs checkpoints of the V2 format; write_version is V1")
        super().__init__(
            var_list=var_list,
            reshape=reshape,
            sharded=sharded,
            max_to_keep=max_to_keep,
            keep_checkpoint_every_n_hours=keep_checkpoint_every_n_hours,
            name=name,
            restore_sequentially=restore_sequentially,
            saver_def=saver_def,
            builder=builder,
            defer_build=defer_build,
            allow_empty=allow_empty,
            write_version=write_version,
            pad_step_number=pad_step_number,
            save_relative_paths=save_relative_paths,
            filename=filename,
        )
        self._reshape = reshape
        self._durable = durable
        self._counterpart_settings = dict(
            sharded=sharded,
            allow_empty=allow_empty,
            write_version=write_version,
            restore_sequentially=restore_sequentially,
        )
        self._requested_var_list = var_list
        # Per distributed session: this Saver's tensor and op names -> the counterpart's.
        self._counterparts: weakref.WeakKeyDictionary[DistributedSession, dict[str, Any]] = (
            weakref.WeakKeyDictionary()
        )

    # -- extension points --------------------------------------------------------------

    def exported_graph(self, sess: DistributedSession) -> Any:
        """The graph whose MetaGraph :meth:`save` writes beside a checkpoint taken from the
        distributed session ``sess`` (default: ``sess.graph``, the original graph)."""
        return sess.graph

    # -- reporting ---------------------------------------------------------------------

    def checkpoint_plan(self, sess: DistributedSession) -> list[dict[str, Any]]:
        """The save plan this Saver follows with ``sess``, one plain row per tensor written:
        ``key``, ``variable``, ``slice`` (TensorFlow's slice spec, "" when whole),
        ``writer`` (the device that writes it), ``sources`` (the copies it is assembled
        from) and ``checks`` (the copies compared with them first). This is the suite's
        optional ``ReportsCheckpointPlan`` interface (``autodist-verify inspect --plan``)."""
        save, _ = self._plans(sess)
        return [
            {"key": e.key, "variable": e.variable, "slice": e.slice_spec, "writer": e.writer,
             "sources": [c.device for c in e.sources], "checks": [c.device for c in e.checks]}
            for e in save.entries
        ]

    # -- the distributed counterpart -------------------------------------------------

    def _plans(self, sess: DistributedSession):
        return self.planner.plans(self._checkpoint_keys(sess.graph), sess.layouts, self._reshape,
                                  sharded=self._counterpart_settings["sharded"])

    def _checkpoint_keys(self, original_graph) -> dict[str, str]:
        """Checkpoint key -> original variable name, as TensorFlow's Saver keys them."""
        var_list = self._requested_var_list
        if var_list is None:
            with original_graph.as_default():
                var_list = tf.compat.v1.global_variables() + tf.compat.v1.get_collection(
                    tf.compat.v1.GraphKeys.SAVEABLE_OBJECTS
                )
        entries = saveable_object_util.op_list_to_dict(var_list)
        return {key: _variable_name(key, value) for key, value in entries.items()}

    def _build_counterpart(self, sess: DistributedSession) -> Counterpart:
        dist = sess.dist
        save, restore = self._plans(sess)
        settings = self._counterpart_settings
        with dist.graph.as_default(), tf.name_scope("original_graph_saver"):
            saveables, per_key = [], {}
            for save_entry, restore_entry in paired(save, restore):
                n = per_key[save_entry.key] = per_key.get(save_entry.key, -1) + 1
                name = f"{save_entry.key}/part_{n}" if save_entry.slice_spec else save_entry.key
                saveables.append(PlannedSaveable(save_entry, restore_entry, dist.storage, self.planner, name))
            counterpart = tf.compat.v1.train.Saver(var_list=saveables, **settings)
        ours, theirs = self.saver_def, counterpart.saver_def
        expected = [ExpectedKey.of(s.entry, s.specs[0].dtype, tuple(s.storage.shape)) for s in saveables]
        prefix = dist.graph.get_tensor_by_name(theirs.filename_tensor_name)

        def build_local_restore():
            with dist.graph.as_default(), tf.name_scope("original_graph_saver/local"):
                return local_restore(saveables, prefix)

        write_tasks = tuple(sorted({entry.writer for entry in save.entries}))

        def build_parallel_save():
            with dist.graph.as_default(), tf.name_scope("original_graph_saver/parallel"):
                return ParallelSave(saveables)

        return Counterpart(
            {
                ours.filename_tensor_name: prefix,
                ours.save_tensor_name: dist.graph.get_tensor_by_name(theirs.save_tensor_name),
                ours.restore_op_name: dist.graph.get_operation_by_name(theirs.restore_op_name),
            },
            save_tensor=ours.save_tensor_name,
            restore_op=ours.restore_op_name,
            before_restore=lambda save_path: check_restorable(save_path, expected),
            build_local_restore=build_local_restore,
            build_parallel_save=build_parallel_save,
            # TensorFlow's sharded Saver writes and reads one shard per saveable device.
            shard_tasks=write_tasks if settings["sharded"] else (),
            copy_tasks=copy_tasks(saveables),
            write_tasks=write_tasks,
        )

    def _counterpart(self, sess: DistributedSession) -> Counterpart:
        if sess not in self._counterparts:
            self._counterparts[sess] = self._build_counterpart(sess)
        return self._counterparts[sess]

    def _session_for(self, sess, read_locally: bool = False, write_in_parallel: bool = False):
        """What TensorFlow's save and restore code is handed for ``sess``; with
        ``read_locally``, its restore reads on the tasks holding the copies; with
        ``write_in_parallel``, its save is written by the tasks holding the values."""
        if not isinstance(sess, DistributedSession):
            return sess
        return CheckpointSession(sess, self.exported_graph(sess), self._counterpart(sess), read_locally,
                                 write_in_parallel)

    def _writes_in_parallel(self, sess: DistributedSession, save_path: Any) -> bool:
        """Whether a save to ``save_path`` from ``sess`` is written by the tasks holding
        the values (:class:`~.parallel_save.ParallelSave`): an unsharded V2 save, with
        every one of those tasks seeing the directory as the client does. (A sharded
        save is TensorFlow's, which writes a shard per task already.)"""
        counterpart = self._counterpart(sess)
        if (self._counterpart_settings["sharded"] or self._write_version != saver_pb2.SaverDef.V2
                or not isinstance(save_path, str) or not counterpart.write_tasks):
            return False
        return shares_directory(sess, save_path, counterpart.write_tasks)

    def _reads_locally(self, sess: DistributedSession, save_path: Any) -> bool:
        """Whether a restore of ``save_path`` into ``sess`` reads on the tasks holding
        the copies: each of them sees the checkpoint as the client does (a V2 checkpoint:
        its index), and the Saver does not restore sequentially (TensorFlow's one read
        after another, which this Saver leaves as TensorFlow builds it)."""
        if self._counterpart_settings["restore_sequentially"] or not isinstance(save_path, str):
            return False
        return sees_checkpoint(sess, save_path, self._counterpart(sess).copy_tasks)

    # -- TensorFlow's API ------------------------------------------------------------

    def save(
        self,
        sess,
        save_path,
        global_step=None,
        latest_filename=None,
        meta_graph_suffix="meta",
        write_meta_graph=True,
        write_state=True,
        strip_default_attrs=False,
        save_debug_info=False,
    ):
        """``tf.compat.v1.train.Saver.save``; from a distributed session it writes the
        original graph's variables with their logical values.

        Unlike TensorFlow's Saver, the checkpoint state file names the checkpoint only
        once its data, index and MetaGraph are all written (:mod:`.staging`): a save
        that fails raises TensorFlow's error and leaves the latest checkpoint, the
        retained ones and the directory as they were. With a distributed session a
        relative ``save_path`` is resolved against the client's working directory and
        the returned prefix is absolute, and a sharded save first checks that every task
        writing a shard sees the directory as the client does
        (:func:`~.visibility.require_shared_directory`; else
        :class:`~.visibility.CheckpointNotShared`, and nothing is written). An
        unsharded save is written in parallel by the tasks holding the values and
        merged into the one data file where they all see the directory
        (:class:`~.parallel_save.ParallelSave`), else by TensorFlow's save on one task. With
        ``durable=True`` every file the save wrote, and the state file, is on the storage
        when it returns.
        """
        session = sess
        if isinstance(sess, DistributedSession):
            save_path = client_path(save_path)
            self._require_shards_visible(sess, save_path, require_shared_directory)
            session = self._session_for(sess, write_in_parallel=self._writes_in_parallel(sess, save_path))
        if self._write_version != saver_pb2.SaverDef.V2:  # the deprecated V1 format: TensorFlow's own save
            return super().save(session, save_path, global_step, latest_filename, meta_graph_suffix,
                                write_meta_graph, write_state, strip_default_attrs, save_debug_info)
        save_path = compat.as_str(save_path)
        if global_step is not None and not isinstance(global_step, compat.integral_types):
            global_step = training_util.global_step(session, global_step)
        staged = StagedSave(_checkpoint_prefix(save_path, global_step, self._pad_step_number), meta_graph_suffix,
                            durable=self._durable)
        remove_litter(staged.prefix)
        retained = (list(self._last_checkpoints), list(self._checkpoints_to_be_deleted))
        try:
            with staged.writing():
                written = super().save(
                    staged.session(session, self.saver_def), save_path, global_step, latest_filename,
                    meta_graph_suffix, write_meta_graph=False, write_state=False,
                    strip_default_attrs=strip_default_attrs, save_debug_info=save_debug_info,
                )
                if write_meta_graph:
                    with session.graph.as_default():
                        self.export_meta_graph(
                            staged.meta_graph_file, strip_default_attrs=strip_default_attrs,
                            save_debug_info=save_debug_info,
                        )
            if written is not None or write_meta_graph:
                staged.commit(with_data=written is not None)
            if written is not None and write_state:
                self._RecordLastCheckpoint(staged.prefix)
                checkpoint_management.update_checkpoint_state_internal(
                    save_dir=os.path.dirname(save_path),
                    model_checkpoint_path=staged.prefix,
                    all_model_checkpoint_paths=self.last_checkpoints,
                    latest_filename=latest_filename or "checkpoint",
                    save_relative_paths=self._save_relative_paths,
                )
        except BaseException:
            self._last_checkpoints, self._checkpoints_to_be_deleted = retained
            staged.discard()
            raise
        if written is None:
            return None
        if write_state and self._durable:
            # After the try: the checkpoint is complete and named; a failure to sync the
            # state raises without removing it.
            sync_state_file(os.path.dirname(save_path), latest_filename or "checkpoint")
        if write_state:
            self._MaybeDeleteOldCheckpoints(meta_graph_suffix=meta_graph_suffix)
        return staged.prefix

    def restore(self, sess, save_path):
        """``tf.compat.v1.train.Saver.restore``; into a distributed session it writes
        every part and every mirror of each variable (a relative ``save_path`` is
        resolved against the client's working directory).

        Where every task holding a copy sees the checkpoint the client sees
        (:func:`~.visibility.sees_checkpoint`: a shared filesystem, or the same files
        at the same path on each host), each task reads the values of its own copies
        (:func:`~.saveables.local_restore`), so no value crosses the network. Otherwise
        an unsharded restore reads on the chief, as TensorFlow's does, and a sharded one
        first checks that every task reading a shard sees the checkpoint
        (:func:`~.visibility.require_visible_checkpoint`; else
        :class:`~.visibility.CheckpointNotShared`, and nothing is restored)."""
        if not isinstance(sess, DistributedSession):
            return super().restore(sess, save_path)
        save_path = client_path(save_path)
        read_locally = self._reads_locally(sess, save_path)
        if not read_locally:
            self._require_shards_visible(sess, save_path, require_visible_checkpoint)
        return super().restore(self._session_for(sess, read_locally), save_path)

    def _require_shards_visible(self, sess: DistributedSession, save_path: Any,
                                check: Callable[[DistributedSession, str, tuple[str, ...]], None]) -> None:
        """Run ``check(sess, save_path, tasks)`` for a sharded Saver (a ``save_path``
        that is no path is left to TensorFlow to report)."""
        tasks = self._counterpart(sess).shard_tasks
        if tasks and isinstance(save_path, str):
            check(sess, save_path, tasks)


def _checkpoint_prefix(save_path: str, global_step: int | None, pad_step_number: bool) -> str:
    """The prefix TensorFlow's Saver names a checkpoint with."""
    if global_step is None:
        return save_path
    return f"{save_path}-{global_step:08d}" if pad_step_number else f"{save_path}-{global_step:d}"
