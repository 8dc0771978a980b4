"""Strategies: AutoDist's builders, and the strategy data model they produce.

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
    StrategyBuilder,
    UnevenPartitionedPS,
)

__all__ = [
    "ALL_BUILDERS", "PS", "AllReduce", "Parallax", "PartitionedAR", "PartitionedPS",
    "PSLoadBalancing", "StrategyBuilder", "UnevenPartitionedPS", "Partition", "Strategy",
    "StrategyError", "VariableConfig", "VariableInfo",
]
