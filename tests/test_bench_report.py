"""The bench's ratios come from paired rounds: a variant measured while the machine ran
slow is compared with TensorFlow's rounds taken beside it, not with TensorFlow's
rounds from another minute."""

import pytest

from autodist_verify.bench import Measurement
from autodist_verify.bench_report import rows


def _by_variant(measurements):
    return {row["variant"]: row for row in rows(measurements)}


def test_a_variant_measured_in_a_slow_minute_is_compared_with_the_rounds_beside_it():
    # TensorFlow's own rounds ran at full speed (1 s); ours and its pairs ran while the
    # machine was twice as slow: ours took as long as TensorFlow beside it.
    tensorflow = Measurement("tensorflow", 128, save_s=[1.0, 1.0, 1.0], restore_s=[1.0, 1.0, 1.0])
    ours = Measurement("ours/ps-2nodes/sharded", 128, save_s=[2.0, 2.0, 2.0], restore_s=[1.0, 1.0, 1.0],
                       paired_tf_save_s=[2.0, 2.0, 2.0], paired_tf_restore_s=[2.0, 2.0, 2.0])
    row = _by_variant([tensorflow, ours])["ours/ps-2nodes/sharded"]
    assert row["save_vs_tensorflow"] == pytest.approx(1.0)  # the medians alone would say 0.5
    assert row["restore_vs_tensorflow"] == pytest.approx(2.0)
    assert row["save_mib_s"] == pytest.approx(64.0)  # the throughput column stays the round's own


def test_the_median_is_taken_over_the_rounds_ratios():
    # One round where ours stalled; the two others at 2x TensorFlow beside them.
    ours = Measurement("ours/allreduce/single-file", 128, save_s=[0.5, 4.0, 1.0],
                       paired_tf_save_s=[1.0, 1.0, 2.0])
    row = _by_variant([Measurement("tensorflow", 128, save_s=[1.0]), ours])["ours/allreduce/single-file"]
    assert row["save_vs_tensorflow"] == pytest.approx(2.0)
    assert row["restore_vs_tensorflow"] is None  # no restores measured: no ratio


def test_ratios_between_variants_divide_their_paired_ratios():
    tensorflow = Measurement("tensorflow", 128, save_s=[1.0], restore_s=[1.0])
    disk = Measurement("disk", 128, save_s=[4.0], restore_s=[0.25], paired_tf_save_s=[2.0],
                       paired_tf_restore_s=[1.0])
    native = Measurement("native/ps-2nodes/sharded", 128, save_s=[1.0], restore_s=[1.0],
                         paired_tf_save_s=[1.0], paired_tf_restore_s=[1.0])
    ours = Measurement("ours/ps-2nodes/sharded", 128, save_s=[1.0], restore_s=[1.0],
                       paired_tf_save_s=[3.0], paired_tf_restore_s=[1.5])
    durable = Measurement("ours/ps-2nodes/sharded/durable", 128, save_s=[2.0], paired_tf_save_s=[1.0])
    table = _by_variant([disk, tensorflow, native, ours, durable])
    assert table["ours/ps-2nodes/sharded"]["save_vs_tensorflow"] == pytest.approx(3.0)
    assert table["ours/ps-2nodes/sharded"]["save_vs_native"] == pytest.approx(3.0)
    assert table["ours/ps-2nodes/sharded"]["restore_vs_native"] == pytest.approx(1.5)
    assert table["ours/ps-2nodes/sharded/durable"]["save_vs_disk"] == pytest.approx(1.0)  # 0.5 over disk's 0.5
    assert table["ours/ps-2nodes/sharded/durable"]["save_vs_native"] is None  # the disk is its yardstick
    assert table["tensorflow"]["save_vs_disk"] == pytest.approx(2.0)
    assert table["disk"]["save_vs_disk"] == pytest.approx(1.0)
