"""AutoDist's module path of the AllReduce builder: every trainable variable mirrored on every replica."""

from saver_impl.strategy.builders import AllReduce

__all__ = ["AllReduce"]
