"""AutoDist's strategy builders, with AutoDist's class names and constructor arguments.

Rules shared by every builder:

* the aux device is the first parameter-server (PS) device;
* non-trainable variables are always ``ps``, unpartitioned, on the first PS device (the
  train op may update them itself, e.g. ``global_step``); they take no turn in any round
  robin and add no load to any device;
* scalars and variables whose first dimension is 1 are never partitioned (except by
  ``RandomAxisPartitionAR``, which looks at every axis);
* variables keep their input order in the strategy.

The builders:

* ``PS``: each trainable variable on one PS device, round robin in variable order.
* ``PSLoadBalancing``: greedy by size: trainable variables by byte size, largest first
  (ties by name), each to the least-loaded PS device (ties to the lowest index).
* ``PartitionedPS``: each trainable variable split along axis 0 into
  ``n = min(dim0, max(2, #PS devices))`` parts of even sizes (the first ``dim0 % n``
  parts one larger); the parts, and unpartitioned variables, are placed round robin
  over the PS devices with one counter across variables. ``n >= 2`` means partitions
  happen even on a cluster with one PS device.
* ``UnevenPartitionedPS``: as ``PartitionedPS`` with deliberately uneven sizes: every
  part gets 1, and the excess ``e = dim0 - n`` is shared in proportion to 1, 2, ..., n:
  part ``i`` (1-based, ``i < n``) gets ``1 + floor(e * i / (n (n + 1) / 2))`` and the
  last part the rest. E.g. 10 rows in 3 parts: ``[2, 3, 5]``; ``dim0 == n``: all 1.
* ``AllReduce``: every trainable variable mirrored on every replica, unpartitioned.
* ``PartitionedAR``: mirrored, and split along axis 0 into ``min(dim0, 2)`` even parts.
* ``Parallax``: trainable variables with sparse gradients on PS devices by the
  ``PSLoadBalancing`` rule (unpartitioned), dense ones mirrored.
* ``RandomAxisPartitionAR``: mirrored, and split into ``2`` even parts (as
  ``PartitionedAR``) along one axis chosen per variable. The candidates are the axes
  whose size is greater than 1, in axis order, except that a variable with a sparse
  gradient has axis 0 as its only candidate, and only if its first dimension is greater
  than 1 (AutoDist's rule for embeddings). The axis is
  ``candidates[zlib.crc32(name.encode("utf-8")) % len(candidates)]``. AutoDist draws
  the axis at random; a hash of the name keeps the choice free of randomness, so one
  program gives the same strategy on every run and every machine. A variable without
  a candidate axis is mirrored unpartitioned. E.g. ``dense/kernel`` of shape ``(4, 3)``
  is split along axis 1 into ``[2, 1]``, ``row`` of shape ``(1, 5)`` along axis 1 into
  ``[3, 2]``. It is exported by :mod:`saver_impl.strategy` but is not in
  :data:`ALL_BUILDERS`, which holds the seven builders of the conformance matrix.

``chunk_size``, ``all_reduce_spec``, ``compressor`` and ``local_proxy_variable`` are
accepted and recorded in :attr:`StrategyBuilder.settings` only: they tune communication
(proxies, fusion, compression), not the placement of the stored values, and no proxy
variable is built. ``sync`` and ``staleness`` are accepted and recorded at construction
too, so a table of builders such as ``[PS(), PS(staleness=3)]`` can be written; but
asynchronous training (``sync=False`` or ``staleness != 0``) is outside the bit-exact
contract and not implemented, and :meth:`StrategyBuilder.build` (and
:meth:`~StrategyBuilder.build_for_devices`) of such a builder raises a
:class:`StrategyError` saying so.
"""

from __future__ import annotations

import abc
import itertools
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from autodist_verify.strategy_format import (
    Partition,
    Strategy,
    StrategyError,
    VariableConfig,
    VariableInfo,
)


class StrategyBuilder(abc.ABC):
    """Base class of the builders: ``build(variables, resource_spec) -> Strategy``."""

    def __init__(self, **settings: Any) -> None:
        self._settings = dict(settings)

    @property
    def settings(self) -> Mapping[str, Any]:
        """The constructor arguments, recorded as given."""
        return dict(self._settings)

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self._settings.items())
        return f"{type(self).__name__}({arguments})"

    def build(self, variables: Sequence[VariableInfo], resource_spec: Any) -> Strategy:
        """A strategy for ``variables`` on a cluster.

        Args:
            variables: the model variables (trainable and not; no optimizer slots).
            resource_spec: any object with ``replica_devices`` and ``ps_devices``, lists of
                objects whose ``name`` is a logical device name (``cluster_sim.ResourceSpec``).
        """
        return self.build_for_devices(
            variables,
            [device.name for device in resource_spec.replica_devices],
            [device.name for device in resource_spec.ps_devices],
        )

    def build_for_devices(
        self,
        variables: Sequence[VariableInfo],
        replica_devices: Sequence[str],
        ps_devices: Sequence[str],
    ) -> Strategy:
        """A strategy for ``variables`` on the given logical devices; it passes ``validate``.

        Raises:
            StrategyError: the builder asks for asynchronous training (``sync=False`` or
                ``staleness != 0``), the cluster has no replica or no parameter-server
                device, or the variables are invalid (e.g. a name appears twice).
        """
        name = type(self).__name__
        _require_synchronous(name, self._settings.get("sync", True), self._settings.get("staleness", 0))
        if not replica_devices:
            raise StrategyError(f"{name}: the cluster has no replica device")
        if not ps_devices:
            raise StrategyError(f"{name}: the cluster has no parameter-server device")
        placed = self._place_trainable([v for v in variables if v.trainable], list(ps_devices))
        configs = {
            info.name: placed[info.name] if info.trainable else VariableConfig("ps", (ps_devices[0],))
            for info in variables
        }
        strategy = Strategy(tuple(replica_devices), ps_devices[0], configs)
        strategy.validate(variables, replica_devices, ps_devices)
        return strategy

    @abc.abstractmethod
    def _place_trainable(
        self, variables: list[VariableInfo], ps_devices: list[str]
    ) -> dict[str, VariableConfig]:
        """The placement of every trainable variable, by name."""


def _require_synchronous(builder: str, sync: Any, staleness: Any) -> None:
    """Refuse asynchronous training (called when a strategy is built, not at construction)."""
    if not sync or staleness != 0:
        raise StrategyError(
            f"{builder}(sync={sync!r}, staleness={staleness!r}): asynchronous training is outside "
            "the bit-exact contract and not implemented; use sync=True, staleness=0"
        )


def _partitionable(info: VariableInfo) -> bool:
    return bool(info.shape) and info.shape[0] > 1


def _even_sizes(dimension: int, parts: int) -> tuple[int, ...]:
    base, extra = divmod(dimension, parts)
    return tuple(base + 1 if i < extra else base for i in range(parts))


def _uneven_sizes(dimension: int, parts: int) -> tuple[int, ...]:
    excess, weight = dimension - parts, parts * (parts + 1) // 2
    sizes = [1 + excess * i // weight for i in range(1, parts)]
    return (*sizes, dimension - sum(sizes))


def _balance(variables: Sequence[VariableInfo], ps_devices: Sequence[str]) -> dict[str, str]:
    """Greedy placement by size: largest first, each on the least-loaded device."""
    load = [0] * len(ps_devices)
    assigned = {}
    for info in sorted(variables, key=lambda v: (-v.nbytes, v.name)):
        index = min(range(len(ps_devices)), key=lambda i: (load[i], i))
        assigned[info.name] = ps_devices[index]
        load[index] += info.nbytes
    return assigned


class _PSFamily(StrategyBuilder):
    """The shared constructor of the parameter-server builders."""

    def __init__(self, local_proxy_variable: bool = False, sync: bool = True, staleness: int = 0) -> None:
        super().__init__(local_proxy_variable=local_proxy_variable, sync=sync, staleness=staleness)


class PS(_PSFamily):
    """Each trainable variable on one parameter-server device, round robin."""

    def _place_trainable(self, variables, ps_devices):
        devices = itertools.cycle(ps_devices)
        return {info.name: VariableConfig("ps", (next(devices),)) for info in variables}


class PSLoadBalancing(_PSFamily):
    """Each trainable variable on the least-loaded parameter-server device, largest first."""

    def _place_trainable(self, variables, ps_devices):
        assigned = _balance(variables, ps_devices)
        return {info.name: VariableConfig("ps", (assigned[info.name],)) for info in variables}


class PartitionedPS(_PSFamily):
    """Trainable variables split along axis 0, parts round robin over the PS devices."""

    def _sizes(self, dimension: int, parts: int) -> tuple[int, ...]:
        return _even_sizes(dimension, parts)

    def _place_trainable(self, variables, ps_devices):
        devices = itertools.cycle(ps_devices)
        return {info.name: self._place(info, len(ps_devices), devices) for info in variables}

    def _place(self, info: VariableInfo, num_ps: int, devices: Iterator[str]) -> VariableConfig:
        if not _partitionable(info):
            return VariableConfig("ps", (next(devices),))
        parts = min(info.shape[0], max(2, num_ps))
        sizes = self._sizes(info.shape[0], parts)
        return VariableConfig("ps", tuple(next(devices) for _ in sizes), Partition(0, sizes))


class UnevenPartitionedPS(PartitionedPS):
    """Like ``PartitionedPS``, with part sizes growing roughly as 1, 2, ..., n."""

    def _sizes(self, dimension: int, parts: int) -> tuple[int, ...]:
        return _uneven_sizes(dimension, parts)


class AllReduce(StrategyBuilder):
    """Every trainable variable mirrored on every replica."""

    def __init__(
        self, chunk_size: int = 128, all_reduce_spec: str = "NCCL", compressor: str = "NoneCompressor"
    ) -> None:
        super().__init__(chunk_size=chunk_size, all_reduce_spec=all_reduce_spec, compressor=compressor)

    def _place_trainable(self, variables, ps_devices):
        return {info.name: VariableConfig("allreduce") for info in variables}


class PartitionedAR(StrategyBuilder):
    """Every trainable variable mirrored, and split along axis 0 into two even parts."""

    def __init__(self, chunk_size: int = 128) -> None:
        super().__init__(chunk_size=chunk_size)

    def _place_trainable(self, variables, ps_devices):
        return {info.name: self._place(info) for info in variables}

    @staticmethod
    def _place(info: VariableInfo) -> VariableConfig:
        if not _partitionable(info):
            return VariableConfig("allreduce")
        sizes = _even_sizes(info.shape[0], min(info.shape[0], 2))
        return VariableConfig("allreduce", partition=Partition(0, sizes))


class Parallax(StrategyBuilder):
    """Sparse-gradient variables on parameter servers (load balanced), dense ones mirrored."""

    def __init__(
        self, chunk_size: int = 128, local_proxy_variable: bool = False, sync: bool = True, staleness: int = 0
    ) -> None:
        super().__init__(
            chunk_size=chunk_size, local_proxy_variable=local_proxy_variable, sync=sync, staleness=staleness
        )

    def _place_trainable(self, variables, ps_devices):
        assigned = _balance([v for v in variables if v.sparse_grad], ps_devices)
        return {
            info.name: VariableConfig("ps", (assigned[info.name],)) if info.sparse_grad
            else VariableConfig("allreduce")
            for info in variables
        }


class RandomAxisPartitionAR(StrategyBuilder):
    """Every trainable variable mirrored, and split into two even parts along an axis
    chosen per variable from a hash of its name (see the module docstring)."""

    def __init__(self, chunk_size: int = 128) -> None:
        super().__init__(chunk_size=chunk_size)

    def _place_trainable(self, variables, ps_devices):
        return {info.name: self._place(info) for info in variables}

    @staticmethod
    def partition_axis(info: VariableInfo) -> int | None:
        """The axis ``info`` is split along, or None when it is not split."""
        if info.sparse_grad:
            candidates = [0] if info.shape and info.shape[0] > 1 else []
        else:
            candidates = [axis for axis, size in enumerate(info.shape) if size > 1]
        if not candidates:
            return None
        return candidates[zlib.crc32(info.name.encode("utf-8")) % len(candidates)]

    @classmethod
    def _place(cls, info: VariableInfo) -> VariableConfig:
        axis = cls.partition_axis(info)
        if axis is None:
            return VariableConfig("allreduce")
        return VariableConfig("allreduce", partition=Partition(axis, _even_sizes(info.shape[axis], 2)))


# The seven builders of the conformance matrix (autodist_verify.case.BUILDERS);
# RandomAxisPartitionAR is exported beside them, not listed here.
ALL_BUILDERS: tuple[type[StrategyBuilder], ...] = (
    PS, PSLoadBalancing, PartitionedPS, UnevenPartitionedPS, AllReduce, PartitionedAR, Parallax,
)
