"""What TensorFlow's Saver code is handed instead of a distributed session.

``tf.compat.v1.train.Saver.save`` and ``restore`` run the Saver's own save tensor and
restore op by name (feeding its filename tensor), read ``global_step`` through
``sess.run`` and export ``sess.graph``'s MetaGraph. A :class:`CheckpointSession` runs
those names' distributed counterparts on the cluster and passes everything else to the
distributed session, so the session itself knows nothing of any Saver.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf
from tensorflow.python.client.session import SessionInterface
from tensorflow.python.util import compat

from saver_impl.checkpoint.parallel_save import ParallelSave
from saver_impl.errors import AutoDistError
from saver_impl.session import DistributedSession

# The definition traceback TensorFlow adds to a graph execution error, per node.
_DEFINED_AT = re.compile(
    r"^Detected at node '[^']*' defined at \(most recent call last\):\n(?:  .*\n)*?Node: '[^']*'\n", re.MULTILINE
)


def _name(element: Any) -> Any:
    return getattr(element, "name", element)


@dataclass
class Counterpart:
    """A Saver's distributed counterpart: its tensor and op names -> the distributed
    graph's, a check run on the checkpoint path before its restore op, the tasks that
    write and read a sharded checkpoint, the tasks holding copies a restore writes and
    the tasks holding the values a save writes (their CPU:0 devices), and functions
    building the restore that reads on the copies' tasks
    (:func:`~.saveables.local_restore`) and the unsharded save written by the values'
    tasks (:class:`~.parallel_save.ParallelSave`), each built on first use, then kept."""

    names: Mapping[str, Any]
    save_tensor: str
    restore_op: str
    before_restore: Callable[[str], None]
    build_local_restore: Callable[[], Any]
    build_parallel_save: Callable[[], ParallelSave]
    shard_tasks: tuple[str, ...] = ()
    copy_tasks: tuple[str, ...] = ()
    write_tasks: tuple[str, ...] = ()
    _local_restore: Any = field(default=None, init=False, repr=False)
    _parallel_save: ParallelSave | None = field(default=None, init=False, repr=False)

    def local_restore(self) -> Any:
        """The restore op that reads on the tasks holding the copies."""
        if self._local_restore is None:
            self._local_restore = self.build_local_restore()
        return self._local_restore

    def parallel_save(self) -> ParallelSave:
        """The unsharded save written by the tasks holding the values."""
        if self._parallel_save is None:
            self._parallel_save = self.build_parallel_save()
        return self._parallel_save


class CheckpointSession(SessionInterface):
    """A distributed session as one Saver's checkpoint code sees it.

    Args:
        session: the distributed session.
        graph: the graph whose MetaGraph a save writes.
        counterpart: the Saver's distributed counterpart.
        read_locally: the Saver's restore runs the counterpart's local restore (every
            task holding a copy sees the checkpoint), not TensorFlow's.
        write_in_parallel: the Saver's save runs the counterpart's parallel save (every
            task holding a value sees the checkpoint's directory), not TensorFlow's.
    """

    def __init__(self, session: DistributedSession, graph: Any, counterpart: Counterpart,
                 read_locally: bool = False, write_in_parallel: bool = False):
        self.session = session
        self._graph = graph
        self._counterpart = counterpart
        self._counterparts = dict(counterpart.names)
        self._write_in_parallel = write_in_parallel
        if read_locally:
            self._counterparts[counterpart.restore_op] = counterpart.local_restore()

    @property
    def graph(self) -> Any:
        return self._graph

    @property
    def sess_str(self) -> str:
        return self.session.sess_str

    def run(self, fetches, feed_dict=None, options=None, run_metadata=None):
        """The Saver's own save/restore by name on the cluster; anything else as the
        distributed session runs it."""
        if not isinstance(fetches, str) or fetches not in self._counterparts:
            return self.session.run(fetches, feed_dict, options, run_metadata)
        feeds, context = {}, ""
        for key, value in (feed_dict or {}).items():
            if _name(key) not in self._counterparts:
                raise AutoDistError(f"cannot feed {_name(key)!r} together with the Saver's {fetches!r}")
            feeds[self._counterparts[_name(key)]] = value
            if fetches == self._counterpart.restore_op:  # the only feed: the checkpoint path
                path = value.decode() if isinstance(value, bytes) else str(value)
                self._counterpart.before_restore(path)
                context = f"\n(restoring the checkpoint {path})"
        try:
            if fetches == self._counterpart.save_tensor and self._write_in_parallel:
                (path,) = feeds.values()  # the only feed of a save: the checkpoint prefix
                self._counterpart.parallel_save().run(self.session.raw_session, compat.as_str(path), options,
                                                      run_metadata)
                return compat.as_bytes(path)
            return self.session.raw_session.run(
                self._counterparts[fetches], feed_dict=feeds, options=options, run_metadata=run_metadata
            )
        except tf.errors.OpError as error:
            # TensorFlow's error, without where the counterpart's ops were built: that is
            # saver_impl's code, not the program's (the failing node is still named).
            raise type(error)(None, None, _DEFINED_AT.sub("", error.message) + context) from None
