"""AutoDist's module path of the UnevenPartitionedPS builder: PartitionedPS with uneven part sizes."""

from saver_impl.strategy.builders import UnevenPartitionedPS

__all__ = ["UnevenPartitionedPS"]
