"""The suite's own library: cases, model specs, generators, the matrix, checkpoint inspection."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

from autodist_verify import checkpoints, model_graph, model_spec, runner
from autodist_verify.case import Case, CaseError, Setting
from autodist_verify.crash_consistency import child_processes, left_processes, own_temp_dir
from autodist_verify.faults import WRITE_LIMIT_BYTES, FaultInjector
from autodist_verify.function_library import function_library_problems
from autodist_verify.matrix import Matrix
from autodist_verify.outcome import ERROR, FAIL, NOT_APPLICABLE, PASS
from cluster_sim import ResourceSpec
from property_tests.strategies import cases, clusters, crash_cases, custom_strategies, models
from saver_impl.strategy import Strategy, VariableInfo

MODEL = {"dtype": "float32", "features": 3, "hidden": [4], "bias": True, "embedding": {"vocab": 6, "dim": 2},
         "scalar": True, "frozen": True, "global_step": True,
         "optimizer": {"name": "adagrad", "learning_rate": 0.1}, "seed": 3}
ONE_NODE = {"nodes": [{"address": "127.0.0.1", "gpus": [0, 1], "chief": True}]}
TWO_NODES = {"nodes": [{"address": "127.0.0.1", "chief": True}, {"address": "127.0.0.2", "gpus": [0]}]}


def case_data(**changes):
    data = {"model": MODEL, "cluster": ONE_NODE, "strategy": {"builder": "PS"},
            "target": {"cluster": TWO_NODES, "strategy": {"builder": "AllReduce"}},
            "schedule": {"k": 1, "m": 1, "batch": 2, "data_seed": 0}}
    data.update(changes)
    return data


# -- cases --------------------------------------------------------------------------


def test_a_case_survives_its_json_file(tmp_path):
    case = Case.from_dict(case_data())
    case.save(tmp_path / "case.json")
    assert Case.load(tmp_path / "case.json") == case


@pytest.mark.parametrize("changes, message", [
    ({"schedule": {"k": 1, "m": 1, "batch": 1, "data_seed": 0}}, "'schedule.batch' (1) cannot give each of 2 replicas"),
    ({"strategy": {"builder": "Magic"}}, "unknown strategy builder 'Magic'"),
    ({"model": {**MODEL, "dtype": "int8"}}, "field 'dtype'"),
    ({"model": {**MODEL, "optimizer": {"name": "sgd", "beta1": 0.9}}}, "'optimizer.beta1'"),
    ({"cluster": {"nodes": []}}, "field 'nodes'"),
])
def test_invalid_cases_name_the_field(changes, message):
    with pytest.raises(CaseError) as raised:
        Case.from_dict(case_data(**changes), source="repro.json")
    assert "repro.json" in str(raised.value) and message in str(raised.value)


@pytest.mark.parametrize("fault, message", [
    ([1, "kill", "step"], "field 'fault' must be an object with exactly 'node', 'kind' and 'moment', got a list"),
    ({"node": 0, "kind": "kill"}, "field 'fault' must be an object with exactly"),
    ({"node": 2, "kind": "kill", "moment": "step"}, "field 'fault.node' must be the task index of a node of "
                                                    "'cluster' (0, the chief, to 1), got a number (2)"),
    ({"node": True, "kind": "kill", "moment": "step"}, "field 'fault.node'"),
    ({"node": 1, "kind": "flood", "moment": "step"}, "field 'fault.kind' must be one of kill, pause, disk_full"),
    ({"node": 1, "kind": "disk_full", "moment": "step"}, "field 'fault.moment' must be one of save_data, "
                                                         "save_after_data for kind 'disk_full', got a string"),
    ({"node": 1, "kind": "disk_full", "moment": "save_after_data"}, "'fault.node' must be 0, got 1"),
])
def test_an_invalid_fault_names_the_field(fault, message):
    """A reproduction with a fault the property cannot inject is refused up front."""
    with pytest.raises(CaseError) as raised:
        Case.from_dict(case_data(cluster=TWO_NODES, fault=fault), source="repro.json")
    assert "repro.json" in str(raised.value) and message in str(raised.value)


def test_a_fault_survives_the_json_file_and_is_a_feature(tmp_path):
    case = Case.from_dict(case_data(cluster=TWO_NODES, fault={"node": 1, "kind": "pause", "moment": "restore"}))
    case.save(tmp_path / "case.json")
    assert Case.load(tmp_path / "case.json") == case
    assert "fault pause × non-chief × restore" in case.features()
    chief = Case.from_dict(case_data(fault={"node": 0, "kind": "disk_full", "moment": "save_after_data"}))
    assert "fault disk_full × chief × save (after the data write)" in chief.features()


@given(case=crash_cases())
def test_generated_crash_cases_are_valid_case_files(case):
    """Crash cases survive their JSON form, carry a fault and stay inside the oracle's reach."""
    assert Case.from_dict(json.loads(json.dumps(case.to_dict()))) == case
    assert case.fault is not None and case.m >= 1
    assert not model_spec.outside_contract(case.model) and not model_spec.optional_features(case.model)


def test_what_a_property_observed_is_part_of_its_outcome(monkeypatch):
    """A label a property learns while running (the faulted node's role) reaches the
    outcome, so the matrix counts it with the case's features."""
    def observing(ctx, case):
        ctx.observed.append("faulted node holds variables")
        raise AssertionError("not a PropertyFailure: the implementation raised")

    monkeypatch.setitem(runner.PROPERTIES, "observing", observing)
    outcome = runner.run_property("observing", Case.from_dict(case_data()), None, None, None)
    assert outcome.status == FAIL and outcome.observed == ("faulted node holds variables",)


def test_a_case_file_that_is_not_json_names_the_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{\n  'model': 1\n}")
    with pytest.raises(CaseError, match=r"broken.json: not JSON \(line 2"):
        Case.load(path)


@pytest.mark.parametrize("dtype, optimizer, partitioned, applicable", [
    ("float32", {"name": "adagrad"}, set(), True),
    ("float32", {"name": "adagrad"}, {"out/kernel"}, False),
    ("float32", {"name": "adagrad"}, {"emb"}, True),  # the ULP effect is in the dense kernel only
    ("float64", {"name": "adagrad"}, {"out/kernel"}, True),
    ("float32", {"name": "proximal_adagrad"}, {"out/kernel"}, False),
    ("float64", {"name": "ftrl", "learning_rate_power": -0.7}, {"out/kernel"}, False),
    ("float64", {"name": "ftrl", "learning_rate_power": -0.5}, {"out/kernel"}, True),
    ("float32", {"name": "adadelta"}, {"out/kernel"}, False),
    ("float64", {"name": "adadelta"}, {"out/kernel"}, True),
    ("float32", {"name": "adam"}, {"out/kernel"}, True),
])
def test_an_unstable_kernel_on_a_reported_partitioned_dense_variable_is_not_applicable(
        dtype, optimizer, partitioned, applicable):
    """Decided from the layout the implementation reports, not from the builder's name;
    the kernels are those measured unstable across partition boundaries (README)."""
    model = {**MODEL, "dtype": dtype, "optimizer": {**optimizer, "learning_rate": 0.1}}
    case = Case.from_dict(case_data(model=model))
    reason = case.not_applicable(case.source, partitioned)
    assert (reason is None) == applicable
    if reason:
        assert optimizer["name"] in reason and "partition" in reason and case.source.label in reason


def test_an_unreported_layout_makes_float32_adagrad_not_applicable():
    model = {**MODEL, "optimizer": {"name": "adagrad", "learning_rate": 0.1}}
    case = Case.from_dict(case_data(model=model))
    assert "does not report its layout" in case.not_applicable(case.source, None)
    adam = Case.from_dict(case_data(model={**MODEL, "optimizer": {"name": "adam", "learning_rate": 0.1}}))
    assert adam.not_applicable(adam.source, None) is None  # no layout needed


# -- model specs and generators -----------------------------------------------------


@given(spec=models())
def test_model_spec_variables_describe_the_built_graph(spec):
    """What strategies are generated from (model_spec.variables) is what the graph holds."""
    graph = tf.Graph()
    with graph.as_default():
        handles = model_graph.build(spec)
        slots = {v.op.name for v in tf.compat.v1.global_variables()} - {v["name"] for v in model_spec.variables(spec)}
        built = {v.op.name: v for v in tf.compat.v1.global_variables() if v.op.name not in slots}
        sparse = {var.op.name for grad, var in handles.grads_and_vars if isinstance(grad, tf.IndexedSlices)}
        trainable = {v.op.name for v in tf.compat.v1.trainable_variables()}
    described = {v["name"]: v for v in model_spec.variables(spec)}
    assert set(described) == set(built)
    for name, variable in built.items():
        assert described[name]["shape"] == variable.shape.as_list()
        assert described[name]["dtype"] == variable.dtype.base_dtype.name
        assert described[name]["trainable"] == (name in trainable)
        assert described[name]["sparse_grad"] == (name in sparse)


@pytest.mark.parametrize("change, field", [
    ({"tied": True, "embedding": None}, "'tied'"),
    ({"counter": "float32"}, "'counter'"),
    ({"global_step": "int16"}, "'global_step'"),
    ({"clip_norm": 0}, "'clip_norm'"),
    ({"global_step": False, "schedule": {"name": "exponential_decay", "decay_steps": 1, "decay_rate": 0.5,
                                         "staircase": False}}, "'schedule'"),
    ({"schedule": {"name": "piecewise_constant", "boundaries": [2, 1], "scales": [1, 1, 1]}}, "'schedule.boundaries'"),
    ({"schedule": {"name": "cosine"}}, "'schedule.name'"),
    ({"dropout": {"rate": 1.5, "seed": 1}}, "'dropout'"),
    ({"dtype": "float64", "optimizer": {"name": "proximal_adagrad", "learning_rate": 0.1}}, "'optimizer.name'"),
])
def test_a_bad_model_spec_names_the_field(change, field):
    spec = {**MODEL, "global_step": True, "embedding": {"vocab": 4, "dim": 2}, **change}
    with pytest.raises(model_spec.ModelSpecError, match=field):
        model_spec.validate(spec)


def test_only_dropout_takes_a_model_outside_the_contract():
    assert model_spec.outside_contract(MODEL) is None
    reason = model_spec.outside_contract({**MODEL, "dropout": {"rate": 0.5, "seed": 1}})
    assert reason and "dropout" in reason


@given(spec=models(), cluster=clusters(), data=st.data())
def test_generated_custom_strategies_are_valid(spec, cluster, data):
    """Hand-made strategies pass the reference's strategy validation for their model and cluster."""
    resource_spec = ResourceSpec.from_dict(cluster)
    strategy = Strategy.from_dict(data.draw(custom_strategies(spec, cluster)))
    infos = [VariableInfo(v["name"], tuple(v["shape"]), v["dtype"], v["trainable"], v["sparse_grad"])
             for v in model_spec.variables(spec)]
    strategy.validate(infos, [d.name for d in resource_spec.replica_devices],
                      [d.name for d in resource_spec.ps_devices])


@given(case=cases())
def test_generated_cases_are_valid_case_files(case):
    """Every generated case survives its JSON form and gives every replica of both
    settings at least one example."""
    assert Case.from_dict(json.loads(json.dumps(case.to_dict()))) == case
    assert case.batch >= case.source.replicas and case.batch >= case.target.replicas


# -- the matrix ---------------------------------------------------------------------


def test_case_features_name_the_model_features_and_layouts():
    model = {**MODEL, "global_step": "int32", "counter": "int64", "batch_norm": True, "tied": True,
             "schedule": {"name": "exponential_decay", "decay_steps": 1, "decay_rate": 0.5, "staircase": True}}
    custom = {"custom": {"replicas": ["127.0.0.1:CPU:0", "127.0.0.2:GPU:0"], "aux_device": "127.0.0.1:CPU:0",
                         "variables": {"dense_0/kernel": {"synchronizer": "ps",
                                                          "partition": {"axis": 1, "sizes": [3, 1]},
                                                          "devices": ["127.0.0.2:CPU:0", "127.0.0.1:CPU:0"]}}}}
    case = Case(model=model, source=Setting(TWO_NODES, custom), target=Setting(ONE_NODE, {"builder": "PS"}),
                k=1, m=1, batch=3, data_seed=0, sharded=True)
    assert case.features() == sorted([
        "float32", "optimizer adagrad", "embedding", "tied embedding", "batch norm", "int64 counter",
        "int32 global_step", "schedule exponential_decay", "uneven batch split", "sharded save",
        "partition along axis > 0", "partition along axis > 0 of a variable with slots", "uneven partition",
        "parts on tasks out of offset order",
    ])
    plain_sgd = replace(case, model={**model, "optimizer": {"name": "sgd", "learning_rate": 0.1}})
    assert "partition along axis > 0" in plain_sgd.features()
    assert "partition along axis > 0 of a variable with slots" not in plain_sgd.features()


def test_the_matrix_counts_the_features_of_its_examples():
    matrix = Matrix()
    matrix.record("fine_tune", "PS", PASS)
    matrix.record_features(["dropout", "float32"])
    matrix.record_features(["float32"])
    assert matrix.to_dict("impl")["features"] == {"dropout": 1, "float32": 2}
    assert "Examples per case feature: dropout (1), float32 (2)" in matrix.markdown("impl")


def test_matrix_verdicts():
    matrix = Matrix()
    assert not matrix.conforms  # nothing ran: not a pass
    matrix.record("fine_tune", "PS", PASS)
    matrix.record("fine_tune", "PS", FAIL)
    matrix.record("fine_tune", "AllReduce", NOT_APPLICABLE, "why not")
    matrix.record("save_fidelity", "PS", PASS)
    cells = matrix.cells
    assert cells["fine_tune"]["PS"].verdict == FAIL
    assert cells["fine_tune"]["AllReduce"].verdict == NOT_APPLICABLE
    assert cells["save_fidelity"]["PS"].verdict == PASS
    assert not matrix.conforms
    text = matrix.markdown("impl")
    assert "| fine_tune | fail (1) | n/a (1) |" in text and "- why not" in text and "does NOT conform" in text


# -- checkpoint inspection ----------------------------------------------------------


def _save(directory, dtype=tf.float32, extra=False):
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.get_variable("w", [2, 3], dtype, initializer=tf.compat.v1.constant_initializer(1.0))
        if extra:
            tf.compat.v1.get_variable("b", [3], dtype, initializer=tf.compat.v1.zeros_initializer())
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return tf.compat.v1.train.Saver().save(sess, str(directory / "model"))


def test_layout_problems_name_the_key(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    base = checkpoints.contents(_save(tmp_path / "a", extra=True))
    assert checkpoints.layout_problems(base, base) == []
    problems = checkpoints.layout_problems(base, checkpoints.contents(_save(tmp_path / "b", tf.float64)))
    assert "missing key 'b' (float32[3])" in problems
    assert "key 'w': dtype float64, expected float32" in problems
    assert checkpoints.diff(_save(tmp_path / "c", extra=True), _save(tmp_path / "a", extra=True)) == []


def test_value_problems_report_the_first_differing_index():
    expected = {"w": np.zeros((2, 2), np.float32)}
    actual = {"w": np.array([[0, 0], [np.float32(1e-45), 0]], np.float32)}
    (problem,) = checkpoints.value_problems(expected, actual)
    assert "w" in problem and "(1, 0)" in problem


def test_distribution_artifacts_flag_devices_and_foreign_ops():
    original = tf.Graph()
    with original.as_default():
        tf.constant(1.0, name="a")
    exported = tf.Graph()
    with exported.as_default():
        with tf.device("/job:worker/task:1"):
            tf.constant(1.0, name="a")
        tf.constant(2.0, name="a/replica_1")
        tf.constant(3.0, name="save/Const")
    problems = checkpoints.distribution_artifacts(exported.as_graph_def(), original.as_graph_def())
    assert any("'a' is placed on '/job:worker/task:1'" in p for p in problems)
    assert any("'a/replica_1'" in p and "not in the original graph" in p for p in problems)
    assert not any("save/Const" in p for p in problems)


def _graph_with_cond():
    graph = tf.Graph()
    with graph.as_default():
        v = tf.compat.v1.get_variable("v", [2], initializer=tf.compat.v1.ones_initializer(), use_resource=True)
        x = tf.compat.v1.placeholder(tf.float32, [2], name="x")
        tf.cond(tf.reduce_sum(x) > 0, lambda: x * v, lambda: x + v, name="flow")
    return graph.as_graph_def()


def test_function_library_problems_find_missing_and_changed_functions():
    original = _graph_with_cond()
    assert function_library_problems(original, original) == []

    stripped = type(original)()
    stripped.CopyFrom(original)
    del stripped.library.function[:]
    problems = function_library_problems(stripped, original)
    assert any("node 'flow' (If) calls function" in p and "(then_branch), which the function library does not hold" in p
               for p in problems), problems

    # The then-branch made to take a float where the original takes the variable's handle.
    changed = type(original)()
    changed.CopyFrom(original)
    (flow,) = [node for node in changed.node if node.name == "flow"]
    (then_branch,) = [f for f in changed.library.function if f.signature.name == flow.attr["then_branch"].func.name]
    for arg in then_branch.signature.input_arg:
        if arg.type == tf.resource.as_datatype_enum:
            arg.type = tf.float32.as_datatype_enum
    (problem,) = function_library_problems(changed, original)
    assert "node 'flow' (If) calls function" in problem and "'DT_RESOURCE'" in problem and "the original's" in problem


def test_matrix_errors_and_interruptions_give_no_verdict():
    matrix = Matrix()
    matrix.record("fine_tune", "PS", PASS)
    assert matrix.conforms and matrix.verdict == "conforms"
    matrix.record("fine_tune", "AllReduce", ERROR, "ClusterError: node 1 did not start\ndetails")
    assert not matrix.conforms and matrix.cells["fine_tune"]["AllReduce"].verdict == ERROR
    assert matrix.verdict.startswith("incomplete") and "1 harness error" in matrix.verdict
    assert "- fine_tune / AllReduce: ClusterError: node 1 did not start" in matrix.markdown("impl")
    interrupted = Matrix()
    interrupted.record("fine_tune", "PS", PASS)
    interrupted.incomplete = "the run was interrupted"
    assert not interrupted.conforms and interrupted.to_dict("impl")["conforms"] is False
    interrupted.record("fine_tune", "PS", FAIL)
    assert interrupted.verdict == "does NOT conform"  # a failure is a finding, finished or not


# -- faults and leftovers (crash_consistency) -------------------------------------------


def _node_write(cluster, task: int, path, contents: bytes) -> None:
    """Write ``contents`` to ``path`` from the node's own process."""
    with tf.Graph().as_default():
        with tf.device(f"/job:worker/task:{task}/device:CPU:0"):
            write = tf.io.write_file(str(path), contents)
        with tf.compat.v1.Session(cluster.target, config=cluster.session_config()) as sess:
            sess.run(write)


def test_a_disk_full_fault_cuts_the_nodes_and_the_clients_writes_and_heals(cluster_pool, tmp_path):
    """The write limit takes effect where the fault says (a node's process; the client's,
    for the chief's host, only around the faulted call) and is lifted by the heal."""
    data = bytes(range(100))
    with cluster_pool.dedicated(TWO_NODES, operation_timeout_s=5) as cluster:
        injector = FaultInjector(cluster, {"node": 1, "kind": "disk_full", "moment": "save_data"})
        injector.inject()
        with pytest.raises(tf.errors.OpError, match="File too large"):
            _node_write(cluster, 1, tmp_path / "cut", data)
        assert (tmp_path / "cut").stat().st_size == WRITE_LIMIT_BYTES  # cut partway
        _node_write(cluster, 0, tmp_path / "other_node", data)  # another host's disk is not full
        injector.heal()
        _node_write(cluster, 1, tmp_path / "healed", data)
        assert (tmp_path / "healed").read_bytes() == data
        chief = FaultInjector(cluster, {"node": 0, "kind": "disk_full", "moment": "save_after_data"})
        chief.inject()
        _node_write(cluster, 0, tmp_path / "chief_node", data)  # after the data write: the client only
        with chief.client_writes(), pytest.raises(OSError, match="File too large"):
            (tmp_path / "client").write_bytes(data)
        (tmp_path / "client").write_bytes(data)  # lifted after the call
        chief.heal()


@pytest.mark.parametrize("kind", ["kill", "pause"])
def test_a_killed_or_paused_node_fails_a_step_and_its_restart_is_recorded(cluster_pool, tmp_path, kind):
    with cluster_pool.dedicated(TWO_NODES, operation_timeout_s=2) as cluster:
        injector = FaultInjector(cluster, {"node": 1, "kind": kind, "moment": "step"})
        first = set(injector.pids)
        injector.inject()
        with pytest.raises(tf.errors.OpError):  # Unavailable or Deadline Exceeded, as TensorFlow finds out
            _node_write(cluster, 1, tmp_path / "step", b"x")
        injector.heal()
        assert cluster.healthy and len(injector.pids - first) == 1 and cluster.pid(1) in injector.pids
        _node_write(cluster, 1, tmp_path / "healed", b"x")


def test_leftover_processes_and_temporary_directories_are_found(tmp_path):
    """The crash property's last checks: a child process the example started, and a
    directory made in its temporary directory, are reported."""
    import subprocess
    import tempfile
    import time

    import psutil

    before = child_processes()
    child = subprocess.Popen(["sleep", "30"])
    try:
        # Between fork and exec the child still shows this interpreter's command line.
        deadline = time.monotonic() + 10
        while psutil.Process(child.pid).cmdline() != ["sleep", "30"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [line for line in left_processes(before, set(), wait_s=0) if f"pid {child.pid} (sleep 30)" in line]
    finally:
        child.kill()
        child.wait()
    assert left_processes(before, {child.pid}, wait_s=0) == []
    with own_temp_dir(tmp_path / "own") as own:
        made = tempfile.mkdtemp()
    assert Path(made).parent == own and tempfile.gettempdir() != str(own)
