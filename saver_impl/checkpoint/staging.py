"""Where a save writes before its checkpoint exists, and the paths it is given.

A save writes the checkpoint's data, index and MetaGraph under a *staging prefix* beside
the checkpoint, ``<prefix>_temp_<16 hex digits>``, unique to that save, and renames them
to the checkpoint's own names only once all three are complete (the index last, as a
checkpoint exists when its index does). The Saver writes the checkpoint state file after
that. So:

* a checkpoint named by the state file has its data, index and MetaGraph;
* a save that fails changes nothing under the checkpoint's own names (a checkpoint saved
  before under the same prefix stays whole), and its staging files are removed;
* a writer of an aborted save that finishes late (a node resumed after a pause) writes
  under its own staging prefix: it never touches the checkpoint or a later save's files,
  and what it left by the next save of the same prefix is removed then.

A *durable* save (``Saver(..., durable=True)``) also syncs what it wrote before ``save``
returns: each staged file is fsynced before it is renamed, the directory after the
renames (so the checkpoint's names are on the storage before the state file names it),
and the state file and the directory again after the state file is written. While the
save writes, the client asks the kernel to start writing the staged files out
(:class:`_EarlyWriteback`), so writing and flushing overlap as in a raw write with
fsync, and the final fsyncs wait for the tail only.

The client syncs the files as its filesystem sees them. On one host (the simulated
cluster, nodes on the client's host) that covers everything the nodes wrote, as the
page cache is the host's. Where nodes on other hosts write to a shared filesystem, the
client's fsync covers what that filesystem has received from them; whether a remote
writer's close hands its data over (NFS flushes on close) is the filesystem's
guarantee, not the Saver's. A URL (``gs://...``) is refused: the client has no fsync
for TensorFlow's filesystems of URLs.

Paths a distributed session saves to or restores from are made absolute on the client
(:func:`client_path`): a relative path would otherwise be resolved by each node in its
own working directory, splitting one checkpoint between the node's and the client's.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import tensorflow as tf
from tensorflow.python.checkpoint import checkpoint_management
from tensorflow.python.client.session import SessionInterface
from tensorflow.python.util import compat

_STAGING_TAG = "_temp_"


def client_path(path: Any) -> Any:
    """``path`` made absolute against the client's working directory; a URL
    (``gs://...``) and anything that is not a ``str`` or ``bytes`` are left as they are
    (TensorFlow reports a bad type)."""
    if not isinstance(path, (str, bytes)):
        return path
    text = compat.as_str(path)
    return text if "://" in text else os.path.abspath(text)


def remove_litter(prefix: str) -> None:
    """Remove what aborted saves of ``prefix`` left: files and directories named
    ``<prefix>_temp_<16 hex digits>...``. Best effort: what cannot be removed stays."""
    directory, base = os.path.split(prefix)
    pattern = re.compile(re.escape(base) + _STAGING_TAG + r"[0-9a-f]{16}(?:[._].*)?")
    try:
        names = tf.io.gfile.listdir(directory or ".")
    except tf.errors.OpError:
        return
    for name in names:
        if pattern.fullmatch(name.rstrip("/")):
            _remove(os.path.join(directory, name.rstrip("/")))


def fsync_path(path: str) -> None:
    """Flush ``path`` to the storage: a file's data and metadata, or a directory's
    entries (what makes a rename or a new name in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_state_file(save_dir: str, latest_filename: str) -> None:
    """Make the checkpoint state file ``save_dir/latest_filename`` durable: the file,
    then the directory (TensorFlow writes the state file to a temporary name and renames
    it)."""
    fsync_path(os.path.join(save_dir, latest_filename))
    fsync_path(save_dir or ".")


def _start_writeback_call() -> Callable[[int], Any] | None:
    """Linux's ``sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)``: start writing a
    file's dirty pages to the storage, waiting for none (None where libc lacks it)."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    sync_file_range_write = 2
    return lambda fd: function(fd, 0, 0, sync_file_range_write)


_start_writeback = _start_writeback_call()


class _EarlyWriteback:
    """While a durable save writes, a thread starts the writeback of its staged files
    every ``interval_s``: the files named ``<staging>...`` in the checkpoint's directory
    and in its subdirectories of that name (a sharded save's ``<staging>_temp``). A
    file's writers rename it (``.tempstate`` names, a sharded save's merge), so files
    are known by inode. Durability does not rest on it (the fsyncs do); it makes them
    short.
    """

    def __init__(self, staging: str, start_writeback: Callable[[int], Any], interval_s: float = 0.05):
        self._directory, self._base = os.path.split(staging)
        self._start_writeback = start_writeback
        self._interval_s = interval_s
        self._files: dict[tuple[int, int], int] = {}  # (device, inode) -> an open descriptor
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="durable-save-writeback", daemon=True)

    def __enter__(self) -> _EarlyWriteback:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        for fd in self._files.values():
            os.close(fd)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            with contextlib.suppress(OSError):  # a pass that fails is tried again; the fsyncs run anyway
                for path in self._staged_files():
                    self._track(path)
                for fd in self._files.values():
                    self._start_writeback(fd)

    def _staged_files(self) -> Iterator[str]:
        with os.scandir(self._directory or ".") as entries:
            for entry in entries:
                if not entry.name.startswith(self._base):
                    continue
                if entry.is_dir():
                    with contextlib.suppress(OSError), os.scandir(entry.path) as inner:
                        yield from [e.path for e in inner if e.is_file()]
                elif entry.is_file():
                    yield entry.path

    def _track(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return  # renamed or removed since the listing: seen under its next name
        status = os.fstat(fd)
        key = (status.st_dev, status.st_ino)
        if key in self._files:
            os.close(fd)
        else:
            self._files[key] = fd


def _remove(path: str) -> None:
    try:
        if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
        else:
            tf.io.gfile.remove(path)
    except tf.errors.OpError:
        pass  # litter that cannot be removed is no reason to fail a save


class StagedSave:
    """One save of the checkpoint ``prefix``: its staging prefix, the commit that gives
    the staged files the checkpoint's names, and the discard that removes them.

    Args:
        prefix: the checkpoint prefix (``save_path``, with its global step).
        meta_graph_suffix: the MetaGraph file's extension, as the Saver's ``save`` takes it.
        durable: :meth:`commit` fsyncs each staged file before renaming it, and the
            directory after the renames (see the module doc). A URL prefix is refused
            with a ``ValueError``.
    """

    def __init__(self, prefix: str, meta_graph_suffix: str, durable: bool = False):
        if durable and "://" in prefix:
            raise ValueError(f"a durable save syncs files of a local filesystem; {prefix!r} is a URL: save it "
                             "with durable=False (the URL's filesystem decides when a write is durable)")
        self.prefix = prefix
        self.durable = durable
        # 64 random bits: unique enough, and short, as file names have a length limit.
        self.staging = f"{prefix}{_STAGING_TAG}{uuid.uuid4().hex[:16]}"
        self.meta_graph_file = checkpoint_management.meta_graph_filename(self.staging, meta_graph_suffix)
        self._created: list[str] = []

    def session(self, session: Any, saver_def: Any) -> SessionInterface:
        """``session`` as TensorFlow's save code sees it: the save fed ``prefix`` writes
        under the staging prefix."""
        return _StagingSession(session, saver_def, self.prefix, self.staging)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """The save writes its files in this context: for a durable save, their
        writeback to the storage starts as they are written (:class:`_EarlyWriteback`)."""
        if not self.durable or _start_writeback is None:
            yield
            return
        with _EarlyWriteback(self.staging, _start_writeback):
            yield

    def commit(self, with_data: bool) -> None:
        """Rename every staged file to the checkpoint's name, the index last.

        ``with_data``: the save wrote variables, so the staged index must be there; it is
        missing where the nodes that wrote it do not share the directory with the client
        (``NotFoundError``, and nothing is renamed).
        """
        directory, base = os.path.split(self.staging)
        staged = sorted(
            (name for name in tf.io.gfile.listdir(directory or ".") if name.startswith(f"{base}.")),
            key=lambda name: name == f"{base}.index",
        )
        if with_data and f"{base}.index" not in staged:
            raise tf.errors.NotFoundError(
                None, None, f"{self.staging}.index, just written by the save, is not in {directory or '.'} as this "
                            "client sees it: save to a directory the client and the nodes share")
        if self.durable:
            for name in staged:
                fsync_path(os.path.join(directory, name))
        for name in staged:
            final = self.prefix + name[len(base):]
            if not tf.io.gfile.exists(final):
                self._created.append(final)
            tf.io.gfile.rename(os.path.join(directory, name), final, overwrite=True)
        if self.durable and staged:
            fsync_path(directory or ".")

    def discard(self) -> None:
        """Remove the staged files and the files :meth:`commit` created (best effort):
        the directory is left as it was before the save."""
        remove_litter(self.prefix)
        for path in self._created:
            _remove(path)


class _StagingSession(SessionInterface):
    """A session whose Saver save, fed the checkpoint prefix, is fed the staging prefix."""

    def __init__(self, session: Any, saver_def: Any, prefix: str, staging: str):
        self._session = session
        self._save_tensor = saver_def.save_tensor_name
        self._filename_tensor = saver_def.filename_tensor_name
        self._prefix = prefix
        self._staging = staging

    @property
    def graph(self) -> Any:
        return self._session.graph

    @property
    def sess_str(self) -> str:
        return self._session.sess_str

    def run(self, fetches, feed_dict=None, options=None, run_metadata=None):
        if fetches == self._save_tensor and feed_dict:
            feed_dict = {key: self._staged(key, value) for key, value in feed_dict.items()}
        return self._session.run(fetches, feed_dict, options, run_metadata)

    def _staged(self, key: Any, value: Any) -> Any:
        if getattr(key, "name", key) != self._filename_tensor:
            return value
        if compat.as_str(value) != self._prefix:
            # TensorFlow named the checkpoint otherwise than the Saver computed it.
            raise RuntimeError(f"the save was fed {compat.as_str(value)!r}, expected {self._prefix!r}")
        return self._staging
