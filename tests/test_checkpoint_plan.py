"""The checkpoint plan, computed from plain data without TensorFlow.

The save plan says, per checkpoint key, which slice of which part is written from which
copy by which task, after checking which other copies; the restore plan, which copies
every value read is written into. This module imports no TensorFlow:
``test_the_plan_tests_run_without_tensorflow`` runs its plan tests in a fresh process
and checks that TensorFlow was never imported there.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from saver_impl.checkpoint.plan import (
    CopyRef,
    LayoutError,
    RestorePlan,
    paired,
    restore_plan,
    save_plan,
    slice_spec,
    task_device,
)
from saver_impl.checkpoint.planner import CheckpointPlanner
from saver_impl.graph.layout import PartLayout, StoredCopy, VariableLayout

REPO = Path(__file__).resolve().parents[1]


def gpu(task: int) -> str:
    return f"/job:worker/task:{task}/device:GPU:0"


def ps(task: int) -> str:
    return f"/job:worker/task:{task}/device:CPU:1"


def cpu0(task: int) -> str:
    return f"/job:worker/task:{task}/device:CPU:0"


def layout(name, shape, parts, axis=0, dtype="float32"):
    """A layout from ``parts``: ``[(size, [device of copy 0, device of copy 1, ...]), ...]``."""
    built, offset = [], 0
    for index, (size, devices) in enumerate(parts):
        part_shape = shape[:axis] + (size,) + shape[axis + 1:] if shape else ()
        copies = tuple(StoredCopy(f"{name}/part_{index}/copy_{m}", d) for m, d in enumerate(devices))
        built.append(PartLayout(index, axis, offset, size, part_shape, copies))
        offset += size
    return VariableLayout(name, shape, dtype, tuple(built))


def plans(*layouts, reshape=False, sharded=False):
    by_name = {lay.name: lay for lay in layouts}
    keys = {name: name for name in by_name}
    return save_plan(keys, by_name, reshape, sharded), restore_plan(keys, by_name, reshape)


# -- layouts --------------------------------------------------------------------------


def test_an_unpartitioned_variable_is_one_whole_entry_from_its_only_copy():
    save, restore = plans(layout("w", (3, 2), [(3, [ps(1)])]))
    (entry,) = save.for_key("w")
    assert (entry.slice_spec, entry.shape, entry.dtype) == ("", (3, 2), "float32")
    assert entry.sources == (CopyRef(0, 0, ps(1)),)
    assert entry.checks == ()
    assert entry.writer == cpu0(1)
    (back,) = restore.for_key("w")
    assert (back.slice_spec, back.shape, back.reshape, back.parts) == ("", (3, 2), False, (0,))
    assert back.targets == (CopyRef(0, 0, ps(1)),)


def test_a_scalar_is_one_whole_entry():
    save, restore = plans(layout("global_step", (), [(1, [ps(0)])], dtype="int64"))
    (entry,) = save.entries
    assert (entry.key, entry.slice_spec, entry.shape, entry.dtype) == ("global_step", "", (), "int64")
    assert restore.entries[0].targets == (CopyRef(0, 0, ps(0)),)


def test_a_mirrored_variable_saves_the_master_after_checking_every_mirror():
    replicas = [gpu(0), gpu(1), gpu(2)]
    save, restore = plans(layout("w", (4,), [(4, replicas)]))
    (entry,) = save.entries
    assert entry.sources == (CopyRef(0, 0, gpu(0)),)
    assert entry.checks == (CopyRef(0, 1, gpu(1)), CopyRef(0, 2, gpu(2)))
    assert entry.writer == cpu0(0)
    (back,) = restore.entries
    assert back.targets == tuple(CopyRef(0, m, d) for m, d in enumerate(replicas))


def test_a_partition_on_axis_0_is_one_slice_per_part_written_by_its_own_task():
    save, restore = plans(layout("w", (5, 3), [(2, [ps(0)]), (3, [ps(1)])]))
    first, second = save.for_key("w")
    assert first.slice_spec == "5 3 0,2:0,3"
    assert second.slice_spec == "5 3 2,3:0,3"
    assert (first.shape, second.shape) == ((2, 3), (3, 3))
    assert (first.writer, second.writer) == (cpu0(0), cpu0(1))
    assert (first.sources, second.sources) == ((CopyRef(0, 0, ps(0)),), (CopyRef(1, 0, ps(1)),))
    back = restore.for_key("w")
    assert [e.slice_spec for e in back] == [first.slice_spec, second.slice_spec]
    assert [(e.parts, e.shape, e.targets) for e in back] == [
        ((0,), (2, 3), (CopyRef(0, 0, ps(0)),)),
        ((1,), (3, 3), (CopyRef(1, 0, ps(1)),)),
    ]


def test_a_partition_on_axis_1_slices_the_second_dimension():
    save, restore = plans(layout("w", (2, 7), [(3, [ps(0)]), (4, [ps(2)])], axis=1))
    assert [e.slice_spec for e in save.entries] == ["2 7 0,2:0,3", "2 7 0,2:3,4"]
    assert [e.shape for e in save.entries] == [(2, 3), (2, 4)]
    assert [e.writer for e in save.entries] == [cpu0(0), cpu0(2)]
    assert [e.axis for e in restore.entries] == [1, 1]


def test_a_partitioned_and_mirrored_variable_checks_and_restores_each_part_on_every_replica():
    replicas = [gpu(0), gpu(1)]
    save, restore = plans(layout("w", (3, 2), [(1, replicas), (2, replicas)]), sharded=True)
    first, second = save.entries
    assert first.sources == (CopyRef(0, 0, gpu(0)),) and first.checks == (CopyRef(0, 1, gpu(1)),)
    # sharded: task 0 writes part 0 already, so part 1 is written from its mirror on task 1
    assert second.sources == (CopyRef(1, 1, gpu(1)),) and second.checks == (CopyRef(1, 0, gpu(0)),)
    assert (first.writer, second.writer) == (cpu0(0), cpu0(1))
    assert [e.slice_spec for e in save.entries] == ["3 2 0,1:0,2", "3 2 1,2:0,2"]
    written = {t for e in restore.entries for t in e.targets}
    assert written == {CopyRef(p, m, replicas[m]) for p in (0, 1) for m in (0, 1)}


def _mixed_mirrored_and_unmirrored():
    replicas = [gpu(0), gpu(1)]
    return (layout("big", (8, 2), [(8, replicas)]), layout("small", (3,), [(3, replicas)]),
            layout("other", (4, 2), [(4, replicas)]), layout("on_ps", (20,), [(20, [ps(0)])]))


def test_a_sharded_save_writes_mirrored_variables_from_their_mirrors_tasks_in_turn_by_size():
    save, _ = plans(*_mixed_mirrored_and_unmirrored(), sharded=True)
    writers = {e.key: (e.writer, e.sources[0].copy) for e in save.entries}
    # big (16 elements) -> task 0; small -> task 1 (0 so far); other (8) -> task 1 (3 < 16);
    # an unmirrored variable is written by its only copy's task, whatever the load
    assert writers == {"big": (cpu0(0), 0), "small": (cpu0(1), 1), "other": (cpu0(1), 1), "on_ps": (cpu0(0), 0)}


def test_a_single_file_save_writes_mirrored_variables_where_most_is_written_already():
    save, _ = plans(*_mixed_mirrored_and_unmirrored())
    writers = {e.key: (e.writer, e.sources[0].copy) for e in save.entries}
    # one data file: every mirrored value comes from task 0, where big went first (a tie),
    # so nothing is copied in from task 1; the unmirrored variable still has one choice
    assert writers == {"big": (cpu0(0), 0), "small": (cpu0(0), 0), "other": (cpu0(0), 0), "on_ps": (cpu0(0), 0)}
    assert all(e.checks == (CopyRef(0, 1, gpu(1)),) for e in save.entries if e.key != "on_ps")


def test_a_single_file_save_follows_an_unmirrored_variable_to_its_task():
    replicas = [gpu(0), gpu(1)]
    save, _ = plans(layout("on_task_1", (20,), [(20, [gpu(1)])]), layout("mirrored", (4,), [(4, replicas)]))
    assert [(e.key, e.writer) for e in save.entries] == [("on_task_1", cpu0(1)), ("mirrored", cpu0(1))]
    assert save.for_key("mirrored")[0].sources == (CopyRef(0, 1, gpu(1)),)


def test_reshape_saves_and_restores_a_partitioned_variable_whole():
    replicas = [gpu(0), gpu(1)]
    save, restore = plans(layout("w", (4, 2), [(1, replicas), (3, replicas)]), reshape=True)
    (entry,) = save.entries
    assert (entry.slice_spec, entry.shape, entry.writer) == ("", (4, 2), cpu0(0))
    assert entry.sources == (CopyRef(0, 0, gpu(0)), CopyRef(1, 0, gpu(0)))
    assert entry.checks == (CopyRef(0, 1, gpu(1)), CopyRef(1, 1, gpu(1)))
    (back,) = restore.entries
    assert (back.reshape, back.parts, back.sizes, back.shape) == (True, (0, 1), (1, 3), (4, 2))
    assert len(back.targets) == 4


def test_a_partitioned_variable_of_a_dtype_tensorflow_cannot_assemble_from_slices_is_saved_whole():
    """TensorFlow's reader raises "Dtype half not supported" for a sliced float16 key,
    so such a checkpoint could only be restored into the same partitioning."""
    for dtype in ("float16", "uint32"):
        save, restore = plans(layout("w", (4, 2), [(1, [ps(0)]), (3, [ps(1)])], dtype=dtype))
        (entry,) = save.entries
        assert (entry.slice_spec, entry.shape) == ("", (4, 2))
        assert entry.sources == (CopyRef(0, 0, ps(0)), CopyRef(1, 0, ps(1)))
        (back,) = restore.entries
        assert (back.slice_spec, back.parts, back.sizes) == ("", (0, 1), (1, 3))


def test_keys_name_their_variables_and_keep_their_order():
    lay = layout("w", (2,), [(2, [ps(0)])])
    save = save_plan({"b": "w", "a": "w"}, {"w": lay})
    assert [(e.key, e.variable) for e in save.entries] == [("b", "w"), ("a", "w")]


def test_the_slice_spec_is_tensorflows_format():
    part = PartLayout(1, 1, 3, 4, (2, 4, 5))
    assert slice_spec((2, 7, 5), part) == "2 7 5 0,2:3,4:0,5"


@pytest.mark.parametrize("device, task", [
    ("/job:worker/task:0/device:CPU:1", "/job:worker/task:0/device:CPU:0"),
    ("/job:worker/replica:0/task:1/device:GPU:0", "/job:worker/replica:0/task:1/device:CPU:0"),
    ("/job:worker/task:1/gpu:0", "/job:worker/task:1/device:CPU:0"),
    ("/job:ps/task:2", "/job:ps/task:2/device:CPU:0"),
    ("", "/device:CPU:0"),
])
def test_the_writer_is_the_cpu_0_of_the_copys_task(device, task):
    assert task_device(device) == task


# -- inconsistent layouts ----------------------------------------------------------------


def _with_part(lay, index, **changes):
    parts = list(lay.parts)
    fields = {**vars(parts[index]), **changes}
    parts[index] = PartLayout(**fields)
    return VariableLayout(lay.name, lay.shape, lay.dtype, tuple(parts))


def _error(lay) -> str:
    with pytest.raises(LayoutError) as raised:
        save_plan({lay.name: lay.name}, {lay.name: lay})
    return str(raised.value)


def test_parts_that_do_not_reach_the_end_of_the_axis_are_refused():
    message = _error(layout("w", (5, 3), [(2, [ps(0)]), (2, [ps(1)])]))
    assert "variable 'w'" in message and "do not cover the axis" in message and "axis 0 has size 5" in message


def test_a_gap_between_parts_is_refused():
    lay = _with_part(layout("w", (6, 3), [(2, [ps(0)]), (4, [ps(1)])]), 1, offset=3, size=3, shape=(3, 3))
    message = _error(lay)
    assert "do not cover the axis" in message and "[2:3]" in message


def test_overlapping_parts_are_refused():
    lay = _with_part(layout("w", (4, 3), [(2, [ps(0)]), (2, [ps(1)])]), 1, offset=1, size=3, shape=(3, 3))
    message = _error(lay)
    assert "part 1 [1:4] overlaps" in message and "variable 'w'" in message


def test_a_part_of_the_wrong_shape_is_refused():
    lay = _with_part(layout("w", (4, 3), [(2, [ps(0)]), (2, [ps(1)])]), 0, shape=(2, 2))
    assert "part 0 has shape (2, 2), expected (2, 3)" in _error(lay)


def test_parts_split_on_different_axes_are_refused():
    lay = _with_part(layout("w", (4, 4), [(2, [ps(0)]), (2, [ps(1)])]), 1, axis=1, offset=0, shape=(4, 2))
    assert "part 1 is split on axis 1, part 0 on axis 0" in _error(lay)


def test_a_part_without_a_copy_is_refused():
    assert "part 1 has no stored copy" in _error(layout("w", (4,), [(2, [ps(0)]), (2, [])]))


def test_a_key_of_a_variable_without_layout_is_refused():
    with pytest.raises(LayoutError, match="key 'k' names variable 'v', which has no layout"):
        restore_plan({"k": "v"}, {})


# -- the planner and pairing ---------------------------------------------------------------


def test_the_default_planner_gives_the_reference_plans():
    lay = layout("w", (3, 2), [(1, [gpu(0), gpu(1)]), (2, [gpu(0), gpu(1)])])
    assert CheckpointPlanner().plans({"w": "w"}, {"w": lay}) == plans(lay)


def test_each_save_entry_pairs_with_the_restore_entry_of_its_slice():
    save, restore = plans(layout("w", (3, 2), [(1, [ps(0)]), (2, [ps(1)])]), layout("b", (2,), [(2, [ps(0)])]))
    assert [(s.key, s.slice_spec, r.slice_spec) for s, r in paired(save, restore)] == [
        ("w", "3 2 0,1:0,2", "3 2 0,1:0,2"), ("w", "3 2 1,2:0,2", "3 2 1,2:0,2"), ("b", "", ""),
    ]
    with pytest.raises(LayoutError, match="key 'b' slice '', which the restore plan does not read"):
        paired(save, RestorePlan(restore.entries[:2]))
    with pytest.raises(LayoutError, match="the restore plan reads key 'w' slice '3 2 0,1:0,2' twice"):
        paired(save, RestorePlan(restore.entries + restore.entries[:1]))


# -- without TensorFlow ---------------------------------------------------------------------

_NEEDS_TENSORFLOW_OR_A_PROCESS = {
    "test_the_plan_tests_run_without_tensorflow",
    "test_task_device_agrees_with_tensorflow",
}

_RUN_WITHOUT_TENSORFLOW = f"""
import sys
import tests.test_checkpoint_plan as module
for name, test in sorted(vars(module).items()):
    if not name.startswith("test_") or name in {sorted(_NEEDS_TENSORFLOW_OR_A_PROCESS)!r}:
        continue
    marks = getattr(test, "pytestmark", [])
    cases = [args for mark in marks if mark.name == "parametrize" for args in mark.args[1]] or [()]
    for args in cases:
        test(*args)
    print("ran", name)
assert "tensorflow" not in sys.modules, "TensorFlow was imported"
print("no tensorflow")
"""


def test_the_plan_tests_run_without_tensorflow():
    result = subprocess.run([sys.executable, "-c", _RUN_WITHOUT_TENSORFLOW], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ran test_") == len(
        [n for n in globals() if n.startswith("test_") and n not in _NEEDS_TENSORFLOW_OR_A_PROCESS])
    assert result.stdout.strip().endswith("no tensorflow")


def test_task_device_agrees_with_tensorflow():
    tf = pytest.importorskip("tensorflow")
    for device in ("/job:worker/task:3/device:GPU:1", "/job:worker/replica:0/task:1/device:CPU:2", "/job:ps/task:0"):
        expected = tf.DeviceSpec.from_string(device).replace(device_type="CPU", device_index=0).to_string()
        assert task_device(device) == expected
    assert slice_spec((5, 3), PartLayout(1, 0, 2, 3, (3, 3))) == tf.Variable.SaveSliceInfo(
        "w", [5, 3], [2, 0], [3, 3]).spec
