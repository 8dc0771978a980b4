"""One path, a different directory in every process: hosts that share no filesystem.

Separate hosts can all have a directory at the same path, ``/data/ckpt``, each on its own
disk: a file one host writes there is not there for the others. :func:`private_view`
reproduces that on one machine, without root: it makes a symbolic link to
``/proc/self/cwd``, which the kernel resolves in each process to that process's own
working directory. Under the link, one absolute path leads each node with a private
scratch directory (its working directory: ``LocalCluster(private_scratch=True)``,
``cluster-sim node --scratch-dir DIR``) into its own scratch directory, and the client
into its own working directory. Nothing is imitated: every open, write and rename goes
through the kernel to that process's directory.

Limits: Linux only (procfs); a process that changes its working directory changes what
it sees there, so tools that walk a path by changing directory (coreutils' ``mkdir -p``)
do not create under the link what the path says (Python's and TensorFlow's file
functions do not change directory); and a path resolved in one process
(``os.path.realpath``) and handed to another leads the other into the first one's
directory.
"""

from __future__ import annotations

import os
from pathlib import Path

_OWN_WORKING_DIRECTORY = "/proc/self/cwd"


def private_view(link: str | Path) -> Path:
    """Create a symbolic link at ``link`` that each process resolves to its own working
    directory, and return its absolute path (unresolved).

    Raises:
        FileExistsError: something is at ``link`` already.
        OSError: the system has no ``/proc/self/cwd`` (not Linux).
    """
    if not os.path.isdir(_OWN_WORKING_DIRECTORY):
        raise OSError(f"private_view needs {_OWN_WORKING_DIRECTORY} (Linux procfs), which this system lacks")
    path = Path(os.path.abspath(link))
    path.symlink_to(_OWN_WORKING_DIRECTORY, target_is_directory=True)
    return path
