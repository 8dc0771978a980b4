"""An oracle handed out again by the pool trains exactly as a newly built one does."""

from autodist_verify import exports, model_spec
from autodist_verify.expectations import oracle_state, oracle_states
from autodist_verify.oracle_pool import OraclePool
from tests.specs import SPEC

# Slots, a counter, batch norm's moving statistics and global_step: state beyond the weights.
STATEFUL_SPEC = {**SPEC, "optimizer": {"name": "adam", "learning_rate": 0.01}, "batch_norm": True,
                 "counter": "int32", "global_step": "int32"}


def _bytes(values: dict) -> dict:
    return {name: value.tobytes() for name, value in values.items()}


def _train(oracle, feeds) -> dict:
    for feed in feeds:
        oracle.step(feed, replicas=2)
    return oracle.variables()


def test_a_reused_oracle_trains_as_a_new_one_bit_for_bit():
    feeds = model_spec.feeds(STATEFUL_SPEC, steps=3, batch=6, seed=0)
    initial = oracle_state(STATEFUL_SPEC, [])  # new oracles, each closed after use
    expected = oracle_state(STATEFUL_SPEC, [(2, feeds)])
    with OraclePool() as pool:
        with pool.fresh(STATEFUL_SPEC) as oracle:
            first = _train(oracle, feeds)
        with pool.fresh(STATEFUL_SPEC) as reused:
            assert reused is oracle
            reset = reused.variables()
            again = _train(reused, feeds)
    assert _bytes(first) == _bytes(expected)
    assert _bytes(reset) == _bytes(initial), "a reused oracle starts from the initial values"
    assert _bytes(again) == _bytes(expected)


def test_states_after_each_phase_are_those_of_separate_trainings():
    """crash_consistency's expected values at k and k + m come from one training."""
    feeds = model_spec.feeds(STATEFUL_SPEC, steps=5, batch=6, seed=1)
    phases = [(2, feeds[:3]), (1, feeds[3:])]
    with OraclePool() as pool:
        at_first, at_second = oracle_states(STATEFUL_SPEC, phases, oracles=pool)
    assert _bytes(at_first) == _bytes(oracle_state(STATEFUL_SPEC, phases[:1]))
    assert _bytes(at_second) == _bytes(oracle_state(STATEFUL_SPEC, phases))
    assert _bytes(at_first) != _bytes(at_second), "the second phase changes the variables"


def test_an_oracle_in_use_is_not_handed_out_twice():
    with OraclePool() as pool, pool.fresh(SPEC) as first, pool.fresh(SPEC) as second:
        assert first is not second


def test_a_model_outside_the_contract_gets_a_new_oracle_each_time():
    """Dropout's kernels keep a random state that reloading the variables does not reset."""
    spec = {**SPEC, "dropout": {"rate": 0.5, "seed": 3}}
    assert model_spec.outside_contract(spec)
    with OraclePool() as pool:
        with pool.fresh(spec) as first:
            pass
        with pool.fresh(spec) as second:
            assert second is not first


def test_the_original_graph_is_the_models_alone():
    """What exports are compared with: the model as plain TensorFlow builds it, without
    the ops an oracle adds (its loads, Saver, aggregation)."""
    with OraclePool() as pool:
        with pool.fresh(SPEC) as oracle:
            oracle.step(model_spec.feeds(SPEC, steps=1, batch=4, seed=0)[0], replicas=2)
        graph_def = pool.original_graph_def(SPEC)
    assert graph_def == exports.original_graph_def(SPEC)
