"""Property 5, ``saver_api``: the implementation's Saver behaves as ``tf.compat.v1.train.Saver``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from autodist_verify import checkpoints, model_graph, model_spec
from autodist_verify.case import Case
from autodist_verify.harness import Context, variable_state
from autodist_verify.outcome import NotApplicable, PropertyFailure, fail_if


def saver_api(ctx: Context, case: Case) -> None:
    """The implementation's Saver and ``tf.compat.v1.train.Saver``, built with the same
    options on the original graph in one plain session and each writing to its own
    directory, go through the case's Saver program (train, save with or without a step,
    restore the latest, delete the oldest): after every operation both directories hold
    the same file names and checkpoint state, saves hold the same keys and bytes, and
    restores bring back the same values."""
    import tensorflow as tf

    program = case.saver_program
    if program is None:
        raise NotApplicable("the case has no saver_program")
    dirs = {"impl": ctx.workdir / "impl", "tf": ctx.workdir / "tf"}
    for directory in dirs.values():
        directory.mkdir(parents=True, exist_ok=True)
    feeds = model_spec.feeds(case.model, max(1, len(program["operations"])), case.batch, case.data_seed)
    graph, steps = tf.Graph(), 0
    with graph.as_default():
        handles = model_graph.build(case.model)
        savers = {"impl": ctx.impl.Saver(**program["options"]), "tf": tf.compat.v1.train.Saver(**program["options"])}
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            for number, (name, *arguments) in enumerate(program["operations"]):
                where = f"operation {number} {[name, *arguments]}"
                if name == "train":
                    sess.run(handles.train_op, model_graph.feed_dict(graph, feeds[steps % len(feeds)]))
                    steps += 1
                elif name == "save":
                    step = steps if arguments[0] else None
                    paths = {k: s.save(sess, str(dirs[k] / "model"), global_step=step) for k, s in savers.items()}
                    if Path(paths["impl"]).name != Path(paths["tf"]).name:
                        raise PropertyFailure(f"{where}: save returned {paths['impl']!r}, TensorFlow {paths['tf']!r}")
                    fail_if([f"{where}: {p}" for p in checkpoints.diff(paths["tf"], paths["impl"])])
                elif name == "restore_latest":
                    fail_if(_restore_latest_problems(where, tf, sess, savers, dirs))
                elif name == "delete_oldest":
                    for directory in dirs.values():
                        retained = _checkpoint_state(tf, directory)[1]
                        if retained:
                            tf.compat.v1.train.remove_checkpoint(str(directory / retained[0]))
                fail_if(_directory_problems(where, tf, dirs))


def _checkpoint_state(tf, directory: Path) -> tuple[str | None, list[str]]:
    """The latest and retained checkpoints of a directory's state file, as base names."""
    state = tf.train.get_checkpoint_state(str(directory))
    if state is None:
        return None, []
    return Path(state.model_checkpoint_path).name, [Path(p).name for p in state.all_model_checkpoint_paths]


def _directory_problems(where: str, tf, dirs: Mapping[str, Path]) -> list[str]:
    listings = {k: sorted(p.name for p in d.iterdir()) for k, d in dirs.items()}
    problems = []
    if listings["impl"] != listings["tf"]:
        problems.append(f"{where}: files {listings['impl']} where TensorFlow's Saver has {listings['tf']}")
    states = {k: _checkpoint_state(tf, d) for k, d in dirs.items()}
    if states["impl"] != states["tf"]:
        problems.append(f"{where}: checkpoint state (latest, retained) {states['impl']} "
                        f"where TensorFlow's Saver has {states['tf']}")
    return problems


def _restore_latest_problems(where: str, tf, sess, savers, dirs: Mapping[str, Path]) -> list[str]:
    """Restore each directory's latest checkpoint (while one is left) and compare values."""
    if tf.train.latest_checkpoint(str(dirs["tf"])) is None:
        return []
    values = {}
    for kind, saver in savers.items():
        latest = tf.train.latest_checkpoint(str(dirs[kind]))
        if latest is None:
            return [f"{where}: no latest checkpoint in the implementation's directory"]
        saver.restore(sess, latest)
        values[kind] = variable_state(tf, sess)
    return [f"{where}: restore: {p}" for p in checkpoints.value_problems(values["tf"], values["impl"])]

