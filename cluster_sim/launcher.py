"""Fast node starts: fork node processes from a process that has already imported TensorFlow.

A node spawned afresh spends most of its start importing TensorFlow (2-5 s of CPU).
Whoever starts many clusters (the conformance suite starts one per generated resource
spec) can share a :class:`NodeLauncher`: one *template* process, spawned once, sets the
nodes' environment (with or without the determinism settings, fixed per launcher),
imports TensorFlow, and then forks one child per node
it is asked for. Each child is still one OS process per node running its own
``tf.distribute.Server`` (:func:`cluster_sim.node.run_node`); only the import is shared.

Forking after the import is safe because the template never starts TensorFlow's
runtime (no session, no server, no thread pool of TensorFlow's): its only other thread
is OpenBLAS's, which registers fork handlers.

Lifetimes chain: the template dies with the process that started it, and every node
with the template (``PR_SET_PDEATHSIG``). A forked node is the template's child, not
the caller's: :class:`ForkedNode` gives it the ``pid``/``is_alive``/``join``/``exitcode``
surface of a process object, from the template's reports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any

import multiprocess
import psutil
from multiprocess.connection import Connection
from multiprocess.reduction import recv_handle, send_handle

from cluster_sim.determinism import node_environment
from cluster_sim.node import die_with_parent, run_node

_START_TIMEOUT_S = 120.0


@contextlib.contextmanager
def main_module_hidden():
    """Keep spawned nodes from re-running the parent's ``__main__`` script.

    The spawn start method re-imports the parent's main module in the child unless it
    cannot find it. A node's entry point lives in :mod:`cluster_sim.node`, so the child
    never needs it, and user scripts need no ``if __name__ == "__main__"`` guard.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {key: main.__dict__[key] for key in ("__file__", "__spec__") if key in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


class LauncherError(RuntimeError):
    """The template process could not start or answer."""


class ForkedNode:
    """A node process forked by the template, seen from the process that asked for it."""

    def __init__(self, pid: int):
        self.pid = pid
        self._process = psutil.Process(pid)

    def is_alive(self) -> bool:
        try:
            return self._process.is_running() and self._process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_alive() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.01)

    @property
    def exitcode(self) -> int | None:
        """Not known to this process (the template reaps its children)."""
        return None


class NodeLauncher:
    """A template process that forks node processes on request; see the module doc.

    Start and use it from one thread that outlives it (normally the main thread):
    ``PR_SET_PDEATHSIG`` ties the template's life to that thread.

    Args:
        deterministic: the template imports TensorFlow under the determinism settings
            (:mod:`cluster_sim.determinism`); only clusters with the same setting may use it.
    """

    def __init__(self, deterministic: bool = False) -> None:
        self.deterministic = deterministic
        self._lock = threading.Lock()
        self._control: Connection | None = None
        self._template: Any = None

    def launch(self, run_node_args: tuple, report: Connection) -> ForkedNode:
        """Fork one node running ``run_node(*run_node_args, parent_pid, report)``.

        ``report`` is the write end of the caller's readiness pipe; the node gets its
        own copy and the caller should close its copy afterwards.
        """
        with self._lock:
            control = self._running()
            try:
                control.send(run_node_args)
                send_handle(control, report.fileno(), self._template.pid)
                if not control.poll(_START_TIMEOUT_S):
                    raise LauncherError(f"the node template did not answer within {_START_TIMEOUT_S:g} s")
                pid = control.recv()
            except (EOFError, OSError) as error:
                self._stop()
                raise LauncherError(f"the node template process died: {error}") from error
        return ForkedNode(pid)

    def close(self) -> None:
        """Stop the template process (nodes it forked die with it)."""
        with self._lock:
            self._stop()

    def __enter__(self) -> NodeLauncher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _running(self) -> Connection:
        if self._template is not None and self._template.is_alive():
            return self._control
        self._stop()
        context = multiprocess.get_context("spawn")
        ours, theirs = context.Pipe(duplex=True)  # a socket pair: it can carry file descriptors
        template = context.Process(target=_template_main, args=(theirs, os.getpid(), self.deterministic),
                                   name="cluster_sim-node-template", daemon=True)
        with main_module_hidden():
            template.start()
        theirs.close()
        if not ours.poll(_START_TIMEOUT_S):
            template.kill()
            raise LauncherError(f"the node template did not import TensorFlow within {_START_TIMEOUT_S:g} s")
        try:
            ours.recv()
        except EOFError:
            raise LauncherError(f"the node template exited with code {template.exitcode} while starting") from None
        self._control, self._template = ours, template
        return ours

    def _stop(self) -> None:
        if self._template is not None:
            if self._template.is_alive():
                os.kill(self._template.pid, signal.SIGKILL)
            self._template.join(timeout=10)
            self._template = None
        if self._control is not None:
            self._control.close()
            self._control = None


def _reap_children(signum: int, frame: Any) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _template_main(control: Connection, parent_pid: int, deterministic: bool) -> None:
    """The template: import TensorFlow once, then fork a node per request until EOF."""
    die_with_parent(parent_pid)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.environ.update(node_environment(deterministic))
    import tensorflow  # noqa: F401 - the import every forked node shares

    signal.signal(signal.SIGCHLD, _reap_children)
    control.send("ready")
    template_pid = os.getpid()
    while True:
        try:
            run_node_args = control.recv()
            report_fd = recv_handle(control)
        except (EOFError, OSError):
            return
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                control.close()
                run_node(*run_node_args, template_pid, Connection(report_fd))
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            finally:
                os._exit(code)  # never return into the template's loop
        os.close(report_fd)
        control.send(pid)
