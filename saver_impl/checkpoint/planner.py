"""The Saver's extension point: a planner that may change what is saved and restored.

:class:`CheckpointPlanner` computes the plans of :mod:`.plan` and lets a subclass change
them at documented points. A Saver uses its ``planner`` attribute (the Saver's
constructor is TensorFlow's, so a subclass of the Saver sets it); the default planner
is the reference behaviour. A planner that stores float64 variables as float32::

    class Float32Planner(CheckpointPlanner):
        def transform_save_value(self, entry, value):
            return tf.cast(value, tf.float32) if entry.dtype == "float64" else value

        def transform_restored_value(self, entry, value):
            return tf.cast(value, entry.dtype)

    class Float32Saver(saver_impl.Saver):
        planner = Float32Planner()

No TensorFlow is imported here: values are whatever the Saver builds them with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from saver_impl.checkpoint.plan import RestoreEntry, RestorePlan, SaveEntry, SavePlan, restore_plan, save_plan
from saver_impl.graph.layout import VariableLayout


class CheckpointPlanner:
    """Decides, from plain data, what a Saver writes and reads with a distributed session.

    Override any of the methods below; each one's default is the reference behaviour.
    """

    def checkpoint_keys(self, keys: Mapping[str, str], layouts: Mapping[str, VariableLayout]) -> Mapping[str, str]:
        """The checkpoint keys to save and restore: key -> original variable name.

        ``keys`` are the keys TensorFlow's Saver gives the original graph's variables
        (``var_list``, or every global and saveable variable); ``layouts`` is every
        variable's layout by name. The default keeps ``keys``.
        """
        return keys

    def transform_save_plan(self, plan: SavePlan) -> SavePlan:
        """The save plan to build the save from (default: ``plan``, the reference one).

        It must name the same (key, slice) pairs as the transformed restore plan.
        """
        return plan

    def transform_restore_plan(self, plan: RestorePlan) -> RestorePlan:
        """The restore plan to build the restore from (default: ``plan``, the reference one)."""
        return plan

    def transform_save_value(self, entry: SaveEntry, value: Any) -> Any:
        """The tensor written for ``entry``, from ``value``, its assembled source copies
        (default: ``value``). Built on ``entry.writer``'s device."""
        return value

    def transform_restored_value(self, entry: RestoreEntry, value: Any) -> Any:
        """The tensor written into ``entry``'s copies, from ``value``, as read from the
        checkpoint (default: ``value``). Shape checks and splitting come after."""
        return value

    def plans(
        self, keys: Mapping[str, str], layouts: Mapping[str, VariableLayout], reshape: bool = False,
        sharded: bool = False,
    ) -> tuple[SavePlan, RestorePlan]:
        """The save and restore plans for ``keys``, through the methods above (the Saver's
        entry point; override those methods, not this one). ``reshape`` and ``sharded``
        are the Saver's settings."""
        chosen = self.checkpoint_keys(keys, layouts)
        return (
            self.transform_save_plan(save_plan(chosen, layouts, reshape, sharded)),
            self.transform_restore_plan(restore_plan(chosen, layouts, reshape)),
        )
