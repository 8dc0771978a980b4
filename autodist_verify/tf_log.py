"""Keeping TensorFlow's C++ log off the terminal of a command that starts TensorFlow processes."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO


@contextlib.contextmanager
def stderr_to(log_file: Path) -> Iterator[TextIO]:
    """Send this process's standard error (file descriptor 2) to ``log_file`` and yield
    a stream to the terminal's, for progress.

    TensorFlow's C++ code logs through absl before ``absl::InitializeLog()`` runs, which
    ``TF_CPP_MIN_LOG_LEVEL`` does not silence (``cudart_stub``, oneDNN and CPU feature
    notices at import, ``cuInit`` errors at the first session), and every process a
    command starts (node templates, nodes, pytest-xdist workers, the witness) inherits
    descriptor 2 before it redirects its own output to its log. A descriptor-level
    redirect catches them all; the terminal keeps the command's own output (the bench's
    table and progress; pytest's report, on standard output). When ``sys.stderr`` is not
    the process's descriptor 2 (a test runner captured it), it is yielded as it is.
    """
    try:
        is_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        is_fd2 = False
    if not is_fd2:
        yield sys.stderr
        return
    sys.stderr.flush()
    terminal_fd = os.dup(2)
    log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    terminal = os.fdopen(os.dup(terminal_fd), "w", buffering=1)
    try:
        yield terminal
    finally:
        sys.stderr.flush()
        terminal.close()
        os.dup2(terminal_fd, 2)
        os.close(terminal_fd)
