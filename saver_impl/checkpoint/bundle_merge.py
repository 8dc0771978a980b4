"""One single-file V2 checkpoint made from checkpoints that several tasks wrote in parallel.

A V2 checkpoint (TensorFlow's *tensor bundle*) is an index, a table
(:mod:`.sstable`) mapping each key to a ``BundleEntryProto`` (dtype, shape, which data
file, offset, size, checksum of the bytes), and data files holding the tensors' bytes
back to back. ``Saver(sharded=False)`` promises one data file, ``.data-00000-of-00001``.

:func:`merge_into_single_file` makes that file from *parts*, single-file checkpoints
each written by one task with its own variables: the largest part's data file is renamed
to the checkpoint's, the others are appended to it by the kernel (``copy_file_range``:
no byte passes through this process), and the index lists every part's entries with
their offsets moved by where their part landed. A partitioned variable whose slices
were written by several tasks has one entry per part listing that part's slices; the
merged entry lists them all. The checksums stay valid, as the bytes do not change.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

from tensorflow.core.protobuf import tensor_bundle_pb2

from saver_impl.checkpoint import sstable

SINGLE_DATA_FILE = ".data-00000-of-00001"


class BundleMergeError(ValueError):
    """The parts cannot form one checkpoint: a part is not a single-file V2 checkpoint,
    two parts write the same key, or two parts disagree on a variable's dtype or shape.
    The message names the part and the key."""


def _entries(part: str) -> tuple[tensor_bundle_pb2.BundleHeaderProto, list[tuple[bytes, bytes]]]:
    """The header and the (key, serialized entry) records of the part ``part``."""
    index = f"{part}.index"
    with open(index, "rb") as file:
        records = sstable.read_table(file.read(), index)
    if not records or records[0][0] != b"":
        raise BundleMergeError(f"{index}: no bundle header (the empty key)")
    header = tensor_bundle_pb2.BundleHeaderProto.FromString(records[0][1])
    if header.num_shards != 1:
        raise BundleMergeError(f"{index}: the part has {header.num_shards} data files; parts are single-file")
    return header, records[1:]


def _append(source: str, target: int) -> None:
    """Append the file ``source`` to the open file descriptor ``target`` (at its end)."""
    with open(source, "rb") as file:
        remaining = os.fstat(file.fileno()).st_size
        try:
            while remaining > 0:
                copied = os.copy_file_range(file.fileno(), target, remaining)
                if copied == 0:
                    break
                remaining -= copied
        except OSError:  # a filesystem without copy_file_range: copy through this process
            pass
        if remaining > 0:
            with os.fdopen(os.dup(target), "wb", closefd=True) as out:
                shutil.copyfileobj(file, out, 8 << 20)


def merge_into_single_file(parts: Sequence[str], prefix: str) -> None:
    """Write the single-file checkpoint ``prefix`` (its index last) from the single-file
    checkpoints ``parts`` (prefixes on the local filesystem), and remove the parts.

    Raises:
        BundleMergeError: the parts cannot form one checkpoint (nothing is written then).
        OSError: a file cannot be read, written or removed.
    """
    read = [(part, *_entries(part)) for part in parts]
    sizes = {part: os.path.getsize(part + SINGLE_DATA_FILE) for part in parts}
    order = sorted(parts, key=lambda part: -sizes[part])  # the largest is renamed, not copied
    shift, position = {}, 0
    for part in order:
        shift[part] = position
        position += sizes[part]
    merged: dict[bytes, tensor_bundle_pb2.BundleEntryProto] = {}
    owner: dict[bytes, str] = {}
    for part, _, records in read:
        for key, value in records:
            entry = tensor_bundle_pb2.BundleEntryProto.FromString(value)
            if key not in merged:
                if not entry.slices:
                    entry.offset += shift[part]
                merged[key], owner[key] = entry, part
                continue
            first = merged[key]
            if not (entry.slices and first.slices):
                raise BundleMergeError(f"key {key!r} is written by both {owner[key]} and {part}")
            if entry.dtype != first.dtype or entry.shape != first.shape:
                raise BundleMergeError(f"key {key!r}: {part} gives another dtype or shape than {owner[key]}")
            first.slices.extend(entry.slices)
    header = read[0][1]
    data = prefix + SINGLE_DATA_FILE
    os.replace(order[0] + SINGLE_DATA_FILE, data)
    target = os.open(data, os.O_WRONLY)
    try:
        os.lseek(target, 0, os.SEEK_END)
        for part in order[1:]:
            _append(part + SINGLE_DATA_FILE, target)
    finally:
        os.close(target)
    index = [(b"", header.SerializeToString())] + [(key, merged[key].SerializeToString()) for key in sorted(merged)]
    with open(f"{prefix}.index", "wb") as file:
        file.write(sstable.write_table(index))
    for part in parts:
        for path in (f"{part}.index", part + SINGLE_DATA_FILE):
            if os.path.exists(path):
                os.remove(path)
