"""Port reservation for simulated nodes.

A TensorFlow gRPC server cannot bind a port that another socket holds (not even with
``SO_REUSEPORT``), so a port cannot be kept open for it. Instead a port is chosen at
random outside Linux's ephemeral range (so outgoing connections do not take it), tested
by binding it, and *reserved* with an exclusive ``flock`` on a lock file shared by every
process of this machine: two nodes, even of clusters in different processes, never
pick the same port. The lock is held until the cluster closes.

A TensorFlow server listens on the wildcard address (every interface), whatever address
its node has, so a port is reserved for the whole machine, not per address, and tested
by binding the wildcard address.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import socket
import tempfile
from pathlib import Path

PORT_RANGE = (20000, 32767)
LOCK_DIR = Path(tempfile.gettempdir()) / "cluster_sim-ports"


class PortReservation:
    """An exclusively locked, currently free port on one address."""

    def __init__(self, address: str, port: int, lock_fd: int):
        self.address = address
        self.port = port
        self._lock_fd = lock_fd

    def release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = -1


def _bindable(port: int) -> bool:
    """Whether ``port`` is free on every interface, as a TensorFlow server will need it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def reserve_port(address: str, attempts: int = 200) -> PortReservation:
    """Reserve a port for the node at ``address``, free on the whole machine; raises
    OSError if none is found."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    for _ in range(attempts):
        port = random.randint(*PORT_RANGE)
        fd = os.open(LOCK_DIR / f"{port}.lock", os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                continue
            raise
        if _bindable(port):
            os.ftruncate(fd, 0)
            os.write(fd, address.encode())  # for whoever inspects the lock directory
            return PortReservation(address, port, fd)
        os.close(fd)
    raise OSError(f"no free port found for {address} after {attempts} attempts")
