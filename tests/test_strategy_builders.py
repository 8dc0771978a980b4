"""The strategy builders: exact placements written by hand, on clusters of 1, 2 and 3 PS."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest

from cluster_sim import ResourceSpec
from saver_impl.strategy import (
    ALL_BUILDERS,
    PS,
    AllReduce,
    Parallax,
    Partition,
    PartitionedAR,
    PartitionedPS,
    PSLoadBalancing,
    Strategy,
    StrategyBuilder,
    StrategyError,
    UnevenPartitionedPS,
    VariableConfig,
    VariableInfo,
)

A, B, C = "127.0.0.1:CPU:0", "127.0.0.2:CPU:0", "127.0.0.3:CPU:0"
G0, G1 = "127.0.0.1:GPU:0", "127.0.0.1:GPU:1"

# (replica devices, ps devices)
ONE_PS = ([A], [A])
TWO_PS = ([G0, G1, B], [A, B])  # node 1 has two gpus, node 2 only a cpu
THREE_PS = ([A, B, C], [A, B, C])

# sizes: emb 160 B, dense/kernel 48, row 20, dense/bias 12, scale 8
VARIABLES = [
    VariableInfo("emb", (10, 4), "float32", sparse_grad=True),
    VariableInfo("dense/kernel", (4, 3), "float32"),
    VariableInfo("bn/moving_mean", (3,), "float32", trainable=False),
    VariableInfo("dense/bias", (3,), "float32"),
    VariableInfo("scale", (), "float64"),
    VariableInfo("row", (1, 5), "float32"),
    VariableInfo("global_step", (), "int64", trainable=False),
]
NON_TRAINABLE = ("bn/moving_mean", "global_step")


def ps(*devices: str, sizes: tuple[int, ...] | None = None) -> VariableConfig:
    return VariableConfig("ps", devices, Partition(0, sizes) if sizes else None)


def ar(sizes: tuple[int, ...] | None = None) -> VariableConfig:
    return VariableConfig("allreduce", (), Partition(0, sizes) if sizes else None)


def expected(cluster, **placements: VariableConfig) -> Strategy:
    """The expected strategy: ``placements`` by variable (``/`` written ``__``)."""
    replicas, ps_devices = cluster
    configs = {name.replace("__", "/"): config for name, config in placements.items()}
    for name in NON_TRAINABLE:
        configs[name] = ps(ps_devices[0])
    order = [v.name for v in VARIABLES]
    return Strategy(tuple(replicas), ps_devices[0], {n: configs[n] for n in order})


def build(builder: StrategyBuilder, cluster, variables=VARIABLES) -> Strategy:
    replicas, ps_devices = cluster
    return builder.build_for_devices(variables, replicas, ps_devices)


CASES = [
    # PS: round robin over trainable variables in order
    (PS(), ONE_PS, dict(emb=ps(A), dense__kernel=ps(A), dense__bias=ps(A), scale=ps(A), row=ps(A))),
    (PS(), TWO_PS, dict(emb=ps(A), dense__kernel=ps(B), dense__bias=ps(A), scale=ps(B), row=ps(A))),
    (PS(), THREE_PS, dict(emb=ps(A), dense__kernel=ps(B), dense__bias=ps(C), scale=ps(A), row=ps(B))),
    # PSLoadBalancing: emb, dense/kernel, row, dense/bias, scale -> least loaded
    (PSLoadBalancing(), ONE_PS, dict(emb=ps(A), dense__kernel=ps(A), dense__bias=ps(A), scale=ps(A), row=ps(A))),
    (PSLoadBalancing(), TWO_PS, dict(emb=ps(A), dense__kernel=ps(B), row=ps(B), dense__bias=ps(B), scale=ps(B))),
    (PSLoadBalancing(), THREE_PS, dict(emb=ps(A), dense__kernel=ps(B), row=ps(C), dense__bias=ps(C), scale=ps(C))),
    # PartitionedPS: n = min(dim0, max(2, #PS)); one round-robin counter over parts
    (PartitionedPS(), ONE_PS, dict(
        emb=ps(A, A, sizes=(5, 5)), dense__kernel=ps(A, A, sizes=(2, 2)),
        dense__bias=ps(A, A, sizes=(2, 1)), scale=ps(A), row=ps(A))),
    (PartitionedPS(), TWO_PS, dict(
        emb=ps(A, B, sizes=(5, 5)), dense__kernel=ps(A, B, sizes=(2, 2)),
        dense__bias=ps(A, B, sizes=(2, 1)), scale=ps(A), row=ps(B))),
    (PartitionedPS(), THREE_PS, dict(
        emb=ps(A, B, C, sizes=(4, 3, 3)), dense__kernel=ps(A, B, C, sizes=(2, 1, 1)),
        dense__bias=ps(A, B, C, sizes=(1, 1, 1)), scale=ps(A), row=ps(B))),
    # UnevenPartitionedPS: same parts and devices, sizes 1 + excess shared as 1:2:...:n
    (UnevenPartitionedPS(), ONE_PS, dict(
        emb=ps(A, A, sizes=(3, 7)), dense__kernel=ps(A, A, sizes=(1, 3)),
        dense__bias=ps(A, A, sizes=(1, 2)), scale=ps(A), row=ps(A))),
    (UnevenPartitionedPS(), TWO_PS, dict(
        emb=ps(A, B, sizes=(3, 7)), dense__kernel=ps(A, B, sizes=(1, 3)),
        dense__bias=ps(A, B, sizes=(1, 2)), scale=ps(A), row=ps(B))),
    (UnevenPartitionedPS(), THREE_PS, dict(
        emb=ps(A, B, C, sizes=(2, 3, 5)), dense__kernel=ps(A, B, C, sizes=(1, 1, 2)),
        dense__bias=ps(A, B, C, sizes=(1, 1, 1)), scale=ps(A), row=ps(B))),
    # AllReduce: every trainable variable mirrored, unpartitioned
    (AllReduce(), ONE_PS, dict(emb=ar(), dense__kernel=ar(), dense__bias=ar(), scale=ar(), row=ar())),
    (AllReduce(), TWO_PS, dict(emb=ar(), dense__kernel=ar(), dense__bias=ar(), scale=ar(), row=ar())),
    # PartitionedAR: mirrored, n = min(dim0, 2) even parts
    (PartitionedAR(), ONE_PS, dict(
        emb=ar((5, 5)), dense__kernel=ar((2, 2)), dense__bias=ar((2, 1)), scale=ar(), row=ar())),
    (PartitionedAR(), THREE_PS, dict(
        emb=ar((5, 5)), dense__kernel=ar((2, 2)), dense__bias=ar((2, 1)), scale=ar(), row=ar())),
    # Parallax: the sparse emb on PS, the dense rest mirrored
    (Parallax(), TWO_PS, dict(emb=ps(A), dense__kernel=ar(), dense__bias=ar(), scale=ar(), row=ar())),
    (Parallax(), THREE_PS, dict(emb=ps(A), dense__kernel=ar(), dense__bias=ar(), scale=ar(), row=ar())),
]


@pytest.mark.parametrize(
    "builder, cluster, placements", CASES, ids=[f"{b!r}-{len(c[1])}ps" for b, c, _ in CASES]
)
def test_builder_places_exactly(builder, cluster, placements):
    assert build(builder, cluster) == expected(cluster, **placements)


def test_load_balancing_breaks_ties_by_name_then_by_lowest_device():
    variables = [  # all 16 bytes; name order u3, v2, w1, x0 is neither input nor reversed-name order
        VariableInfo("v2", (4,), "float32"),
        VariableInfo("x0", (8,), "float16"),
        VariableInfo("u3", (4,), "float32"),
        VariableInfo("w1", (2,), "float64"),
    ]
    strategy = build(PSLoadBalancing(), THREE_PS, variables)
    assert strategy.variables == {"v2": ps(B), "x0": ps(A), "u3": ps(A), "w1": ps(C)}
    assert list(strategy.variables) == ["v2", "x0", "u3", "w1"]  # input order kept


@pytest.mark.parametrize(
    "builder, cluster, sizes",
    [
        (PartitionedPS(), ONE_PS, (50, 50)),
        (PartitionedPS(), THREE_PS, (34, 33, 33)),
        # excess 98 shared 1:2 -> 1 + 98 // 3 = 33, rest 67
        (UnevenPartitionedPS(), ONE_PS, (33, 67)),
        # excess 97 shared 1:2:3 -> 1 + 97 // 6 = 17, 1 + 194 // 6 = 33, rest 50
        (UnevenPartitionedPS(), THREE_PS, (17, 33, 50)),
        (PartitionedAR(), THREE_PS, (50, 50)),
    ],
)
def test_part_sizes_of_a_long_variable(builder, cluster, sizes):
    strategy = build(builder, cluster, [VariableInfo("long", (100, 2), "float32")])
    assert strategy.variables["long"].partition == Partition(0, sizes)


def test_parallax_balances_the_sparse_variables():
    variables = [
        VariableInfo("emb_a", (6, 2), "float32", sparse_grad=True),   # 48 B
        VariableInfo("w", (2, 2), "float32"),
        VariableInfo("emb_b", (10, 2), "float32", sparse_grad=True),  # 80 B
        VariableInfo("emb_c", (2, 2), "float32", sparse_grad=True),   # 16 B
    ]
    strategy = build(Parallax(), TWO_PS, variables)
    assert strategy.variables == {"emb_a": ps(B), "w": ar(), "emb_b": ps(A), "emb_c": ps(B)}


def test_non_trainable_sparse_variable_goes_to_the_first_ps():
    variables = [VariableInfo("table", (10, 2), "float32", trainable=False, sparse_grad=True)]
    for builder in ALL_BUILDERS:
        assert build(builder(), THREE_PS, variables).variables == {"table": ps(A)}


@pytest.mark.parametrize("builder", ALL_BUILDERS)
def test_small_dimensions(builder):
    variables = [VariableInfo("pair", (2, 3), "float32"), VariableInfo("one", (1,), "float32")]
    strategy = build(builder(), THREE_PS, variables)
    pair, one = strategy.variables["pair"], strategy.variables["one"]
    assert one.partition is None
    if builder in (PartitionedPS, UnevenPartitionedPS, PartitionedAR):
        assert pair.partition == Partition(0, (1, 1))  # dim0 == n: all sizes 1
    else:
        assert pair.partition is None


def test_settings_are_recorded():
    assert AllReduce(chunk_size=64, all_reduce_spec="RING", compressor="HorovodCompressor").settings == {
        "chunk_size": 64, "all_reduce_spec": "RING", "compressor": "HorovodCompressor"
    }
    assert PS(local_proxy_variable=True).settings == {"local_proxy_variable": True, "sync": True, "staleness": 0}
    assert repr(PartitionedAR(chunk_size=8)) == "PartitionedAR(chunk_size=8)"
    # recorded only: the placement does not change
    assert build(PS(local_proxy_variable=True), TWO_PS) == build(PS(), TWO_PS)
    assert build(AllReduce(chunk_size=1, compressor="X"), TWO_PS) == build(AllReduce(), TWO_PS)


def test_constructor_signatures_match_autodist():
    def parameters(cls):
        return [(p.name, p.default) for p in inspect.signature(cls).parameters.values()]

    ps_family = [("local_proxy_variable", False), ("sync", True), ("staleness", 0)]
    for cls in (PS, PSLoadBalancing, PartitionedPS, UnevenPartitionedPS):
        assert parameters(cls) == ps_family
    assert parameters(AllReduce) == [("chunk_size", 128), ("all_reduce_spec", "NCCL"), ("compressor", "NoneCompressor")]
    assert parameters(PartitionedAR) == [("chunk_size", 128)]
    assert parameters(Parallax) == [("chunk_size", 128)] + ps_family
    assert len(ALL_BUILDERS) == 7 and all(issubclass(b, StrategyBuilder) for b in ALL_BUILDERS)


@pytest.mark.parametrize("cluster", [([], [A]), ([A], [])], ids=["no-replica", "no-ps"])
@pytest.mark.parametrize("builder", ALL_BUILDERS)
def test_a_cluster_without_replicas_or_ps_devices_is_refused(builder, cluster):
    with pytest.raises(StrategyError, match=r"the cluster has no"):
        build(builder(), cluster)


@pytest.mark.parametrize("builder", ALL_BUILDERS)
def test_duplicate_variable_names_are_refused(builder):
    with pytest.raises(StrategyError, match=r"'emb' appears twice"):
        build(builder(), TWO_PS, VARIABLES + [VARIABLES[0]])


@pytest.mark.parametrize("cluster", [ONE_PS, TWO_PS, THREE_PS], ids=["1ps", "2ps", "3ps"])
@pytest.mark.parametrize("builder", ALL_BUILDERS)
def test_every_output_validates_and_round_trips_through_json(builder, cluster, tmp_path):
    strategy = build(builder(), cluster)
    strategy.validate(VARIABLES, *cluster)
    assert Strategy.from_json(strategy.to_json()) == strategy
    strategy.save(tmp_path / "s.json")
    assert Strategy.load(tmp_path / "s.json") == strategy


def test_build_reads_the_device_names_of_a_resource_spec():
    spec = SimpleNamespace(
        replica_devices=[SimpleNamespace(name=n) for n in TWO_PS[0]],
        ps_devices=[SimpleNamespace(name=n) for n in TWO_PS[1]],
    )
    assert PS().build(VARIABLES, spec) == build(PS(), TWO_PS)


def test_build_on_a_real_resource_spec():
    spec = ResourceSpec.local(nodes=2, gpus_per_node=2)
    variables = [VariableInfo("w", (4, 2), "float32"), VariableInfo("b", (2,), "float32"),
                 VariableInfo("global_step", (), "int64", trainable=False)]
    strategy = PS().build(variables, spec)
    assert strategy == Strategy(
        replicas=("127.0.0.1:GPU:0", "127.0.0.1:GPU:1", "127.0.0.2:GPU:0", "127.0.0.2:GPU:1"),
        aux_device="127.0.0.1:CPU:0",
        variables={"w": ps("127.0.0.1:CPU:0"), "b": ps("127.0.0.2:CPU:0"), "global_step": ps("127.0.0.1:CPU:0")},
    )
