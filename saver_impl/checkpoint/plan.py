"""The checkpoint plan: which copy of which part is written where, as plain data.

From the layout of each variable (:class:`~saver_impl.graph.layout.VariableLayout`) and
the checkpoint keys (key -> original variable name), two pure functions decide
everything the Saver does from a distributed session:

* :func:`save_plan`: per checkpoint key, the entries to write. An unpartitioned variable
  is one whole entry. A partitioned one is one slice per part (TensorFlow's
  ``SaveSliceInfo.spec``), written by the task holding the part, so no task ever holds
  the whole variable; with ``reshape=True`` it is one whole entry, as a reshaping restore
  needs the full tensor, and so is a variable of a dtype TensorFlow cannot read back
  from slices (``UNSLICEABLE_DTYPES``). A mirrored part's value is taken from one copy
  after checking that every other copy has the same bytes: for a sharded save, the copy
  on the task that writes the fewest elements so far, so the mirrors' tasks share the
  writing (one shard each); for a single-file save, the copy on the task that writes
  the most so far, so the fewest bytes come from other tasks into the one data file
  (ties: the earliest copy). A whole entry assembled from several parts takes each
  part's master (copy 0).
* :func:`restore_plan`: per entry, the copies the value read from the checkpoint is
  written into: every mirror of every part the entry covers.

The Saver only turns plans into TensorFlow ops. No TensorFlow is imported here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from saver_impl.graph.layout import PartLayout, VariableLayout


class LayoutError(ValueError):
    """A variable's layout is inconsistent (parts that overlap, leave a gap, ...)."""


@dataclass(frozen=True)
class CopyRef:
    """One stored copy: copy ``copy`` (0 is the master) of part ``part``, on ``device``."""

    part: int
    copy: int
    device: str


@dataclass(frozen=True)
class SaveEntry:
    """One tensor written under checkpoint key ``key``.

    The value is the concatenation along ``axis`` of ``sources`` (one copy per part, in
    order; a single source for a slice), assembled on ``writer``, the CPU:0 device of the
    task that writes it. Before the save every copy in ``checks`` is compared bitwise with
    the source of the same part. ``slice_spec`` is ``""`` for a whole variable.
    """

    key: str
    variable: str
    dtype: str
    shape: tuple[int, ...]
    slice_spec: str
    axis: int
    writer: str
    sources: tuple[CopyRef, ...]
    checks: tuple[CopyRef, ...] = ()


@dataclass(frozen=True)
class SavePlan:
    """Every tensor a save writes, key by key in the order of the checkpoint keys."""

    entries: tuple[SaveEntry, ...]

    def for_key(self, key: str) -> tuple[SaveEntry, ...]:
        return tuple(e for e in self.entries if e.key == key)


@dataclass(frozen=True)
class RestoreEntry:
    """One tensor read from checkpoint key ``key`` (the slice ``slice_spec``, or whole).

    The value read is reshaped to ``shape`` if ``reshape`` (else it must have ``shape``),
    split along ``axis`` into ``sizes`` for the parts ``parts``, and each piece written
    into every copy of ``targets`` of its part.
    """

    key: str
    variable: str
    dtype: str
    shape: tuple[int, ...]
    slice_spec: str
    reshape: bool
    axis: int
    parts: tuple[int, ...]
    sizes: tuple[int, ...]
    targets: tuple[CopyRef, ...]


@dataclass(frozen=True)
class RestorePlan:
    """Every tensor a restore reads and the copies it writes."""

    entries: tuple[RestoreEntry, ...]

    def for_key(self, key: str) -> tuple[RestoreEntry, ...]:
        return tuple(e for e in self.entries if e.key == key)


def save_plan(keys: Mapping[str, str], layouts: Mapping[str, VariableLayout], reshape: bool = False,
              sharded: bool = False) -> SavePlan:
    """What a save writes for ``keys`` (checkpoint key -> variable name); ``sharded``:
    the save writes one data file per writing task (``Saver(sharded=True)``), not one."""
    choose = _least_loaded if sharded else _most_loaded
    entries = []
    load: dict[str, int] = {}  # task -> elements it writes so far
    for key, name in keys.items():
        layout = _checked_layout(key, name, layouts)
        for parts, spec in _pieces(layout, reshape):
            shape = _shape_of(layout, parts)
            sources = (choose(parts[0], load),) if len(parts) == 1 else tuple(_master(p) for p in parts)
            writer = task_device(sources[0].device)
            load[writer] = load.get(writer, 0) + math.prod(shape)
            entries.append(SaveEntry(
                key=key,
                variable=name,
                dtype=layout.dtype,
                shape=shape,
                slice_spec=spec,
                axis=parts[0].axis,
                writer=writer,
                sources=sources,
                checks=tuple(c for p in parts for c in _copies(p) if c not in sources),
            ))
    return SavePlan(tuple(entries))


def restore_plan(keys: Mapping[str, str], layouts: Mapping[str, VariableLayout], reshape: bool = False) -> RestorePlan:
    """What a restore reads for ``keys`` and where it writes it: every part, every mirror."""
    entries = []
    for key, name in keys.items():
        layout = _checked_layout(key, name, layouts)
        for parts, spec in _pieces(layout, reshape):
            entries.append(RestoreEntry(
                key=key,
                variable=name,
                dtype=layout.dtype,
                shape=_shape_of(layout, parts),
                slice_spec=spec,
                reshape=reshape,
                axis=parts[0].axis,
                parts=tuple(p.index for p in parts),
                sizes=tuple(p.size for p in parts),
                targets=tuple(c for p in parts for c in _copies(p)),
            ))
    return RestorePlan(tuple(entries))


def slice_spec(full_shape: tuple[int, ...], part: PartLayout) -> str:
    """TensorFlow's slice spec of ``part``: the full dims, then ``offset,length`` per axis."""
    ranges = [
        f"{part.offset},{part.size}" if axis == part.axis else f"0,{dim}"
        for axis, dim in enumerate(full_shape)
    ]
    return " ".join(str(d) for d in full_shape) + " " + ":".join(ranges)


def task_device(device: str) -> str:
    """The CPU:0 device of the task ``device`` belongs to (as ``tf.DeviceSpec`` spells it)."""
    fields = {}
    for component in device.split("/"):
        name, _, value = component.partition(":")
        if name in ("job", "replica", "task"):
            fields[name] = value
        elif component and name.lower() not in ("device", "cpu", "gpu", "tpu"):
            raise LayoutError(f"device {device!r}: cannot read component {component!r}")
    prefix = "".join(f"/{name}:{fields[name]}" for name in ("job", "replica", "task") if name in fields)
    return f"{prefix}/device:CPU:0"


def validate_layout(layout: VariableLayout) -> None:
    """Raise :class:`LayoutError`, naming the variable, if ``layout`` is inconsistent:
    parts out of order, overlapping, leaving a gap, of the wrong shape, or without copies."""
    where = f"variable {layout.name!r} of shape {layout.shape}"
    parts = layout.parts
    if not parts:
        raise LayoutError(f"{where}: no parts")
    for position, part in enumerate(parts):
        if part.index != position:
            raise LayoutError(f"{where}: part at position {position} has index {part.index}")
        if not part.copies:
            raise LayoutError(f"{where}: part {part.index} has no stored copy")
    if not layout.shape:
        if len(parts) > 1 or parts[0].shape != ():
            raise LayoutError(f"{where}: a scalar is stored as one part of shape ()")
        return
    axis = parts[0].axis
    if not 0 <= axis < len(layout.shape):
        raise LayoutError(f"{where}: axis {axis} is out of range")
    end = 0
    for part in parts:
        if part.axis != axis:
            raise LayoutError(f"{where}: part {part.index} is split on axis {part.axis}, part 0 on axis {axis}")
        expected = layout.shape[:axis] + (part.size,) + layout.shape[axis + 1:]
        if part.size <= 0 or part.shape != expected:
            raise LayoutError(f"{where}: part {part.index} has shape {part.shape}, expected {expected} "
                              f"(size {part.size} along axis {axis})")
        if part.offset < 0:
            raise LayoutError(f"{where}: part {part.index} starts at offset {part.offset}")
        if part.offset < end:
            raise LayoutError(f"{where}: part {part.index} [{part.offset}:{part.offset + part.size}] overlaps "
                              f"the parts before it, which end at {end} on axis {axis}")
        if part.offset > end:
            raise LayoutError(f"{where}: the parts do not cover the axis: no part holds [{end}:{part.offset}] "
                              f"of axis {axis}")
        end = part.offset + part.size
    if end != layout.shape[axis]:
        raise LayoutError(f"{where}: the parts do not cover the axis: they end at {end}, "
                          f"axis {axis} has size {layout.shape[axis]}")


def _checked_layout(key: str, name: str, layouts: Mapping[str, VariableLayout]) -> VariableLayout:
    layout = layouts.get(name)
    if layout is None:
        raise LayoutError(f"checkpoint key {key!r} names variable {name!r}, which has no layout")
    validate_layout(layout)
    return layout


# Dtypes whose slices TensorFlow cannot assemble into the whole tensor (its checkpoint
# reader and RestoreV2 raise "Dtype half not supported"; measured on TF 2.21 with
# TensorFlow's own partitioned Saver). Written whole, the checkpoint stays restorable
# anywhere; the writer then holds the whole variable during the save.
UNSLICEABLE_DTYPES = frozenset({"float16", "uint16", "uint32", "uint64"})


def _pieces(layout: VariableLayout, reshape: bool) -> list[tuple[tuple[PartLayout, ...], str]]:
    """The tensors one variable is written as: (parts covered, slice spec)."""
    if layout.partitioned and not reshape and layout.dtype not in UNSLICEABLE_DTYPES:
        return [((part,), slice_spec(layout.shape, part)) for part in layout.parts]
    return [(layout.parts, "")]


def _shape_of(layout: VariableLayout, parts: tuple[PartLayout, ...]) -> tuple[int, ...]:
    return parts[0].shape if len(parts) == 1 else layout.shape


def _copies(part: PartLayout) -> list[CopyRef]:
    return [CopyRef(part.index, m, copy.device) for m, copy in enumerate(part.copies)]


def _master(part: PartLayout) -> CopyRef:
    return _copies(part)[0]


def _least_loaded(part: PartLayout, load: Mapping[str, int]) -> CopyRef:
    """The copy of ``part`` on the task that writes the fewest elements so far (the
    earliest copy on a tie, so an unmirrored part is its master)."""
    return min(_copies(part), key=lambda c: (load.get(task_device(c.device), 0), c.copy))


def _most_loaded(part: PartLayout, load: Mapping[str, int]) -> CopyRef:
    """The copy of ``part`` on the task that writes the most elements so far (the earliest
    copy on a tie).

    A single-file save from several tasks writes a part per task and then copies every
    part but the largest into the one data file (:mod:`.bundle_merge`), or, where the
    tasks do not share the directory, sends every value to one writing task: either way
    a value saved where the others are is a value not copied again.
    """
    return min(_copies(part), key=lambda c: (-load.get(task_device(c.device), 0), c.copy))


def paired(save: SavePlan, restore: RestorePlan) -> list[tuple[SaveEntry, RestoreEntry]]:
    """Each save entry with the restore entry of the same key and slice, in save order.

    TensorFlow's Saver saves and restores the same saveable objects, so the two plans
    must name the same (key, slice) pairs, each once.
    """
    by_slice: dict[tuple[str, str], RestoreEntry] = {}
    for read in restore.entries:
        if (read.key, read.slice_spec) in by_slice:
            raise LayoutError(f"the restore plan reads key {read.key!r} slice {read.slice_spec!r} twice")
        by_slice[(read.key, read.slice_spec)] = read
    pairs = []
    for write in save.entries:
        match = by_slice.pop((write.key, write.slice_spec), None)
        if match is None:
            raise LayoutError(f"the save plan writes key {write.key!r} slice {write.slice_spec!r}, "
                              "which the restore plan does not read (or the save plan writes it twice)")
        pairs.append((write, match))
    if by_slice:
        key, spec = next(iter(by_slice))
        raise LayoutError(f"the restore plan reads key {key!r} slice {spec!r}, which the save plan does not write")
    return pairs
