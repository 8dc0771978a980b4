"""AutoDist's module path of the PartitionedPS builder: variables split along axis 0 over the parameter servers."""

from saver_impl.strategy.builders import PartitionedPS

__all__ = ["PartitionedPS"]
