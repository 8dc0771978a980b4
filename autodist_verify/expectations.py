"""What the single-device oracle says a case's variables should be."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from autodist_verify.oracle import Oracle
from autodist_verify.oracle_pool import OraclePool, fresh_oracle


def oracle_state(model: Mapping[str, Any], phases: list[tuple[int, list[dict]]],
                 save_prefix: str | None = None, oracles: OraclePool | None = None) -> dict[str, np.ndarray]:
    """The oracle's variables after training ``phases`` of (replicas, feeds), from a
    freshly initialized oracle (of ``oracles`` if given)."""
    with fresh_oracle(model, oracles) as oracle:
        for replicas, feeds in phases:
            _train(oracle, replicas, feeds)
        if save_prefix:
            oracle.save(save_prefix)
        return oracle.variables()


def oracle_states(model: Mapping[str, Any], phases: list[tuple[int, list[dict]]],
                  oracles: OraclePool | None = None) -> list[dict[str, np.ndarray]]:
    """The oracle's variables after each of ``phases`` of (replicas, feeds), in order:
    one freshly initialized oracle (of ``oracles`` if given) trains the phases one
    after the other, so a phase is trained once however many states are asked for."""
    states = []
    with fresh_oracle(model, oracles) as oracle:
        for replicas, feeds in phases:
            _train(oracle, replicas, feeds)
            states.append(oracle.variables())
    return states


def oracle_continuations(model: Mapping[str, Any], first: tuple[int, list[dict]], then: list[dict],
                         replica_counts: set[int], oracles: OraclePool | None = None,
                         ) -> dict[int, dict[str, np.ndarray]]:
    """The oracle's variables after the ``first`` phase (replicas, feeds), then ``then``
    with each of ``replica_counts``: the first phase is trained once, from a freshly
    initialized oracle (of ``oracles`` if given), and its exact state reloaded before
    each continuation."""
    replicas, feeds = first
    with fresh_oracle(model, oracles) as oracle:
        _train(oracle, replicas, feeds)
        saved = oracle.variables()
        result = {}
        for count in sorted(replica_counts):
            oracle.load(saved)
            _train(oracle, count, then)
            result[count] = oracle.variables()
        return result


def _train(oracle: Oracle, replicas: int, feeds: list[dict]) -> None:
    """One oracle step per feed, each split over ``replicas`` micro-batches."""
    for feed in feeds:
        oracle.step(feed, replicas=replicas)
