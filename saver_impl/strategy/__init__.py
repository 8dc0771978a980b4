"""Strategies: AutoDist's builders, and the strategy data model they produce.

The builders are defined in :mod:`.builders` (whose docstring states every placement
rule). AutoDist's own module paths are aliases of them, so ported programs keep their
imports: ``saver_impl.strategy.ps_strategy.PS``, ``.ps_lb_strategy.PSLoadBalancing``,
``.partitioned_ps_strategy.PartitionedPS``, ``.uneven_partition_ps_strategy.UnevenPartitionedPS``,
``.all_reduce_strategy.AllReduce``, ``.partitioned_all_reduce_strategy.PartitionedAR``,
``.parallax_strategy.Parallax`` and
``.random_axis_partition_all_reduce_strategy.RandomAxisPartitionAR`` are the very classes
exported here.

The data model (``Strategy``, ``VariableConfig``, ...) is the conformance suite's
strategy format, :mod:`autodist_verify.strategy_format`: the suite owns the contract,
the reference implementation implements it.
"""

from autodist_verify.strategy_format import (
    Partition,
    Strategy,
    StrategyError,
    VariableConfig,
    VariableInfo,
)
from saver_impl.strategy.builders import (
    ALL_BUILDERS,
    PS,
    AllReduce,
    Parallax,
    PartitionedAR,
    PartitionedPS,
    PSLoadBalancing,
    RandomAxisPartitionAR,
    StrategyBuilder,
    UnevenPartitionedPS,
)

__all__ = [
    "ALL_BUILDERS", "PS", "AllReduce", "Parallax", "PartitionedAR", "PartitionedPS",
    "PSLoadBalancing", "RandomAxisPartitionAR", "StrategyBuilder", "UnevenPartitionedPS", "Partition", "Strategy",
    "StrategyError", "VariableConfig", "VariableInfo",
]
