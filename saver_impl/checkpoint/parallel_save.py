"""An unsharded save written in parallel by the tasks that hold the values.

TensorFlow's unsharded save is one ``SaveV2`` on one task: every value held elsewhere
first crosses the network to it, and that task holds all of them at once (at 1 GiB from
two nodes: half the model in memory, and the transfer before the write). Where every
task writing a value sees the checkpoint's directory as the client does (a shared
filesystem, :func:`~.visibility.shares_directory`), the Saver uses :class:`ParallelSave`
instead: each task runs one ``SaveV2`` of its own entries, on its CPU:0, into a part
``<prefix>_part-<n>``, all in one step; the client then merges the parts into the
single-file checkpoint ``prefix`` (:func:`~.bundle_merge.merge_into_single_file`).
The entries, their values and checks are the same saveables' as TensorFlow's save
writes, so the checkpoint holds the same keys and bytes; only their order in the data
file differs. The mirror checks run beside the writes instead of before them: a check
that fails fails the step, and as the Saver writes under a staging prefix
(:mod:`.staging`), the files of a failed save are discarded, never named.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from saver_impl.checkpoint.bundle_merge import merge_into_single_file
from saver_impl.checkpoint.plan import task_device
from saver_impl.checkpoint.saveables import PlannedSaveable


class ParallelSave:
    """The per-task ``SaveV2`` ops of ``saveables``, built in the current graph.

    Args:
        saveables: the Saver's saveables; each spec is written by the task of its device.
    """

    def __init__(self, saveables: Sequence[PlannedSaveable]):
        by_task: dict[str, list[PlannedSaveable]] = {}
        for saveable in saveables:
            (spec,) = saveable.specs
            by_task.setdefault(task_device(spec.device), []).append(saveable)
        self.tasks = tuple(sorted(by_task))
        self._prefixes = []
        # The mirror checks run beside the writes, in the same step: a failing check
        # fails the step, and the Saver then discards what the step wrote.
        self._saves = [check for saveable in saveables for check in saveable.mirror_checks]
        for n, task in enumerate(self.tasks):
            on_task = by_task[task]
            with tf.device(task):
                prefix = tf.compat.v1.placeholder(tf.string, [], name=f"part_{n}_prefix")
                self._saves.append(tf.raw_ops.SaveV2(
                    prefix=prefix, tensor_names=[s.specs[0].name for s in on_task],
                    shape_and_slices=[s.specs[0].slice_spec for s in on_task],
                    tensors=[s.unchecked_value for s in on_task], name=f"part_{n}_save"))
            self._prefixes.append(prefix)

    def run(self, session: Any, prefix: str, options: Any = None, run_metadata: Any = None) -> None:
        """Write the single-file checkpoint ``prefix`` through ``session`` (a raw
        TensorFlow session on the cluster): one step runs every task's save, then the
        parts are merged. With one task, it writes ``prefix`` itself."""
        if len(self.tasks) == 1:
            session.run(self._saves, {self._prefixes[0]: prefix}, options, run_metadata)
            return
        parts = [f"{prefix}_part-{n}" for n in range(len(self.tasks))]
        session.run(self._saves, dict(zip(self._prefixes, parts)), options, run_metadata)
        try:
            merge_into_single_file(parts, prefix)
        except OSError as error:  # raised as TensorFlow's own file writes would fail
            raise _tf_error(error, prefix) from error


# How TensorFlow's file system reports an errno (its ErrnoToCode), for the errnos a write,
# rename or removal can meet; any other is UNKNOWN, as there.
_ERRNO_ERRORS = {
    errno.ENOSPC: tf.errors.ResourceExhaustedError, errno.EDQUOT: tf.errors.ResourceExhaustedError,
    errno.EFBIG: tf.errors.OutOfRangeError, errno.ENOENT: tf.errors.NotFoundError,
    errno.EACCES: tf.errors.PermissionDeniedError, errno.EPERM: tf.errors.PermissionDeniedError,
    errno.EROFS: tf.errors.PermissionDeniedError, errno.EEXIST: tf.errors.AlreadyExistsError,
}


def _tf_error(error: OSError, prefix: str) -> tf.errors.OpError:
    """``error`` of merging the parts of ``prefix``, as the TensorFlow error of its errno."""
    kind = _ERRNO_ERRORS.get(error.errno, tf.errors.UnknownError)
    where = error.filename or prefix
    return kind(None, None, f"writing the checkpoint {prefix}: {where}: {error.strerror or error}")
