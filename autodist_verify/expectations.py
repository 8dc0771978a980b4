"""What the single-device oracle says a case's variables should be."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from autodist_verify import model_graph
from autodist_verify.oracle import Oracle


def oracle_state(model: Mapping[str, Any], phases: list[tuple[int, list[dict]]],
                 save_prefix: str | None = None) -> dict[str, np.ndarray]:
    """The oracle's variables after training ``phases`` of (replicas, feeds)."""
    with Oracle(lambda: model_graph.build(model)) as oracle:
        for replicas, feeds in phases:
            for feed in feeds:
                oracle.step(feed, replicas=replicas)
        if save_prefix:
            oracle.save(save_prefix)
        return oracle.variables()


def oracle_continuations(model: Mapping[str, Any], first: tuple[int, list[dict]], then: list[dict],
                         replica_counts: set[int]) -> dict[int, dict[str, np.ndarray]]:
    """The oracle's variables after the ``first`` phase (replicas, feeds), then ``then``
    with each of ``replica_counts``: the first phase is trained once and its exact state
    reloaded before each continuation."""
    replicas, feeds = first
    with Oracle(lambda: model_graph.build(model)) as oracle:
        for feed in feeds:
            oracle.step(feed, replicas=replicas)
        saved = oracle.variables()
        result = {}
        for count in sorted(replica_counts):
            oracle.load(saved)
            for feed in then:
                oracle.step(feed, replicas=count)
            result[count] = oracle.variables()
        return result

