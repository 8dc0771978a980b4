"""The plain-TensorFlow witness, kept running: one process per test session, not per case.

:class:`Witness` starts ``python -m autodist_verify.plain_tf --forbid MODULE worker``
once and sends it jobs (restore and train a checkpoint, load and train a SavedModel,
run a signature as ``saved_model_cli`` does). The process never imports the
implementation under test and checks that after every job; each job builds a new
graph and session, so no state passes between cases. Importing TensorFlow costs
seconds per process, which a fresh process per case paid every time.

A job that fails raises :class:`WitnessError` with the worker's traceback and the
end of its log; so does a job during which the worker died (plain TensorFlow crashed
on the files it was given). A worker that cannot start, or a job that does not finish
within the timeout, raises :class:`WitnessUnavailable`: the harness failed, not the
files. A worker that died or hung is replaced before the next job.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
from typing import Any

DEFAULT_TIMEOUT_S = 300.0
LOG_TAIL_CHARS = 3000


class WitnessError(RuntimeError):
    """A witness job failed: plain TensorFlow could not use what it was given."""


class WitnessUnavailable(RuntimeError):
    """The witness process could not start, or did not answer in time."""


class Witness:
    """A persistent plain-TensorFlow worker that never imports ``forbidden``.

    Args:
        forbidden: the module of the implementation under test.
        timeout_s: how long one job (or the worker's start) may take.
    """

    def __init__(self, forbidden: str, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.forbidden = forbidden
        self.timeout_s = timeout_s
        self._process: subprocess.Popen | None = None
        self._log = None

    def run(self, job: str, **options: Any) -> None:
        """Run one job (``checkpoint``, ``savedmodel`` or ``signature``; options as
        the ``plain_tf`` command's, with underscores) and wait for it."""
        process = self._running()
        log_start = self._log_end()
        request = json.dumps({"job": job, "options": {k: str(v) for k, v in options.items() if v is not None}})
        try:
            process.stdin.write(request + "\n")
            process.stdin.flush()
        except BrokenPipeError:
            tail = self._log_tail(log_start)
            self._stop(kill=True)
            raise WitnessUnavailable(f"the witness process died before job {job!r}:\n{tail}") from None
        answer = self._answer(f"job {job!r}", log_start)
        if not answer.get("ok"):
            raise WitnessError(f"plain TensorFlow witness, job {job!r} failed:\n{answer.get('error', '')}"
                               f"{self._log_tail(log_start)}")

    @property
    def pid(self) -> int | None:
        """The worker process's pid (None before its first job and after ``close``);
        a worker that died is replaced by the next job."""
        return None if self._process is None else self._process.pid

    def close(self) -> None:
        """Stop the worker process."""
        self._stop()

    def __enter__(self) -> Witness:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the worker process ------------------------------------------------------------

    def _running(self) -> subprocess.Popen:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._stop()
        self._log = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "autodist_verify.plain_tf", "--forbid", self.forbidden, "worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")},
        )
        self._answer("start", 0)
        return self._process

    def _answer(self, what: str, log_start: int) -> dict[str, Any]:
        """The worker's next answer line, within the timeout."""
        process = self._process
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout=self.timeout_s)
        line = process.stdout.readline() if ready else ""
        if line:
            return json.loads(line)
        tail = self._log_tail(log_start)
        self._stop(kill=True)
        if not ready:
            raise WitnessUnavailable(f"the witness process took longer than {self.timeout_s:.0f} s ({what}):\n{tail}")
        if what == "start":
            raise WitnessUnavailable(f"the witness process exited while starting:\n{tail}")
        raise WitnessError(f"the witness process died during {what} (plain TensorFlow crashed on it):\n{tail}")

    def _log_end(self) -> int:
        return os.fstat(self._log.fileno()).st_size if self._log is not None else 0

    def _log_tail(self, start: int) -> str:
        """What the worker wrote to its log since ``start`` (the last few thousand characters)."""
        if self._log is None:
            return ""
        size = self._log_end() - start
        text = os.pread(self._log.fileno(), size, start).decode(errors="replace") if size > 0 else ""
        return text[-LOG_TAIL_CHARS:]

    def _stop(self, kill: bool = False) -> None:
        process, self._process = self._process, None
        if process is not None:
            if kill:
                process.kill()
            try:
                process.stdin.close()
            except BrokenPipeError:
                pass
            try:
                process.wait(timeout=10)  # it exits at the end of its input
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
