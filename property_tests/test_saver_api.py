"""Property 5: the implementation's Saver behaves as ``tf.compat.v1.train.Saver``.

A Hypothesis state machine drives two savers of the same original graph — the
implementation's and TensorFlow's, each writing to its own directory — through
sequences of training, saves (with and without a global step), restores and
deletions. After every operation both directories hold the same file names, the same
checkpoint state (latest checkpoint, retained checkpoints) and the same bytes, and a
restore brings back the same values.
"""

import os
import tempfile
from pathlib import Path

import tensorflow as tf
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from autodist_verify import checkpoints, model_spec
from autodist_verify.outcome import FAIL, PASS, Outcome

MODEL = {"dtype": "float32", "features": 2, "hidden": [2], "bias": True, "embedding": None, "scalar": True,
         "frozen": True, "global_step": True, "optimizer": {"name": "adam", "learning_rate": 0.1}, "seed": 1}


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _state(directory: Path) -> tuple[str | None, list[str]]:
    """Latest and retained checkpoints of a directory, as base names."""
    state = tf.train.get_checkpoint_state(str(directory))
    if state is None:
        return None, []
    retained = [os.path.basename(p) for p in state.all_model_checkpoint_paths]
    return os.path.basename(state.model_checkpoint_path), retained


def make_machine(impl, root: Path):
    class SaverParity(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.graph = tf.Graph()
            self.session = None

        @initialize(max_to_keep=st.sampled_from([1, 2, 5]), pad_step_number=st.booleans(),
                    save_relative_paths=st.booleans(), sharded=st.booleans())
        def build(self, max_to_keep, pad_step_number, save_relative_paths, sharded):
            self.run_dir = Path(tempfile.mkdtemp(dir=root))
            self.dirs = {"impl": self.run_dir / "impl", "tf": self.run_dir / "tf"}
            for directory in self.dirs.values():
                directory.mkdir()
            options = dict(max_to_keep=max_to_keep, pad_step_number=pad_step_number,
                           save_relative_paths=save_relative_paths, sharded=sharded)
            with self.graph.as_default():
                self.model = model_spec.build(MODEL)
                self.savers = {"impl": impl.Saver(**options), "tf": tf.compat.v1.train.Saver(**options)}
                self.session = tf.compat.v1.Session(graph=self.graph)
                self.session.run(tf.compat.v1.global_variables_initializer())
            self.feeds = model_spec.feeds(MODEL, 50, 4, seed=0)
            self.steps = 0
            self.saved = False

        def values(self):
            with self.graph.as_default():
                variables = tf.compat.v1.global_variables()
            return dict(zip([v.op.name for v in variables], self.session.run(variables)))

        @rule()
        def train(self):
            feed = model_spec.feed_dict(self.graph, self.feeds[self.steps % len(self.feeds)])
            self.session.run(self.model.train_op, feed)
            self.steps += 1

        @rule(with_step=st.booleans())
        def save(self, with_step):
            step = self.steps if with_step else None
            with self.graph.as_default():
                paths = {k: s.save(self.session, str(self.dirs[k] / "model"), global_step=step)
                         for k, s in self.savers.items()}
            assert os.path.basename(paths["impl"]) == os.path.basename(paths["tf"]), paths
            problems = checkpoints.diff(paths["tf"], paths["impl"])
            assert not problems, "\n".join(problems)
            self.saved = True

        @precondition(lambda self: self.saved and tf.train.latest_checkpoint(str(self.dirs["tf"])) is not None)
        @rule()
        def restore_latest(self):
            """Restore each directory's latest checkpoint (while one is left: deletions may
            remove them all) and compare the values."""
            restored = {}
            for kind, saver in self.savers.items():
                latest = tf.train.latest_checkpoint(str(self.dirs[kind]))
                with self.graph.as_default():
                    saver.restore(self.session, latest)
                restored[kind] = self.values()
            for name, value in restored["tf"].items():
                assert value.tobytes() == restored["impl"][name].tobytes(), f"restore of {name!r} differs"

        @precondition(lambda self: self.saved)
        @rule()
        def delete_oldest(self):
            """Delete the oldest retained checkpoint's files by hand, in both directories."""
            for kind in self.dirs:
                _, retained = _state(self.dirs[kind])
                if retained:
                    tf.compat.v1.train.remove_checkpoint(str(self.dirs[kind] / retained[0]))

        @invariant()
        def same_files_and_state(self):
            if self.session is None:
                return
            assert _listing(self.dirs["impl"]) == _listing(self.dirs["tf"])
            assert _state(self.dirs["impl"]) == _state(self.dirs["tf"])

        def teardown(self):
            if self.session is not None:
                self.session.close()

    return SaverParity


def test_saver_api_parity(conformance, conformance_impl, tmp_path):
    """The implementation's Saver and TensorFlow's behave identically on the original graph."""
    outcome = Outcome(FAIL, "the state machine found a difference (see the test's failure)")
    try:
        run_state_machine_as_test(
            lambda: make_machine(conformance_impl, tmp_path)(),
            settings=settings(max_examples=max(3, settings.default.max_examples), stateful_step_count=8),
        )
        outcome = Outcome(PASS)
    finally:
        conformance.note("saver_api", "-", outcome)
