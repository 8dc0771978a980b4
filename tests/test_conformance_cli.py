"""The ``autodist-verify`` command, run as a subprocess like a user would."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf

from autodist_verify.profiles import EXAMPLES
from property_tests.strategies import STRATEGY_LABELS
from tests.test_conformance_library import MODEL, ONE_NODE, TWO_NODES


def autodist_verify(*arguments, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "autodist_verify", *arguments], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def write_checkpoint(directory, value=1.0, with_bias=True):
    directory.mkdir()
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.get_variable("w", [2, 2], initializer=tf.compat.v1.constant_initializer(value))
        if with_bias:
            tf.compat.v1.get_variable("b", [2], initializer=tf.compat.v1.zeros_initializer())
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return tf.compat.v1.train.Saver().save(sess, str(directory / "model"))


def test_diff_of_identical_checkpoints_exits_0(tmp_path):
    a, b = write_checkpoint(tmp_path / "a"), write_checkpoint(tmp_path / "b")
    done = autodist_verify("diff", a, b)
    assert done.returncode == 0, done.stderr
    assert "identical: 2 keys" in done.stdout


def test_diff_names_the_differing_key_and_exits_1(tmp_path):
    a, b = write_checkpoint(tmp_path / "a"), write_checkpoint(tmp_path / "b", value=1.5, with_bias=False)
    done = autodist_verify("diff", a, b)
    assert done.returncode == 1
    assert "missing key 'b'" in done.stdout
    assert "w" in done.stdout.replace("missing key 'b'", "") and "2 difference(s)" in done.stdout


def test_diff_of_a_missing_checkpoint_exits_2(tmp_path):
    done = autodist_verify("diff", str(tmp_path / "nothing"), str(tmp_path / "nothing"))
    assert done.returncode == 2 and "cannot read a checkpoint" in done.stderr


def test_inspect_against_a_model_spec(tmp_path):
    """A checkpoint TensorFlow's Saver wrote for the model conforms; one missing a key does not."""
    spec_path = tmp_path / "model.json"
    spec_path.write_text(json.dumps(MODEL))
    graph = tf.Graph()
    with graph.as_default():
        from autodist_verify import model_graph

        model_graph.build(MODEL)
        variables = tf.compat.v1.global_variables()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            full = tf.compat.v1.train.Saver().save(sess, str(tmp_path / "full" / "model"))
            partial = tf.compat.v1.train.Saver([v for v in variables if v.op.name != "emb"]).save(
                sess, str(tmp_path / "partial" / "model"))
    done = autodist_verify("inspect", full, "--model-spec", str(spec_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "exactly what TensorFlow's Saver writes" in done.stdout
    done = autodist_verify("inspect", partial, "--model-spec", str(spec_path))
    assert done.returncode == 1
    assert "MISMATCH missing key 'emb'" in done.stdout


def case_file(tmp_path, prop="save_fidelity"):
    path = tmp_path / "case.json"
    path.write_text(json.dumps({
        "property": prop, "model": {**MODEL, "optimizer": {"name": "adam", "learning_rate": 0.01}},
        "cluster": ONE_NODE, "strategy": {"builder": "PartitionedPS"},
        "target": {"cluster": TWO_NODES, "strategy": {"builder": "AllReduce"}},
        "schedule": {"k": 2, "m": 1, "batch": 2, "data_seed": 5}}))
    return path


def test_replay_of_a_conforming_case_exits_0(tmp_path):
    done = autodist_verify("replay", str(case_file(tmp_path)))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "save_fidelity: pass" in done.stdout


def test_replay_against_a_mutant_exits_1_with_the_problem(tmp_path):
    done = autodist_verify("replay", str(case_file(tmp_path)), "--impl", "tests.mutants.drop_global_step")
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    assert "save_fidelity: FAIL" in done.stdout and "missing key 'global_step'" in done.stdout


@pytest.mark.parametrize("content, message", [
    ("{", "not JSON"),
    ('{"model": {}}', "missing field 'cluster'"),
])
def test_replay_of_a_bad_file_exits_2(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    done = autodist_verify("replay", str(path))
    assert done.returncode == 2 and message in done.stderr


def test_replay_with_an_unknown_implementation_exits_2(tmp_path):
    done = autodist_verify("replay", str(case_file(tmp_path)), "--impl", "no_such_module")
    assert done.returncode == 2 and "--impl no_such_module: cannot import it" in done.stderr


def test_run_with_an_unknown_implementation_exits_2_and_leaves_no_report(tmp_path):
    report = tmp_path / "report"
    done = autodist_verify("run", "--impl", "no_such_module", "--report", str(report))
    assert done.returncode == 2 and "--impl no_such_module: cannot import it" in done.stderr, done.stderr[-3000:]
    assert not report.exists()


# -- bad input: one message naming the file and field, or the module; exit 2 ------------------

DELETE = object()


def _with(path_in_case, value):
    """A valid case with the field at ``path_in_case`` set to ``value`` (or removed, for DELETE)."""
    data = json.loads(json.dumps({
        "property": "save_fidelity", "format": "autodist-verify/case/v1",
        "model": {**MODEL, "optimizer": {"name": "adam", "learning_rate": 0.01}},
        "cluster": ONE_NODE, "strategy": {"builder": "PartitionedPS"},
        "target": {"cluster": TWO_NODES, "strategy": {"builder": "AllReduce"}},
        "schedule": {"k": 2, "m": 1, "batch": 2, "data_seed": 5, "sharded": False},
        "saver_program": {"options": {"max_to_keep": 2, "pad_step_number": False, "save_relative_paths": False,
                                      "sharded": False}, "operations": [["train"], ["save", True]]}}))
    parent = data
    for key in path_in_case[:-1]:
        parent = parent[key]
    if value is DELETE:
        del parent[path_in_case[-1]]
    else:
        parent[path_in_case[-1]] = value
    return data


@pytest.mark.parametrize("path_in_case, value, message", [
    (("target",), [], "field 'target' must be an object with exactly 'cluster' and 'strategy', got a list"),
    (("schedule",), [], "field 'schedule' must be an object {k, m, batch, data_seed[, sharded]}, got a list"),
    (("model",), [], "field 'model' must be an object (a model spec), got a list"),
    (("property",), ["save_fidelity"], "field 'property' must be a property's name (a string), got a list"),
    (("schedul",), {}, "unknown field 'schedul'"),
    (("schedule", "k"), True, "field 'schedule.k' must be an integer >= 0, got true"),
    (("model", "optimizer", "learning_rate"), "0.1", "field 'optimizer.learning_rate' must be a number"),
], ids=["target-list", "schedule-list", "model-list", "property-list", "unknown-field", "k-bool",
        "learning-rate-string"])
def test_replay_of_a_case_with_a_bad_field_exits_2_naming_it(tmp_path, path_in_case, value, message):
    """Issue 13, item 7: a field of the wrong JSON type (or an unknown one) is one line
    naming the file and the field, exit 2, no traceback, and nothing started."""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_with(path_in_case, value)))
    done = autodist_verify("replay", str(path))
    assert done.returncode == 2, done.stdout + done.stderr[-3000:]
    assert f"Error: {path}: " in done.stderr and message in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "running" not in done.stderr


WRONG_VALUES = [[], {}, "x", -1, 1.5, None, True]


def _paths(value, prefix=()):
    """Every path to a field (object key or list index) inside ``value``."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, inner in items:
        yield (*prefix, key)
        yield from _paths(inner, (*prefix, key))


def test_what_replay_reads_fails_only_with_a_case_error():
    """Every field of a case, at every depth, replaced by each value of the wrong kinds
    (or removed): reading the case either accepts it or raises CaseError naming the
    file, never another exception (a traceback in `replay`)."""
    from autodist_verify.case import Case, CaseError

    paths = list(_paths(_with(("format",), "autodist-verify/case/v1")))
    for path_in_case in paths:
        for value in [*WRONG_VALUES, DELETE]:
            try:
                Case.from_dict(_with(path_in_case, value), source="fuzzed.json")
            except CaseError as err:
                assert "fuzzed.json" in str(err), (path_in_case, value, str(err))
            except Exception as err:  # noqa: BLE001 - the point: nothing but CaseError
                pytest.fail(f"{path_in_case} = {value!r}: {type(err).__name__}: {err}")


BROKEN_IMPLEMENTATION = 'raise RuntimeError("cannot start: no licence server\\nsecond line of the message")\n'
BROKEN_MESSAGE = "--impl broken_impl: cannot import it: RuntimeError: cannot start: no licence server"


@pytest.mark.parametrize("command", [
    ["replay", "CASE"],
    ["bench", "--sizes", "1", "--layouts", "ps-1node", "--rounds", "1"],
    ["inspect", "CHECKPOINT", "--plan", "CASE"],
    ["run", "-k", "test_saved_model"],
], ids=["replay", "bench", "inspect", "run"])
def test_an_implementation_that_raises_on_import_is_one_message_and_exit_2(tmp_path, command):
    """Issue 13, item 7: `--impl` naming a module that raises on import is checked once,
    before anything runs: one line with the module, the exception's type and its first
    line, exit 2, no traceback (it was 37 lines in replay and bench, ~1,000 lines and
    exit 1 in run)."""
    (tmp_path / "broken_impl.py").write_text(BROKEN_IMPLEMENTATION)
    checkpoint = write_checkpoint(tmp_path / "ckpt") if "CHECKPOINT" in command else ""
    arguments = [{"CASE": str(case_file(tmp_path)), "CHECKPOINT": checkpoint}.get(a, a) for a in command]
    done = autodist_verify(*arguments[:1], "--impl", "broken_impl", *arguments[1:], cwd=tmp_path)
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stderr.count(BROKEN_MESSAGE) == 1, done.stderr[-3000:]
    assert "second line" not in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""  # nothing ran: no pytest session, no checkpoint listing, no table


def test_the_plugin_stops_a_pytest_run_whose_implementation_cannot_be_imported(tmp_path):
    """`pytest property_tests --impl MODULE` itself (the plugin): one message and exit 2
    before any test runs, not one error per test."""
    import property_tests

    (tmp_path / "broken_impl.py").write_text(BROKEN_IMPLEMENTATION)
    suite = str(Path(property_tests.__file__).parent)
    done = subprocess.run([sys.executable, "-m", "pytest", suite, "--impl", "broken_impl", "-k", "test_saved_model",
                           "-p", "no:cacheprovider"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 2, done.stdout[-3000:]
    output = done.stdout + done.stderr
    assert output.count(BROKEN_MESSAGE) == 1, output[-3000:]
    assert "ERROR at setup" not in output and " passed" not in output and "conformance matrix" not in output


def _per_column(profile):
    """Examples per strategy column under ``profile``; Hypothesis may run one beyond max_examples."""
    per_column = EXAMPLES[profile] // len(STRATEGY_LABELS)
    return range(per_column, per_column + 2)


@pytest.mark.parametrize("workers, profile, examples", [("0", [], _per_column("ci")),
                                                        ("2", ["--profile", "quick"], _per_column("quick"))])
def test_run_prints_the_matrix_and_writes_the_report(tmp_path, workers, profile, examples):
    """The main job, narrowed with pytest's -k to one property and one strategy, in this
    process in the default profile (ci) and in two pytest-xdist workers (whose outcomes
    the matrix merges) in the quick one."""
    report = tmp_path / "report"
    done = autodist_verify("run", "--report", str(report), "--workers", workers, *profile,
                           "-k", "test_saved_model and AllReduce", timeout=900)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "conformance matrix" in done.stdout and "| saved_model |" in done.stdout
    matrix = json.loads((report / "matrix.json").read_text())
    assert matrix["conforms"] is True
    cell = matrix["properties"]["saved_model"]["AllReduce"]
    assert cell["verdict"] == "pass"
    assert cell["passed"] + cell["not_applicable"] in examples, cell
    # TensorFlow's C++ log (absl lines such as "W0000 00:00:... cudart_stub.cc") goes to the
    # report's log, from this process and from the workers and nodes it starts
    absl_line = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d", re.MULTILINE)
    assert not absl_line.search(done.stderr), done.stderr[-3000:]
    assert "absl::InitializeLog" not in done.stderr, done.stderr[-3000:]
    assert (report / "tensorflow.log").is_file()


def test_inspect_prints_the_implementations_checkpoint_plan(tmp_path):
    """--plan: which device writes which slice of each key, from which copies, checking which."""
    case = case_file(tmp_path)
    model = json.loads(case.read_text())["model"]
    spec_path = tmp_path / "model.json"
    spec_path.write_text(json.dumps(model))
    with tf.Graph().as_default():
        from autodist_verify import model_graph

        model_graph.build(model)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            prefix = tf.compat.v1.train.Saver().save(sess, str(tmp_path / "ckpt" / "model"))
    done = autodist_verify("inspect", prefix, "--model-spec", str(spec_path), "--plan", str(case))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    plan = done.stdout.split("plan of saver_impl for PartitionedPS on 1 node(s):")[1]
    rows = [line.split() for line in plan.splitlines() if "written by" in line]
    emb = [row for row in rows if row[0] == "emb"]
    assert len(emb) == 2 and all(row[1] == "slice" for row in emb), plan  # PartitionedPS splits emb in two
    assert "PLAN ONLY" not in done.stdout and "CHECKPOINT ONLY" not in done.stdout
    other = tmp_path / "other"
    other.mkdir()
    elsewhere = json.loads(case.read_text())
    elsewhere["model"]["optimizer"] = {"name": "sgd", "learning_rate": 0.1}  # no slots in the plan
    (other / "case.json").write_text(json.dumps(elsewhere))
    done = autodist_verify("inspect", prefix, "--plan", str(other / "case.json"))
    assert "CHECKPOINT ONLY 'emb/Adam'" in done.stdout, done.stdout[-2000:]
