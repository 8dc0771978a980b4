"""AutoDist's module path of the RandomAxisPartitionAR builder: mirrored variables split along a per-variable axis."""

from saver_impl.strategy.builders import RandomAxisPartitionAR

__all__ = ["RandomAxisPartitionAR"]
