"""Strategies: the placement of every variable, and AutoDist's builders that make them."""

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
from saver_impl.strategy.model import (
    Partition,
    Strategy,
    StrategyError,
    VariableConfig,
    VariableInfo,
)

__all__ = [
    "ALL_BUILDERS", "PS", "AllReduce", "Parallax", "PartitionedAR", "PartitionedPS",
    "PSLoadBalancing", "StrategyBuilder", "UnevenPartitionedPS", "Partition", "Strategy",
    "StrategyError", "VariableConfig", "VariableInfo",
]
