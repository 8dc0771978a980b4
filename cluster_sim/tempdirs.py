"""Temporary directories that name their owner, so that interrupted runs leave none behind.

:func:`owned_temp_dir` makes ``{family}-{kind}-pid{PID}-{random}`` in the system
temporary directory (``$TMPDIR``, else ``/tmp``); its owner removes it with
:func:`remove_owned` when done. Two mechanisms cover owners that never get there:

* **SIGTERM.** The first directory made in a process's main thread installs a SIGTERM
  handler, if SIGTERM still has its default action. The handler removes the directories
  this process owns, then restores the default action and sends itself SIGTERM again:
  the process still ends as a SIGTERM ends it (no Python cleanup, exit status -15), only
  without the directories. Its simulated nodes die with it (``PR_SET_PDEATHSIG``).
  Python runs signal handlers in the main thread between bytecodes, so a main thread
  blocked in one long C call (a TensorFlow op) is removed only when that call returns.
* **SIGKILL** cannot be caught. The next :func:`owned_temp_dir` of the same family on
  this machine (any process: the next cluster start, the next conformance run) first
  removes the family's directories whose owner process no longer exists. A directory
  whose owner's pid has been reused by a live process stays until that process is gone.
  Processes that share the temporary directory but not the pid namespace (containers
  with a common ``/tmp``) would see each other's directories as stale: give them
  distinct ``$TMPDIR`` values.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

_OWNED = re.compile(r"-pid(\d+)-[a-z0-9_]+$")  # mkdtemp's random part has no '-'

_live: dict[Path, int] = {}  # directory -> the pid of the process that made it
_swept: set[str] = set()
_lock = threading.Lock()


def owned_temp_dir(family: str, kind: str) -> Path:
    """A new directory ``{family}-{kind}-pid{PID}-XXXXXXXX`` in the temporary directory,
    after removing the family's stale directories (their owner process is gone)."""
    with _lock:
        if family not in _swept:
            _swept.add(family)
            remove_stale(family)
        path = Path(tempfile.mkdtemp(prefix=f"{family}-{kind}-pid{os.getpid()}-"))
        _live[path] = os.getpid()
    _remove_on_sigterm()
    return path


def remove_owned(path: Path) -> None:
    """Remove a directory made by :func:`owned_temp_dir` (and forget it)."""
    with _lock:
        _live.pop(Path(path), None)
    shutil.rmtree(path, ignore_errors=True)


def remove_stale(family: str, directory: str | Path | None = None) -> list[Path]:
    """Remove the directories of ``family`` in ``directory`` (default: the temporary
    directory) whose owner process is gone; return them."""
    root = Path(directory or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        candidates = [p for p in root.iterdir() if p.name.startswith(f"{family}-")]
    except OSError:
        return removed
    for path in candidates:
        match = _OWNED.search(path.name)
        if match is None or not path.is_dir() or path.is_symlink():
            continue
        owner = int(match.group(1))
        if owner != os.getpid() and not _alive(owner):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove_on_sigterm() -> None:
    """Install the SIGTERM handler once, where Python allows it and nobody else handles SIGTERM."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: Any) -> None:
    pid = os.getpid()
    for path, owner in list(_live.items()):
        if owner == pid:  # a forked child does not remove its parent's directories
            shutil.rmtree(path, ignore_errors=True)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(pid, signal.SIGTERM)
