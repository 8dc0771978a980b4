"""The strategy data model: helpers, JSON reading and writing, validation messages."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autodist_verify.strategy_format import Partition, Strategy, StrategyError, VariableConfig, VariableInfo

A, B, C = "127.0.0.1:CPU:0", "127.0.0.2:CPU:0", "127.0.0.3:CPU:0"
G0, G1 = "127.0.0.1:GPU:0", "127.0.0.1:GPU:1"
REPLICA_DEVICES = [G0, G1, B]
PS_DEVICES = [A, B]

HAND_WRITTEN = """{
  "format": "autodist-verify/strategy/v1",
  "replicas": ["127.0.0.1:GPU:0", "127.0.0.1:GPU:1", "127.0.0.2:CPU:0"],
  "aux_device": "127.0.0.1:CPU:0",
  "variables": {
    "dense/kernel": {"synchronizer": "ps", "devices": ["127.0.0.2:CPU:0"]},
    "emb": {"synchronizer": "ps", "partition": {"axis": 0, "sizes": [5, 5]},
            "devices": ["127.0.0.1:CPU:0", "127.0.0.2:CPU:0"]},
    "dense/bias": {"synchronizer": "allreduce", "sync": true, "staleness": 0},
    "w2": {"synchronizer": "allreduce", "partition": {"axis": 0, "sizes": [2, 2]}},
    "global_step": {"synchronizer": "ps", "devices": ["127.0.0.1:CPU:0"]}
  }
}
"""

VARIABLES = [
    VariableInfo("dense/kernel", (4, 3), "float32"),
    VariableInfo("emb", (10, 8), "float32", sparse_grad=True),
    VariableInfo("dense/bias", (3,), "float32"),
    VariableInfo("w2", (4, 2), "float64"),
    VariableInfo("global_step", (), "int64", trainable=False),
]

EXPECTED = Strategy(
    replicas=(G0, G1, B),
    aux_device=A,
    variables={
        "dense/kernel": VariableConfig("ps", (B,)),
        "emb": VariableConfig("ps", (A, B), Partition(0, (5, 5))),
        "dense/bias": VariableConfig("allreduce"),
        "w2": VariableConfig("allreduce", (), Partition(0, (2, 2))),
        "global_step": VariableConfig("ps", (A,)),
    },
)


# -- helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, dtype, nbytes",
    [
        ((4, 3), "float32", 48),
        ((4, 3), "float16", 24),
        ((4, 3), "float64", 96),
        ((5,), "int32", 20),
        ((5,), "int64", 40),
        ((7,), "bool", 7),
        ((), "float32", 4),
        ((0, 3), "float32", 0),
    ],
)
def test_nbytes(shape, dtype, nbytes):
    assert VariableInfo("v", shape, dtype).nbytes == nbytes


def test_nbytes_of_an_unknown_dtype_names_variable_and_dtype():
    with pytest.raises(StrategyError, match=r"'v'.*'dtype'.*'string'"):
        _ = VariableInfo("v", (2,), "string").nbytes


def test_sequences_are_stored_as_tuples():
    assert VariableInfo("v", [2, 3], "float32").shape == (2, 3)
    assert Partition(0, [1, 2]) == Partition(0, (1, 2))
    assert VariableConfig("ps", [A]) == VariableConfig("ps", (A,))
    assert Strategy([G0], A, {}) == Strategy((G0,), A, {})


def test_partition_offsets_and_num_parts():
    assert Partition(0, (3, 1, 4)).offsets == (0, 3, 4)
    assert Partition(1, (5,)).offsets == (0,)
    assert VariableConfig("allreduce", partition=Partition(0, (3, 1, 4))).num_parts == 3
    assert VariableConfig("ps", (A,)).num_parts == 1


def test_for_variable():
    assert EXPECTED.for_variable("emb") == VariableConfig("ps", (A, B), Partition(0, (5, 5)))
    with pytest.raises(StrategyError, match=r"'variables'.*'nope'"):
        EXPECTED.for_variable("nope")


# -- reading and writing ---------------------------------------------------------------


def test_hand_written_file_loads(tmp_path):
    path = tmp_path / "strategy.json"
    path.write_text(HAND_WRITTEN)
    loaded = Strategy.load(path)
    assert loaded == EXPECTED
    assert loaded.replicas == (G0, G1, B)  # replica order is kept
    loaded.validate(VARIABLES, REPLICA_DEVICES, PS_DEVICES)


def test_format_key_may_be_omitted_when_reading():
    data = json.loads(HAND_WRITTEN)
    del data["format"]
    assert Strategy.from_dict(data) == EXPECTED


def test_written_form():
    assert EXPECTED.to_dict() == {
        "format": "autodist-verify/strategy/v1",
        "replicas": [G0, G1, B],
        "aux_device": A,
        "variables": {
            "dense/kernel": {"synchronizer": "ps", "devices": [B]},
            "emb": {"synchronizer": "ps", "partition": {"axis": 0, "sizes": [5, 5]}, "devices": [A, B]},
            "dense/bias": {"synchronizer": "allreduce"},
            "w2": {"synchronizer": "allreduce", "partition": {"axis": 0, "sizes": [2, 2]}},
            "global_step": {"synchronizer": "ps", "devices": [A]},
        },
    }


def test_round_trips(tmp_path):
    assert Strategy.from_json(EXPECTED.to_json()) == EXPECTED
    assert Strategy.from_dict(EXPECTED.to_dict()) == EXPECTED
    EXPECTED.save(tmp_path / "s.json")
    assert Strategy.load(tmp_path / "s.json") == EXPECTED


def test_invalid_settings_survive_a_round_trip_so_validate_can_refuse_them():
    odd = Strategy((G0,), A, {"v": VariableConfig("allreduce", (A,), sync=False, staleness=3)})
    data = odd.to_dict()
    assert data["variables"]["v"] == {"synchronizer": "allreduce", "devices": [A], "sync": False, "staleness": 3}


def _with(path: tuple, value, delete: bool = False) -> dict:
    """The hand-written strategy as a dict, with one field changed or deleted."""
    data = json.loads(HAND_WRITTEN)
    target = data
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    "data, pattern",
    [
        (_with(("extra",), 1), r"unknown field 'extra'"),
        (_with(("replicas",), None, delete=True), r"missing field 'replicas'"),
        (_with(("variables",), None, delete=True), r"missing field 'variables'"),
        (_with(("format",), "v0"), r"field 'format' is 'v0'"),
        (_with(("replicas",), "127.0.0.1:GPU:0"), r"field 'replicas' must be a list"),
        (_with(("replicas",), [1]), r"field 'replicas' must be a list"),
        (_with(("aux_device",), ["x"]), r"field 'aux_device' must be a device name"),
        (_with(("variables",), []), r"field 'variables' must map"),
        (_with(("variables", "emb"), "ps"), r"variable 'emb': expected a mapping"),
        (_with(("variables", "emb", "shards"), 2), r"variable 'emb': unknown field 'shards'"),
        (_with(("variables", "emb", "synchronizer"), None, delete=True), r"variable 'emb': missing field 'synchronizer'"),
        (_with(("variables", "emb", "synchronizer"), 1), r"variable 'emb': field 'synchronizer' must be a string"),
        (_with(("variables", "emb", "devices"), "127.0.0.1:CPU:0"), r"variable 'emb': field 'devices' must be a list"),
        (_with(("variables", "emb", "partition"), [0, 5]), r"variable 'emb': field 'partition': expected a mapping"),
        (_with(("variables", "emb", "partition", "dim"), 0), r"variable 'emb': field 'partition': unknown field 'dim'"),
        (_with(("variables", "emb", "partition", "sizes"), None, delete=True), r"variable 'emb': field 'partition': missing field 'sizes'"),
        (_with(("variables", "emb", "partition", "axis"), "0"), r"variable 'emb': field 'partition.axis' must be an integer"),
        (_with(("variables", "emb", "partition", "axis"), False), r"variable 'emb': field 'partition.axis' must be an integer"),
        (_with(("variables", "emb", "partition", "sizes"), [5.0, 5]), r"variable 'emb': field 'partition.sizes' must be a list of integers"),
        (_with(("variables", "emb", "partition", "sizes"), 10), r"variable 'emb': field 'partition.sizes' must be a list of integers"),
        (_with(("variables", "emb", "sync"), "yes"), r"variable 'emb': field 'sync' must be true or false"),
        (_with(("variables", "emb", "staleness"), 0.5), r"variable 'emb': field 'staleness' must be an integer"),
        (_with(("variables", "emb", "sync"), False), r"variable 'emb': fields 'sync'.*asynchronous PS is outside this implementation"),
        (_with(("variables", "emb", "staleness"), 2), r"variable 'emb': fields 'sync'.*'staleness'=2.*asynchronous PS"),
    ],
)
def test_from_dict_rejects_bad_structure_with_the_field_path(data, pattern):
    with pytest.raises(StrategyError, match=pattern):
        Strategy.from_dict(data)


def test_from_json_errors_name_the_source(tmp_path):
    with pytest.raises(StrategyError, match=r"strategy <json>: not valid JSON"):
        Strategy.from_json("{")
    with pytest.raises(StrategyError, match=r"strategy <json>: expected a mapping, got list"):
        Strategy.from_json("[]")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_with(("variables", "w2", "partition", "axis"), "x")))
    with pytest.raises(StrategyError, match=rf"strategy {path}: variable 'w2': field 'partition.axis'"):
        Strategy.load(path)


# -- validation ------------------------------------------------------------------------


def _replace_config(name: str, config: VariableConfig) -> Strategy:
    return Strategy(EXPECTED.replicas, EXPECTED.aux_device, {**EXPECTED.variables, name: config})


ALLREDUCE_GLOBAL_STEP = _replace_config("global_step", VariableConfig("allreduce"))


@pytest.mark.parametrize(
    "strategy, variables, pattern",
    [
        # the variable set
        (_replace_config("ghost", VariableConfig("ps", (A,))), VARIABLES,
         r"field 'variables' has an entry for variable 'ghost', which the graph does not have"),
        (EXPECTED, VARIABLES + [VariableInfo("extra", (2,), "float32")],
         r"field 'variables' has no entry for graph variable 'extra'"),
        (EXPECTED, VARIABLES + [VARIABLES[0]], r"variable 'dense/kernel' appears twice"),
        # synchronizer
        (_replace_config("emb", VariableConfig("mirrored")), VARIABLES,
         r"variable 'emb': field 'synchronizer' is 'mirrored'"),
        (ALLREDUCE_GLOBAL_STEP, VARIABLES,
         r"variable 'global_step': field 'synchronizer' is 'allreduce' for a non-trainable variable; "
         r"the train op may update"),
        # devices
        (_replace_config("dense/kernel", VariableConfig("ps")), VARIABLES,
         r"variable 'dense/kernel': field 'devices' has 0 entries for 1 part"),
        (_replace_config("dense/kernel", VariableConfig("ps", (A, B))), VARIABLES,
         r"variable 'dense/kernel': field 'devices' has 2 entries for 1 part"),
        (_replace_config("emb", VariableConfig("ps", (A,), Partition(0, (5, 5)))), VARIABLES,
         r"variable 'emb': field 'devices' has 1 entries for 2 part"),
        (_replace_config("dense/kernel", VariableConfig("ps", (G0,))), VARIABLES,
         r"variable 'dense/kernel': field 'devices' names '127.0.0.1:GPU:0', which is not a parameter-server device"),
        (_replace_config("dense/kernel", VariableConfig("ps", (C,))), VARIABLES,
         r"variable 'dense/kernel': field 'devices' names '127.0.0.3:CPU:0'"),
        (_replace_config("dense/bias", VariableConfig("allreduce", (A,))), VARIABLES,
         r"variable 'dense/bias': field 'devices' must be absent for 'allreduce'"),
        # partition
        (_replace_config("global_step", VariableConfig("ps", (A, A), Partition(0, (1, 1)))), VARIABLES,
         r"variable 'global_step': field 'partition' is set on a scalar"),
        (_replace_config("emb", VariableConfig("ps", (A, B), Partition(2, (5, 5)))), VARIABLES,
         r"variable 'emb': field 'partition.axis' is 2, outside the variable's axes 0..1"),
        (_replace_config("emb", VariableConfig("ps", (A, B), Partition(-1, (4, 4)))), VARIABLES,
         r"variable 'emb': field 'partition.axis' is -1"),
        (_replace_config("emb", VariableConfig("ps", (A, B), Partition(0, (4, 5)))), VARIABLES,
         r"variable 'emb': field 'partition.sizes' \[4, 5\] sums to 9, not to the size 10 of axis 0"),
        (_replace_config("emb", VariableConfig("ps", (A, B), Partition(1, (4, 5)))), VARIABLES,
         r"variable 'emb': field 'partition.sizes' \[4, 5\] sums to 9, not to the size 8 of axis 1"),
        (_replace_config("emb", VariableConfig("ps", (A, B, A), Partition(0, (6, 5, -1)))), VARIABLES,
         r"variable 'emb': field 'partition.sizes' \[6, 5, -1\] must be a non-empty list of positive sizes"),
        (_replace_config("emb", VariableConfig("ps", (A, B), Partition(0, (10, 0)))), VARIABLES,
         r"variable 'emb': field 'partition.sizes' \[10, 0\] must be a non-empty list of positive sizes"),
        (_replace_config("w2", VariableConfig("allreduce", partition=Partition(0, ()))), VARIABLES,
         r"variable 'w2': field 'partition.sizes' \[\] must be a non-empty list"),
        (_replace_config("dense/bias", VariableConfig("allreduce", partition=Partition(0, (1, 1, 1, 0)))), VARIABLES,
         r"variable 'dense/bias': field 'partition.sizes' asks for 4 parts of axis 0, which has only 3"),
        # async settings
        (_replace_config("emb", VariableConfig("ps", (A, B), Partition(0, (5, 5)), sync=False)), VARIABLES,
         r"variable 'emb': fields 'sync'=False/'staleness'=0: asynchronous PS is outside this implementation"),
        (_replace_config("dense/bias", VariableConfig("allreduce", staleness=1)), VARIABLES,
         r"variable 'dense/bias': fields 'sync'=True/'staleness'=1: asynchronous PS"),
        # cluster-level fields
        (Strategy((), A, EXPECTED.variables), VARIABLES, r"field 'replicas' is empty"),
        (Strategy((G0, A), A, EXPECTED.variables), VARIABLES,
         r"field 'replicas' names '127.0.0.1:CPU:0', which is not a replica device"),
        (Strategy((G0, G0), A, EXPECTED.variables), VARIABLES, r"field 'replicas' names '127.0.0.1:GPU:0' twice"),
        (Strategy((G0,), G1, EXPECTED.variables), VARIABLES,
         r"field 'aux_device' is '127.0.0.1:GPU:1', which is not a parameter-server device"),
    ],
)
def test_validate_names_the_variable_and_the_field(strategy, variables, pattern):
    with pytest.raises(StrategyError, match=pattern):
        strategy.validate(variables, REPLICA_DEVICES, PS_DEVICES)


def test_strategy_error_is_a_value_error():
    assert issubclass(StrategyError, ValueError)


def test_a_trainable_variable_may_use_allreduce_and_replicas_may_be_a_subset():
    trainable_step = [v if v.name != "global_step" else VariableInfo("global_step", (), "int64") for v in VARIABLES]
    ALLREDUCE_GLOBAL_STEP.validate(trainable_step, REPLICA_DEVICES, PS_DEVICES)
    Strategy((G1,), B, EXPECTED.variables).validate(VARIABLES, REPLICA_DEVICES, PS_DEVICES)


# -- property: any valid strategy round-trips and validates ----------------------------

_DEVICE_NAMES = st.builds(
    lambda node, kind, index: f"127.0.0.{node}:{kind}:{index}",
    st.integers(1, 4), st.sampled_from(["CPU", "GPU"]), st.integers(0, 3),
)


@st.composite
def valid_strategies(draw):
    """A strategy together with the variables and the devices it is valid for."""
    replica_devices = draw(st.lists(_DEVICE_NAMES, min_size=1, max_size=5, unique=True))
    ps_devices = draw(st.lists(_DEVICE_NAMES, min_size=1, max_size=4, unique=True))
    replicas = draw(st.lists(st.sampled_from(replica_devices), min_size=1, unique=True))
    names = draw(st.lists(st.text(min_size=1, max_size=12), max_size=6, unique=True))
    variables, configs = [], {}
    for name in names:
        shape = tuple(draw(st.lists(st.integers(1, 6), max_size=3)))
        trainable = draw(st.booleans())
        variables.append(VariableInfo(name, shape, draw(st.sampled_from(["float32", "int64"])), trainable))
        partition = None
        if shape and draw(st.booleans()):
            axis = draw(st.integers(0, len(shape) - 1))
            cuts = draw(st.lists(st.integers(1, shape[axis] - 1), unique=True)) if shape[axis] > 1 else []
            bounds = [0, *sorted(cuts), shape[axis]]
            partition = Partition(axis, tuple(b - a for a, b in zip(bounds, bounds[1:])))
        parts = len(partition.sizes) if partition else 1
        if trainable and draw(st.booleans()):
            configs[name] = VariableConfig("allreduce", (), partition)
        else:
            devices = draw(st.lists(st.sampled_from(ps_devices), min_size=parts, max_size=parts))
            configs[name] = VariableConfig("ps", tuple(devices), partition)
    strategy = Strategy(tuple(replicas), draw(st.sampled_from(ps_devices)), configs)
    return strategy, variables, replica_devices, ps_devices


@given(valid_strategies())
def test_any_valid_strategy_round_trips_through_json_and_validates(case):
    strategy, variables, replica_devices, ps_devices = case
    strategy.validate(variables, replica_devices, ps_devices)
    again = Strategy.from_json(strategy.to_json())
    assert again == strategy
    again.validate(variables, replica_devices, ps_devices)
