"""Fixtures of the project's own tests that train through the conformance suite's harness."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from autodist_verify.harness import Context


@pytest.fixture
def harness_context(conformance_impl, cluster_pool, witness, tmp_path) -> Iterator[Context]:
    """What :func:`autodist_verify.harness.run_distributed` needs: the implementation
    under test (``--impl``, default saver_impl), the session's pool of simulated
    clusters, the plain-TensorFlow witness (started on its first job) and a scratch
    directory. The context's oracles are closed after the test."""
    context = Context(impl=conformance_impl, clusters=cluster_pool, witness=witness, workdir=tmp_path)
    with context.oracles:
        yield context
