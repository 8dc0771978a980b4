"""AutoDist's module path of the PSLoadBalancing builder: variables on the least-loaded parameter server."""

from saver_impl.strategy.builders import PSLoadBalancing

__all__ = ["PSLoadBalancing"]
