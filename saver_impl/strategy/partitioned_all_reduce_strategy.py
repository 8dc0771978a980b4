"""AutoDist's module path of the PartitionedAR builder: mirrored variables split along axis 0."""

from saver_impl.strategy.builders import PartitionedAR

__all__ = ["PartitionedAR"]
