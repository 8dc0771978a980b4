"""The plain-TensorFlow witness process: jobs, failures, the forbidden module, restarts."""

from __future__ import annotations

import numpy as np
import pytest

from autodist_verify.witness import Witness, WitnessError
from autodist_verify.witness_files import load_result, save_steps
from tests.models import batches
from tests.training import MODEL_REF, REPO_ROOT, oracle_run, plain_tf_checkpoint


def test_a_job_restores_and_trains_like_the_oracle(witness, tmp_path):
    prefix = plain_tf_checkpoint(str(tmp_path / "model"))
    feeds = batches(2, 4, seed=5)
    save_steps(tmp_path / "feeds.npz", feeds)
    witness.run("checkpoint", model=MODEL_REF, checkpoint=prefix, feeds=tmp_path / "feeds.npz",
                out=tmp_path / "out.npz")
    final = load_result(tmp_path / "out.npz")["final"]
    expected = oracle_run([(1, feeds)], restore=prefix)
    assert sorted(final) == sorted(expected)
    assert all(final[k].tobytes() == expected[k].tobytes() for k in expected)


def test_a_failing_job_names_the_error_and_the_worker_serves_the_next(witness, tmp_path):
    save_steps(tmp_path / "feeds.npz", [])
    with pytest.raises(WitnessError, match="(?s)job .checkpoint. failed.*not a valid checkpoint"):
        witness.run("checkpoint", model=MODEL_REF, checkpoint=tmp_path / "missing", feeds=tmp_path / "feeds.npz",
                    out=tmp_path / "out.npz")
    prefix = plain_tf_checkpoint(str(tmp_path / "model"))
    witness.run("checkpoint", model=MODEL_REF, checkpoint=prefix, feeds=tmp_path / "feeds.npz",
                out=tmp_path / "out.npz")
    assert load_result(tmp_path / "out.npz")["restored"]


def test_a_job_that_imports_the_forbidden_module_fails(tmp_path):
    """The model builder lives in tests.models: forbidding that module must fail the job."""
    prefix = plain_tf_checkpoint(str(tmp_path / "model"))
    save_steps(tmp_path / "feeds.npz", [])
    with Witness(forbidden="tests.models", cwd=REPO_ROOT) as witness:
        with pytest.raises(WitnessError, match="imported the implementation under test: \\['tests.models'\\]"):
            witness.run("checkpoint", model=MODEL_REF, checkpoint=prefix, feeds=tmp_path / "feeds.npz",
                        out=tmp_path / "out.npz")


def test_a_worker_that_died_is_replaced(tmp_path):
    prefix = plain_tf_checkpoint(str(tmp_path / "model"))
    save_steps(tmp_path / "feeds.npz", [])
    with Witness(forbidden="saver_impl", cwd=REPO_ROOT) as witness:
        witness.run("checkpoint", model=MODEL_REF, checkpoint=prefix, feeds=tmp_path / "feeds.npz",
                    out=tmp_path / "first.npz")
        witness._process.kill()  # noqa: SLF001 - the test plays the crash
        witness._process.wait()  # noqa: SLF001
        witness.run("checkpoint", model=MODEL_REF, checkpoint=prefix, feeds=tmp_path / "feeds.npz",
                    out=tmp_path / "second.npz")
    first, second = (load_result(tmp_path / f"{n}.npz")["restored"] for n in ("first", "second"))
    assert all(np.array_equal(first[k], second[k]) for k in first)
