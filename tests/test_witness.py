"""The plain-TensorFlow witness process: jobs, failures, the forbidden module, restarts.

Every job builds the model spec of :mod:`tests.specs` from its JSON file
(``model_spec=PATH``); checkpoints come from the suite's oracle, which saves with
TensorFlow's own Saver.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import psutil
import pytest

from autodist_verify import model_spec
from autodist_verify.expectations import oracle_state
from autodist_verify.witness import Witness, WitnessError
from autodist_verify.witness_files import load_arrays, load_result, save_arrays, save_steps
from tests.specs import SPEC


@pytest.fixture
def spec_file(tmp_path) -> Path:
    path = tmp_path / "model.json"
    path.write_text(json.dumps(SPEC))
    return path


def initial_checkpoint(prefix: Path) -> str:
    """The initialized original graph, saved by TensorFlow's Saver (in the oracle)."""
    oracle_state(SPEC, [], save_prefix=str(prefix))
    return str(prefix)


def test_a_job_restores_and_trains_like_the_oracle(witness, spec_file, tmp_path):
    """The checkpoint holds trained values (not the initial ones), so a job that did not
    restore would not match."""
    first, feeds = model_spec.feeds(SPEC, 2, 4, seed=4), model_spec.feeds(SPEC, 2, 4, seed=5)
    prefix = str(tmp_path / "model")
    saved = oracle_state(SPEC, [(1, first)], save_prefix=prefix)
    save_steps(tmp_path / "feeds.npz", feeds)
    witness.run("checkpoint", model_spec=spec_file, checkpoint=prefix, feeds=tmp_path / "feeds.npz",
                out=tmp_path / "out.npz")
    result = load_result(tmp_path / "out.npz")
    expected = oracle_state(SPEC, [(1, first), (1, feeds)])
    for got, want in ((result["restored"], saved), (result["final"], expected)):
        assert sorted(got) == sorted(want)
        assert all(got[k].tobytes() == want[k].tobytes() for k in want)


def test_a_failing_job_names_the_error_and_the_worker_serves_the_next(witness, spec_file, tmp_path):
    save_steps(tmp_path / "feeds.npz", [])
    with pytest.raises(WitnessError, match="(?s)job .checkpoint. failed.*not a valid checkpoint"):
        witness.run("checkpoint", model_spec=spec_file, checkpoint=tmp_path / "missing",
                    feeds=tmp_path / "feeds.npz", out=tmp_path / "out.npz")
    prefix = initial_checkpoint(tmp_path / "model")
    witness.run("checkpoint", model_spec=spec_file, checkpoint=prefix, feeds=tmp_path / "feeds.npz",
                out=tmp_path / "out.npz")
    assert load_result(tmp_path / "out.npz")["restored"]


def test_a_job_that_imports_the_forbidden_module_fails(spec_file, tmp_path):
    """A job builds its model spec with autodist_verify.model_graph, which the worker
    imports only then: forbidding that module must fail the job."""
    prefix = initial_checkpoint(tmp_path / "model")
    save_steps(tmp_path / "feeds.npz", [])
    with Witness(forbidden="autodist_verify.model_graph") as witness:
        with pytest.raises(WitnessError,
                           match="imported the implementation under test: \\['autodist_verify.model_graph'\\]"):
            witness.run("checkpoint", model_spec=spec_file, checkpoint=prefix, feeds=tmp_path / "feeds.npz",
                        out=tmp_path / "out.npz")


def test_a_worker_that_died_is_replaced(spec_file, tmp_path):
    prefix = initial_checkpoint(tmp_path / "model")
    save_steps(tmp_path / "feeds.npz", [])
    with Witness(forbidden="saver_impl") as witness:
        witness.run("checkpoint", model_spec=spec_file, checkpoint=prefix, feeds=tmp_path / "feeds.npz",
                    out=tmp_path / "first.npz")
        worker = psutil.Process(witness.pid)  # the test plays the crash
        worker.kill()
        worker.wait(10)
        witness.run("checkpoint", model_spec=spec_file, checkpoint=prefix, feeds=tmp_path / "feeds.npz",
                    out=tmp_path / "second.npz")
    first, second = (load_result(tmp_path / f"{n}.npz")["restored"] for n in ("first", "second"))
    assert all(np.array_equal(first[k], second[k]) for k in first)


def test_witness_files_keep_bfloat16(tmp_path):
    """An .npz alone turns ml_dtypes' bfloat16 into raw bytes TensorFlow cannot feed."""
    value = np.array([[1.5, -2.25]], dtype=model_spec.numpy_dtype("bfloat16"))
    save_arrays(tmp_path / "a.npz", {"0/x": value, "0/ids": np.arange(3)})
    back = load_arrays(tmp_path / "a.npz")
    assert back["0/x"].dtype == value.dtype and back["0/x"].tobytes() == value.tobytes()
    assert back["0/ids"].tolist() == [0, 1, 2]
