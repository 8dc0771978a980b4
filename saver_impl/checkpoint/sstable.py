"""TensorFlow's sorted-table format, which a V2 checkpoint's ``.index`` file is written in.

A table is a sequence of blocks, then a 48-byte footer:

* a *data block* holds key/value records sorted by key. A record is three varints
  (bytes of the key shared with the previous key, bytes not shared, value length), the
  unshared key bytes and the value; every :data:`RESTART_INTERVAL` records one shares
  nothing (a restart point). The block ends with the offsets of its restart points and
  their count, each a little-endian uint32;
* after each block, a 5-byte trailer: the compression type (0, none, which is what
  TensorFlow's checkpoint writer uses) and the masked CRC32C of the block and that byte;
* an empty *metaindex block*, then the *index block*: for each data block a key at
  least as large as its last key, with the block's handle (offset and size, varints);
* the footer: the handles of the metaindex and index blocks, zero padding to 40 bytes,
  and the magic number.

:func:`read_table` reads every record of such a file; :func:`write_table` writes one
that TensorFlow's own reader (``tf.train.load_checkpoint``, ``RestoreV2``) opens.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import google_crc32c

MAGIC = 0xDB4775248B80FB57
FOOTER_BYTES = 48
RESTART_INTERVAL = 16
BLOCK_BYTES = 256 << 10  # TensorFlow's default block size
_NO_COMPRESSION = 0


class TableError(ValueError):
    """A file is not a table in TensorFlow's format, or uses a feature this module does
    not read (compressed blocks)."""


def masked_crc32c(data: bytes) -> int:
    """CRC32C of ``data``, masked as TensorFlow stores checksums."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data):
            raise TableError("a varint runs past the end of its block")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _block(records: list[tuple[bytes, bytes]]) -> bytes:
    out, restarts, previous = bytearray(), [], b""
    for n, (key, value) in enumerate(records):
        shared = 0
        if n % RESTART_INTERVAL == 0:
            restarts.append(len(out))
        else:
            limit = min(len(key), len(previous))
            while shared < limit and key[shared] == previous[shared]:
                shared += 1
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        previous = key
    restarts = restarts or [0]
    out += struct.pack(f"<{len(restarts)}I", *restarts) + struct.pack("<I", len(restarts))
    return bytes(out)


def _records(block: bytes, where: str) -> list[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise TableError(f"{where}: a block of {len(block)} bytes has no restart count")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 * (restarts + 1)
    if end < 0:
        raise TableError(f"{where}: a block claims {restarts} restart points, more than it holds")
    records, key, position = [], b"", 0
    while position < end:
        shared, position = _read_varint(block, position)
        unshared, position = _read_varint(block, position)
        length, position = _read_varint(block, position)
        key = key[:shared] + block[position:position + unshared]
        position += unshared
        records.append((key, block[position:position + length]))
        position += length
    return records


def _handle(data: bytes, position: int) -> tuple[tuple[int, int], int]:
    offset, position = _read_varint(data, position)
    size, position = _read_varint(data, position)
    return (offset, size), position


def _read_block(data: bytes, handle: tuple[int, int], where: str) -> bytes:
    offset, size = handle
    if offset + size + 5 > len(data):
        raise TableError(f"{where}: a block at {offset} of {size} bytes runs past the end of the file")
    block, kind = data[offset:offset + size], data[offset + size]
    (stored,) = struct.unpack_from("<I", data, offset + size + 1)
    if stored != masked_crc32c(data[offset:offset + size + 1]):
        raise TableError(f"{where}: the block at {offset} fails its checksum")
    if kind != _NO_COMPRESSION:
        raise TableError(f"{where}: the block at {offset} is compressed (type {kind}); only uncompressed "
                         "tables, as TensorFlow's checkpoint writer makes them, are read")
    return block


def read_table(data: bytes, where: str = "table") -> list[tuple[bytes, bytes]]:
    """Every (key, value) record of the table ``data``, in key order.

    Raises:
        TableError: ``data`` is not such a table (``where`` names it in the message).
    """
    if len(data) < FOOTER_BYTES or struct.unpack_from("<Q", data, len(data) - 8)[0] != MAGIC:
        raise TableError(f"{where}: not a TensorFlow table (no footer with its magic number)")
    footer = data[len(data) - FOOTER_BYTES:]
    _, position = _handle(footer, 0)  # the metaindex: empty in checkpoint indexes
    index_handle, _ = _handle(footer, position)
    records = []
    for _, value in _records(_read_block(data, index_handle, where), where):
        handle, _ = _handle(value, 0)
        records += _records(_read_block(data, handle, where), where)
    return records


def write_table(records: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A table holding ``records``, which must come in strictly increasing key order.

    Raises:
        ValueError: the keys are not strictly increasing.
    """
    out = bytearray()
    index: list[tuple[bytes, bytes]] = []
    pending: list[tuple[bytes, bytes]] = []
    pending_bytes = 0
    previous: bytes | None = None

    def append_block(block_records: list[tuple[bytes, bytes]]) -> tuple[int, int]:
        block = _block(block_records) + bytes([_NO_COMPRESSION])
        handle = (len(out), len(block) - 1)
        out.extend(block + struct.pack("<I", masked_crc32c(block)))
        return handle

    for key, value in records:
        if previous is not None and key <= previous:
            raise ValueError(f"table keys must be strictly increasing: {key!r} comes after {previous!r}")
        pending.append((key, value))
        pending_bytes += len(key) + len(value) + 8
        previous = key
        if pending_bytes >= BLOCK_BYTES:
            offset, size = append_block(pending)
            index.append((key, _varint(offset) + _varint(size)))
            pending, pending_bytes = [], 0
    if pending or not index:
        offset, size = append_block(pending)
        index.append((previous or b"", _varint(offset) + _varint(size)))
    meta_offset, meta_size = append_block([])
    index_offset, index_size = append_block(index)
    handles = _varint(meta_offset) + _varint(meta_size) + _varint(index_offset) + _varint(index_size)
    out += handles + bytes(FOOTER_BYTES - 8 - len(handles)) + struct.pack("<Q", MAGIC)
    return bytes(out)
