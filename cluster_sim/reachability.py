"""Short, bounded checks that the tasks of a cluster are there, which TensorFlow lacks.

TensorFlow waits out the whole operation timeout for a task that is not there, then
raises ``DeadlineExceededError`` without naming it: when it creates a session, the
chief's master waits for every worker it has to use; and the client makes every call
to the chief's master with gRPC's wait-for-ready and retries it while the chief is
unavailable (``GrpcRemoteMaster::CallWithRetry`` in TensorFlow's source), so a dead chief
is never reported before the deadline. These checks answer in seconds and say which
task failed:

* :func:`connection_problems`: a TCP connection to each task's server. A port where
  nothing listens refuses in well under a millisecond; a host that does not answer
  at all fails after ``timeout_s``. The kernel accepts connections for a process
  that is alive but stopped (SIGSTOP), and for any program on the port.
* :func:`answer_problems`: one tiny op on each task through the chief (a session
  limited to the chief and that task), within ``timeout_s``: what proves that the
  task's TensorFlow server answers and that the chief can use it. About 10 ms per task
  on loopback.
* :class:`ChiefWatch`: runs calls on a session and probes the chief's port while a
  call lasts, to report a dead chief in seconds.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

#: The bound of a TCP connection attempt made by :func:`connection_problems`.
CONNECT_TIMEOUT_S = 2.0
#: The bound of :func:`answer_problems`.
ANSWER_TIMEOUT_S = 3.0
#: A call on the cluster still running after this long has the chief's port probed...
CHIEF_CHECK_AFTER_S = 1.0
#: ... this often (each probe a TCP connection bounded by the same time) ...
CHIEF_CHECK_EVERY_S = 0.5
#: ... and fails when the chief refuses a connection, or after this many probes in a row
#: without any answer (a host that is down).
CHIEF_MISSES = 3


class Refused(str):
    """A connection problem that is certain: nothing listens on that port."""


def connection_problem(host: str, port: int, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """None if a TCP connection to ``host:port`` opens within ``timeout_s``, else why not
    (a :class:`Refused` when nothing listens there)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except ConnectionRefusedError:
        return Refused("connection refused: no server listens there")
    except TimeoutError:
        return f"no answer to a connection within {timeout_s:g} s"
    except OSError as error:
        if error.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return f"host unreachable ({error.strerror})"
        return f"cannot connect: {error.strerror or error}"


def connection_problems(endpoints: Sequence[tuple[str, int]], timeout_s: float = CONNECT_TIMEOUT_S) -> dict[int, str]:
    """Connect to every ``(host, port)`` at once; return {index in ``endpoints``: problem}
    for those that failed, within about ``timeout_s`` in all."""
    if not endpoints:
        return {}
    with ThreadPoolExecutor(max_workers=min(len(endpoints), 64)) as pool:
        problems = list(pool.map(lambda endpoint: connection_problem(endpoint[0], endpoint[1], timeout_s), endpoints))
    return {i: problem for i, problem in enumerate(problems) if problem is not None}


def answer_problems(target: str, job: str, chief: int, tasks: Sequence[int],
                    timeout_s: float = ANSWER_TIMEOUT_S) -> dict[int, str]:
    """Run one op on each task of ``tasks`` through the chief's ``target``, all at once;
    return {task: problem} for those that did not answer within ``timeout_s``.

    A probe that fails is tried again until the bound: the chief's connection to a
    server that started after it can be unavailable for up to a second (gRPC's
    reconnection backoff). A probe still running at the bound counts as not answered
    and is left to finish on its own (its session's timeout is what remained of the
    bound): the call takes at most ``timeout_s``.
    """
    import tensorflow as tf

    deadline = time.monotonic() + timeout_s
    problems: dict[int, str] = {}
    answered: set[int] = set()
    lock = threading.Lock()

    def probe(task: int) -> None:
        graph = tf.Graph()
        with graph.as_default(), tf.device(f"/job:{job}/task:{task}/device:CPU:0"):
            start = tf.compat.v1.placeholder(tf.float32, [])
            result = start + 1.0  # fed, so that it cannot be folded on the chief
        filters = sorted({f"/job:{job}/task:{chief}", f"/job:{job}/task:{task}"})
        while (remaining := deadline - time.monotonic()) > 0.05:
            config = tf.compat.v1.ConfigProto(operation_timeout_in_ms=int(remaining * 1000), device_filters=filters)
            try:
                with tf.compat.v1.Session(target, graph=graph, config=config) as session:
                    session.run(result, {start: 1.0})
            except tf.errors.OpError as error:
                why = (f"within {timeout_s:g} s" if isinstance(error, tf.errors.DeadlineExceededError)
                       else f"({type(error).__name__}: {error.message.splitlines()[0]})")
                with lock:
                    problems[task] = f"its TensorFlow server did not run an op for the chief {why}"
                time.sleep(min(0.2, max(deadline - time.monotonic(), 0.0)))
                continue
            with lock:
                answered.add(task)
            return

    threads = {task: threading.Thread(target=probe, args=(task,), name=f"probe-task{task}", daemon=True)
               for task in tasks}
    for thread in threads.values():
        thread.start()
    for thread in threads.values():
        thread.join(max(deadline - time.monotonic(), 0.0))
    with lock:
        return {
            task: problems.get(task, f"its TensorFlow server did not run an op for the chief within {timeout_s:g} s")
            for task in tasks if task not in answered
        }


class ChiefWatch:
    """Runs calls on a cluster and reports a dead chief in seconds, not at the deadline.

    The client's session talks to the master on the chief's server, and TensorFlow
    makes those calls wait for the chief and retry until the operation timeout
    (see the module's doc): a step that needs a dead worker fails in
    milliseconds (the live master reports it), one whose chief died waits the whole
    timeout and says only ``Deadline Exceeded``. So each call runs in a helper thread
    while the calling thread waits; once the call has run for
    :data:`CHIEF_CHECK_AFTER_S`, the chief's port is probed every
    :data:`CHIEF_CHECK_EVERY_S`. A refused connection (the chief's process is gone) or
    :data:`CHIEF_MISSES` probes in a row without an answer (its host is down) raise
    ``tf.errors.UnavailableError`` naming the chief: within about 1.5 s of the chief's
    death for a dead process, about 5 s for a host that stopped answering. The
    abandoned call ends at TensorFlow's deadline in the background. A long step on a
    live chief is never cut short (its timeout stays the operation timeout), nor is a
    paused chief (its kernel still accepts connections) reported before the timeout.
    """

    def __init__(self, target: str, timeout_ms: int = 0):
        address = target.split("://", 1)[-1]
        host, _, port = address.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port) if port.isdigit() else None
        self.timeout_ms = timeout_ms
        self.lost = False  # set once the chief was found gone

    def call(self, what: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)``, or ``tf.errors.UnavailableError`` once the chief
        is found gone (``what`` names the call in the message)."""
        import tensorflow as tf

        if self.port is None:  # not a grpc:// target of a server: nothing to watch
            return function(*args, **kwargs)
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                outcome["value"] = function(*args, **kwargs)
            except BaseException as error:  # re-raised in the calling thread
                outcome["error"] = error
            finally:
                done.set()

        threading.Thread(target=run, name=f"autodist-{what}", daemon=True).start()
        if not done.wait(CHIEF_CHECK_AFTER_S):
            misses = 0
            while not done.wait(CHIEF_CHECK_EVERY_S):
                problem = connection_problem(self.host, self.port, CHIEF_CHECK_EVERY_S)
                if done.is_set():
                    break
                misses = misses + 1 if problem else 0
                if problem and (isinstance(problem, Refused) or misses >= CHIEF_MISSES):
                    self.lost = True
                    raise tf.errors.UnavailableError(None, None, self._message(what, problem))
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def _message(self, what: str, problem: str) -> str:
        waited = f" ({self.timeout_ms / 1000:g} s)" if self.timeout_ms else ""
        return (
            f"{what} failed: the chief node's server at {self.host}:{self.port} (task 0, where this session's "
            f"master runs) is gone: {problem}. TensorFlow would have waited for the operation timeout{waited} "
            "without saying so. The session is lost with the chief: restart the node (`cluster-sim node` on "
            "its host, or LocalCluster.restart), then create a new session and restore the latest checkpoint."
        )
