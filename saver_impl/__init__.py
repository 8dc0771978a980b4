"""Reference AutoDist-style implementation whose checkpoints the suite verifies.

``from saver_impl import AutoDist, Saver, SavedModelBuilder`` and
``from saver_impl.strategy import PS, ...`` port an AutoDist program by changing imports.
"""

from saver_impl.autodist import AutoDist
from saver_impl.checkpoint import SavedModelBuilder, Saver
from saver_impl.errors import AutoDistError, TransformError

__all__ = ["AutoDist", "AutoDistError", "SavedModelBuilder", "Saver", "TransformError"]
