"""AutoDist's module path of the Parallax builder: sparse-gradient variables on PS, dense ones mirrored."""

from saver_impl.strategy.builders import Parallax

__all__ = ["Parallax"]
