"""A training program that never calls ``ad.close()`` (AutoDist has no close(), so
AutoDist's own programs never do) exits cleanly: at interpreter exit the distributed
session closes while the embedded cluster's nodes still answer, and only then do the
nodes stop."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROGRAM = textwrap.dedent("""
    import tensorflow as tf
    from autodist_verify import model_graph, model_spec
    from saver_impl import AutoDist
    from saver_impl.strategy import PS

    from tests.specs import SGD_SPEC

    tf.compat.v1.disable_eager_execution()
    ad = AutoDist(resource_spec_file=SPEC_FILE, strategy_builder=PS(), operation_timeout_s=5)
    with tf.Graph().as_default() as graph, ad.scope():
        model = model_graph.build(SGD_SPEC)
        sess = ad.create_distributed_session()
        sess.run(model.train_op, model_graph.feed_dict(graph, model_spec.feeds(SGD_SPEC, 1, 4, 0)[0]))
    print("trained", flush=True)
""")


def test_a_program_without_close_exits_without_waiting_for_dead_nodes(tmp_path):
    spec = tmp_path / "spec.yml"
    spec.write_text("nodes:\n  - address: 127.0.0.1\n    chief: true\n  - address: 127.0.0.2\n")
    done = subprocess.run([sys.executable, "-c", f"SPEC_FILE = {str(spec)!r}\n" + PROGRAM],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained" in done.stdout
    # The symptom of the wrong order: the session's close waited for nodes already killed.
    assert "closing the distributed session" not in done.stderr, done.stderr[-3000:]
