"""AutoDist's module path of the PS builder: each trainable variable on one parameter server, round robin."""

from saver_impl.strategy.builders import PS

__all__ = ["PS"]
