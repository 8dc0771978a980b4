"""AutoDist's environment variables, as ``saver_impl.const.ENV`` (AutoDist: ``autodist.const.ENV``).

Each member of :class:`ENV` is named after its environment variable, and ``.val`` reads
the variable now (not at import) with AutoDist's default and type: an unset *or empty*
variable gives the default; a flag is true only for the exact text ``True``, so
``"true"`` or ``"1"`` read as false, as in AutoDist::

    from saver_impl.const import ENV
    seed = 456 if ENV.AUTODIST_WORKER.val else 123

The one difference from AutoDist is who runs the user's program. AutoDist runs it on
the chief and then starts it again on every other node, telling each copy which worker
it is through ``AUTODIST_WORKER`` (and which strategy to load through
``AUTODIST_STRATEGY_ID``). saver_impl drives every node from **one** client process: the
nodes are TensorFlow servers that never run the user's program, and nothing sets these
two variables. So in saver_impl ``ENV.AUTODIST_WORKER.val`` is ``""`` (the program is
the chief) and ``ENV.AUTODIST_STRATEGY_ID.val`` is ``""`` unless the user set them
in the environment; a program that branches on them takes its chief branch.

Kept are the members a program may read; AutoDist's ``AUTODIST_PATCH_TF`` and
``AUTODIST_INTERNAL_TF`` select internals of AutoDist itself (patching TensorFlow, a
custom TensorFlow build) that have no counterpart here and are left out. saver_impl
itself reads none of these variables; the other members are offered so that programs
which read them (log level, test mode, data and resource-spec paths) keep working.
"""

from __future__ import annotations

import enum
import os
from typing import Any


class ENV(enum.Enum):
    """AutoDist's environment variables; ``ENV.NAME.val`` is the variable's current value.

    A member's value is ``(default, type, description)``; the description also keeps
    members with equal defaults distinct (an enum would otherwise merge them).
    """

    AUTODIST_WORKER = ("", str, "the address of the worker node running this copy of the program; "
                               "empty in the program that drives the cluster (always so in saver_impl)")
    AUTODIST_STRATEGY_ID = ("", str, "the id of the serialized strategy a worker copy loads (unused by saver_impl)")
    AUTODIST_MIN_LOG_LEVEL = ("INFO", str, "the minimum level of AutoDist's log messages")
    AUTODIST_IS_TESTING = ("False", bool, "whether AutoDist runs under its own tests (extra checks)")
    AUTODIST_DEBUG_REMOTE = ("False", bool, "whether remote processes are started in debug mode")
    SYS_DATA_PATH = ("", str, "a data directory for the program (read by programs, not by saver_impl)")
    SYS_RESOURCE_PATH = ("", str, "a resource-spec path for the program (read by programs, not by saver_impl)")

    @property
    def default(self) -> Any:
        """The value ``val`` gives when the variable is unset or empty."""
        text, kind, _ = self.value
        return text == "True" if kind is bool else text

    @property
    def description(self) -> str:
        """What the variable means."""
        return str(self.value[2])

    @property
    def val(self) -> Any:
        """The variable's value now: a string, or for a flag a bool (true only for ``True``)."""
        text, kind, _ = self.value
        text = os.environ.get(self.name) or text
        return text == "True" if kind is bool else text
