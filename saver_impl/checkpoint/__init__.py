"""Saving and restoring the original graph from a distributed session.

:class:`Saver` and :class:`SavedModelBuilder` have TensorFlow's interfaces. A checkpoint
written from a distributed session holds the keys, shapes and dtypes TensorFlow's own
Saver writes for the original single-device graph, with the logical values.
"""

from saver_impl.checkpoint.builder import SavedModelBuilder
from saver_impl.checkpoint.saver import Saver

__all__ = ["Saver", "SavedModelBuilder"]
