"""The checkpoint index format and the merge of parts into one single-file checkpoint,
with TensorFlow's own reader and Saver as the witnesses.

The parts are written by plain TensorFlow (``SaveV2`` in a local session), as a task
of a parallel save writes them; the merged checkpoint must read back through
``tf.train.load_checkpoint`` and restore through ``tf.compat.v1.train.Saver`` with every
value bit for bit, a partitioned variable whose slices sit in different parts included.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from saver_impl.checkpoint import sstable
from saver_impl.checkpoint.bundle_merge import SINGLE_DATA_FILE, BundleMergeError, merge_into_single_file

RNG = np.random.default_rng(7)
VALUES = {
    "dense/kernel": RNG.standard_normal((5, 3)).astype(np.float32),
    "counter": np.array(41, np.int64),
    "embedding": RNG.standard_normal((6, 4)).astype(np.float64),
    "beta1_power": np.array(0.9, np.float32),
}
# ``embedding`` is partitioned in two along axis 0: rows 0-3 in part 0, rows 4-5 in part 1.
EMBEDDING_SLICES = ["6 4 0,4:0,4", "6 4 4,2:0,4"]


def save_part(prefix: str, entries: list[tuple[str, str, np.ndarray]]) -> None:
    """A single-file checkpoint of ``entries`` (key, slice spec, value), as a task writes one."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        session.run(tf.raw_ops.SaveV2(
            prefix=prefix, tensor_names=[key for key, _, _ in entries],
            shape_and_slices=[spec for _, spec, _ in entries],
            tensors=[tf.constant(value) for _, _, value in entries]))


def two_parts(directory) -> list[str]:
    first, second = str(directory / "ckpt_part-0"), str(directory / "ckpt_part-1")
    embedding = VALUES["embedding"]
    save_part(first, [("dense/kernel", "", VALUES["dense/kernel"]), ("embedding", EMBEDDING_SLICES[0], embedding[:4])])
    save_part(second, [("counter", "", VALUES["counter"]), ("embedding", EMBEDDING_SLICES[1], embedding[4:]),
                       ("beta1_power", "", VALUES["beta1_power"])])
    return [first, second]


def test_a_tensorflow_index_reads_back_and_rewrites_into_one_tensorflow_reads(tmp_path):
    prefix = str(tmp_path / "tf")
    save_part(prefix, [(key, "", value) for key, value in VALUES.items()])
    with open(f"{prefix}.index", "rb") as file:
        records = sstable.read_table(file.read())
    keys = [key for key, _ in records]
    assert keys == sorted(keys) and keys[0] == b""  # the header first, then the keys in order
    assert set(keys[1:]) == {key.encode() for key in VALUES}

    copy = str(tmp_path / "copy")
    os.link(prefix + SINGLE_DATA_FILE, copy + SINGLE_DATA_FILE)
    with open(f"{copy}.index", "wb") as file:
        file.write(sstable.write_table(records))
    reader = tf.train.load_checkpoint(copy)
    for key, value in VALUES.items():
        assert reader.get_tensor(key).tobytes() == value.tobytes(), key


def test_a_table_of_many_blocks_and_restart_points_reads_back():
    # keys sharing long prefixes (restart points every 16 records), values large enough
    # for several data blocks
    records = [(f"layer_{n:04d}/kernel".encode(), bytes([n % 251]) * 20_000) for n in range(60)]
    data = sstable.write_table(records)
    assert len(data) > 4 * sstable.BLOCK_BYTES
    assert sstable.read_table(data) == records
    assert sstable.read_table(sstable.write_table([])) == []


def test_a_table_refuses_unsorted_keys_and_a_corrupt_block():
    with pytest.raises(ValueError, match="strictly increasing"):
        sstable.write_table([(b"b", b""), (b"a", b"")])
    data = bytearray(sstable.write_table([(b"key", b"value")]))
    data[3] ^= 0xFF
    with pytest.raises(sstable.TableError, match="checksum"):
        sstable.read_table(bytes(data), "x.index")
    with pytest.raises(sstable.TableError, match="x.index: not a TensorFlow table"):
        sstable.read_table(b"not a table" * 10, "x.index")


def test_parts_merge_into_one_data_file_that_tensorflow_reads_and_restores(tmp_path):
    parts = two_parts(tmp_path)
    prefix = str(tmp_path / "ckpt")
    merge_into_single_file(parts, prefix)

    assert sorted(os.listdir(tmp_path)) == ["ckpt.data-00000-of-00001", "ckpt.index"]
    reader = tf.train.load_checkpoint(prefix)
    assert reader.get_variable_to_shape_map() == {key: list(value.shape) for key, value in VALUES.items()}
    for key, value in VALUES.items():
        assert reader.get_tensor(key).tobytes() == value.tobytes(), key

    # TensorFlow's Saver restores the partitioned variable from its slices, one per part,
    # into a graph partitioned the same way.
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        embedding = tf.compat.v1.get_variable(
            "embedding", [6, 4], tf.float64, initializer=tf.compat.v1.zeros_initializer(),
            partitioner=tf.compat.v1.fixed_size_partitioner(2, axis=0))
        tf.compat.v1.train.Saver([embedding]).restore(session, prefix)
        restored = session.run(tf.concat(list(embedding), axis=0))
    assert restored.tobytes() == VALUES["embedding"].tobytes()


def test_parts_that_write_the_same_key_are_refused_and_nothing_is_written(tmp_path):
    first, second = str(tmp_path / "a_part-0"), str(tmp_path / "a_part-1")
    save_part(first, [("counter", "", VALUES["counter"])])
    save_part(second, [("counter", "", VALUES["counter"])])
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(BundleMergeError, match="'counter'.* written by both .*a_part-0 and .*a_part-1"):
        merge_into_single_file([first, second], str(tmp_path / "a"))
    assert sorted(os.listdir(tmp_path)) == before
