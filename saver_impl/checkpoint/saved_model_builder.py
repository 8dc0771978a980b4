"""AutoDist's module path of the SavedModel builder: ``SavedModelBuilder`` is :mod:`.builder`'s class."""

from saver_impl.checkpoint.builder import SavedModelBuilder

__all__ = ["SavedModelBuilder"]
