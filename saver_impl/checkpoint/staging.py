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

Paths a distributed session saves to or restores from are made absolute on the client
(:func:`client_path`): a relative path would otherwise be resolved by each node in its
own working directory, splitting one checkpoint between the node's and the client's.
"""

from __future__ import annotations

import os
import re
import uuid
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
    """

    def __init__(self, prefix: str, meta_graph_suffix: str):
        self.prefix = prefix
        # 64 random bits: unique enough, and short, as file names have a length limit.
        self.staging = f"{prefix}{_STAGING_TAG}{uuid.uuid4().hex[:16]}"
        self.meta_graph_file = checkpoint_management.meta_graph_filename(self.staging, meta_graph_suffix)
        self._created: list[str] = []

    def session(self, session: Any, saver_def: Any) -> SessionInterface:
        """``session`` as TensorFlow's save code sees it: the save fed ``prefix`` writes
        under the staging prefix."""
        return _StagingSession(session, saver_def, self.prefix, self.staging)

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
        for name in staged:
            final = self.prefix + name[len(base):]
            if not tf.io.gfile.exists(final):
                self._created.append(final)
            tf.io.gfile.rename(os.path.join(directory, name), final, overwrite=True)

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
