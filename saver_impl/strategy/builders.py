"""The AutoDist strategy builders, with AutoDist's names and constructor arguments.

Rules shared by every builder: the aux device is the first parameter-server device;
non-trainable variables are never mirrored or partitioned (the train op may update
them, e.g. ``global_step``) and go to the first parameter-server device; scalars and
variables whose first dimension is 1 are never partitioned.

* ``PS``: each trainable variable on one PS device, round robin in variable order.
* ``PSLoadBalancing``: greedy by size: largest first (ties by name), each to the least
  loaded PS device (ties to the lowest index).
* ``PartitionedPS``: split along axis 0 into ``min(dim0, max(2, #PS))`` even parts (the
  first ``dim0 % n`` one larger), parts round robin over the PS devices with one counter
  across variables; partitions happen even on a one-node cluster.
* ``UnevenPartitionedPS``: as PartitionedPS with sizes proportional to 1, 2, ..., n
  (each at least 1, rounding left to the last part).
* ``AllReduce``: every trainable variable mirrored on every replica.
* ``PartitionedAR``: mirrored, and split along axis 0 into ``min(dim0, 2)`` even parts.
* ``Parallax``: variables with sparse gradients on PS by the load-balancing rule,
  dense ones mirrored.

``chunk_size``, ``all_reduce_spec``, ``compressor`` and ``local_proxy_variable`` are
accepted for compatibility and recorded only: they tune communication, which does not
change the values. Asynchronous training (``sync=False`` or ``staleness``) is refused.
"""

from __future__ import annotations

from typing import Any, Sequence

from saver_impl.strategy.model import (
    Partition,
    Strategy,
    StrategyError,
    VariableConfig,
    VariableInfo,
)


def _even_sizes(dimension: int, parts: int) -> tuple[int, ...]:
    base, extra = divmod(dimension, parts)
    return tuple(base + (1 if i < extra else 0) for i in range(parts))


def _uneven_sizes(dimension: int, parts: int) -> tuple[int, ...]:
    total_weight = parts * (parts + 1) // 2
    sizes = [max(1, dimension * (i + 1) // total_weight) for i in range(parts - 1)]
    sizes.append(dimension - sum(sizes))
    if sizes[-1] < 1:  # small dimensions: fall back to ones and the rest last
        sizes = [1] * (parts - 1) + [dimension - (parts - 1)]
    return tuple(sizes)


def _partitionable(info: VariableInfo) -> bool:
    return bool(info.shape) and info.shape[0] > 1


def _balance(variables: Sequence[VariableInfo], ps_devices: Sequence[str]) -> dict[str, str]:
    """Greedy placement by size: largest first, each on the least-loaded device."""
    load = [0] * len(ps_devices)
    assigned = {}
    for info in sorted(variables, key=lambda v: (-v.nbytes, v.name)):
        index = min(range(len(ps_devices)), key=lambda i: (load[i], i))
        assigned[info.name] = ps_devices[index]
        load[index] += info.nbytes
    return assigned


class StrategyBuilder:
    """Base class: ``build(variables, resource_spec) -> Strategy``."""

    def __init__(self, sync: bool = True, staleness: int = 0, **settings: Any):
        if sync is not True or staleness != 0:
            raise StrategyError(
                f"{type(self).__name__}: asynchronous training (sync={sync}, staleness={staleness}) "
                "is outside the bit-exact contract and not implemented"
            )
        self.settings = settings

    def build(self, variables: Sequence[VariableInfo], resource_spec: Any) -> Strategy:
        """A strategy for ``variables`` on the cluster described by ``resource_spec``."""
        return self.build_for_devices(
            variables,
            [d.name for d in resource_spec.replica_devices],
            [d.name for d in resource_spec.ps_devices],
        )

    def build_for_devices(
        self, variables: Sequence[VariableInfo], replica_devices: Sequence[str], ps_devices: Sequence[str]
    ) -> Strategy:
        if not replica_devices:
            raise StrategyError(f"{type(self).__name__}: the cluster has no replica device")
        if not ps_devices:
            raise StrategyError(f"{type(self).__name__}: the cluster has no parameter-server device")
        self._ps = list(ps_devices)
        self._cursor = 0
        configs = {}
        for info in variables:
            if info.trainable:
                configs[info.name] = self.place(info)
            else:
                configs[info.name] = VariableConfig("ps", (self._ps[0],))
        return Strategy(tuple(replica_devices), self._ps[0], configs)

    def place(self, info: VariableInfo) -> VariableConfig:  # pragma: no cover - abstract
        raise NotImplementedError

    def _next_ps(self) -> str:
        device = self._ps[self._cursor % len(self._ps)]
        self._cursor += 1
        return device


class PS(StrategyBuilder):
    """Each trainable variable on one parameter server, round robin."""

    def __init__(self, local_proxy_variable: bool = False, sync: bool = True, staleness: int = 0):
        super().__init__(sync, staleness, local_proxy_variable=local_proxy_variable)

    def place(self, info: VariableInfo) -> VariableConfig:
        return VariableConfig("ps", (self._next_ps(),))


class PSLoadBalancing(StrategyBuilder):
    """Each trainable variable on the least-loaded parameter server, largest first."""

    def __init__(self, local_proxy_variable: bool = False, sync: bool = True, staleness: int = 0):
        super().__init__(sync, staleness, local_proxy_variable=local_proxy_variable)

    def build_for_devices(self, variables, replica_devices, ps_devices) -> Strategy:
        self._assigned = _balance([v for v in variables if v.trainable], ps_devices)
        return super().build_for_devices(variables, replica_devices, ps_devices)

    def place(self, info: VariableInfo) -> VariableConfig:
        return VariableConfig("ps", (self._assigned[info.name],))


class PartitionedPS(StrategyBuilder):
    """Trainable variables split along axis 0 across the parameter servers."""

    def __init__(self, local_proxy_variable: bool = False, sync: bool = True, staleness: int = 0):
        super().__init__(sync, staleness, local_proxy_variable=local_proxy_variable)

    def _sizes(self, dimension: int, parts: int) -> tuple[int, ...]:
        return _even_sizes(dimension, parts)

    def place(self, info: VariableInfo) -> VariableConfig:
        if not _partitionable(info):
            return VariableConfig("ps", (self._next_ps(),))
        parts = min(info.shape[0], max(2, len(self._ps)))
        devices = tuple(self._next_ps() for _ in range(parts))
        return VariableConfig("ps", devices, Partition(0, self._sizes(info.shape[0], parts)))


class UnevenPartitionedPS(PartitionedPS):
    """Like PartitionedPS, with deliberately uneven part sizes."""

    def _sizes(self, dimension: int, parts: int) -> tuple[int, ...]:
        return _uneven_sizes(dimension, parts)


class AllReduce(StrategyBuilder):
    """Every trainable variable mirrored on every replica."""

    def __init__(self, chunk_size: int = 128, all_reduce_spec: str = "NCCL", compressor: str = "NoneCompressor"):
        super().__init__(chunk_size=chunk_size, all_reduce_spec=all_reduce_spec, compressor=compressor)

    def place(self, info: VariableInfo) -> VariableConfig:
        return VariableConfig("allreduce")


class PartitionedAR(StrategyBuilder):
    """Every trainable variable mirrored, and split along axis 0 in two."""

    def __init__(self, chunk_size: int = 128):
        super().__init__(chunk_size=chunk_size)

    def place(self, info: VariableInfo) -> VariableConfig:
        if not _partitionable(info):
            return VariableConfig("allreduce")
        parts = min(info.shape[0], 2)
        return VariableConfig("allreduce", (), Partition(0, _even_sizes(info.shape[0], parts)))


class Parallax(StrategyBuilder):
    """Sparse-gradient variables on parameter servers, dense ones mirrored."""

    def __init__(self, chunk_size: int = 128, local_proxy_variable: bool = False, sync: bool = True, staleness: int = 0):
        super().__init__(sync, staleness, chunk_size=chunk_size, local_proxy_variable=local_proxy_variable)

    def build_for_devices(self, variables, replica_devices, ps_devices) -> Strategy:
        self._assigned = _balance([v for v in variables if v.trainable and v.sparse_grad], ps_devices)
        return super().build_for_devices(variables, replica_devices, ps_devices)

    def place(self, info: VariableInfo) -> VariableConfig:
        if info.name in self._assigned:
            return VariableConfig("ps", (self._assigned[info.name],))
        return VariableConfig("allreduce")


ALL_BUILDERS = (PS, PSLoadBalancing, PartitionedPS, UnevenPartitionedPS, AllReduce, PartitionedAR, Parallax)
