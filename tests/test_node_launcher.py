"""Nodes forked from a NodeLauncher's template are real nodes with the same lifecycle.

The template imports TensorFlow once; every node it forks is still one OS process
running its own tf.distribute.Server. These tests give forked nodes the checks the
spawned ones get in test_local_cluster.py: every device runs, a killed node fails the
next step and a restart brings it back, close leaves no process, and the death of the
process that started them takes the template and the nodes down.
"""

from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path

import psutil
import pytest
import tensorflow as tf

from cluster_sim import LocalCluster, ResourceSpec
from cluster_sim.launcher import NodeLauncher
from tests.cluster_helpers import gone, live_children, parent_of_a_cluster, step_on, wait_gone

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def launcher():
    with NodeLauncher() as running:
        yield running


def test_forked_nodes_run_every_device_fail_when_killed_and_restart(launcher):
    with LocalCluster(ResourceSpec.local(nodes=2, gpus_per_node=1), operation_timeout_s=5,
                      launcher=launcher) as cluster:
        pids = [cluster.pid(n) for n in range(2)]
        template = psutil.Process(pids[0]).ppid()
        assert template != os.getpid() and psutil.Process(template).ppid() == os.getpid()
        assert all(psutil.Process(p).ppid() == template for p in pids)
        values, ran = step_on(cluster.target, cluster.all_devices, cluster.session_config())
        assert values == [7.0] * 4 and set(cluster.all_devices) <= ran

        cluster.kill(1)
        assert gone(pids[1]) and not cluster.healthy
        with pytest.raises(tf.errors.OpError):
            step_on(cluster.target, cluster.devices(1), cluster.session_config())
        cluster.restart(1)
        assert cluster.pid(1) != pids[1] and cluster.healthy
        values, _ = step_on(cluster.target, cluster.all_devices, cluster.session_config())
        assert values == [7.0] * 4
        pids.append(cluster.pid(1))
    assert wait_gone(pids), [p for p in pids if not gone(p)]


def test_start_stop_cycles_leave_only_the_template_then_nothing():
    me = psutil.Process()
    before = live_children(me)
    pids = []
    with NodeLauncher() as launcher:
        for _ in range(5):
            with LocalCluster(ResourceSpec.local(nodes=2), launcher=launcher) as cluster:
                pids += [cluster.pid(0), cluster.pid(1)]
            assert wait_gone(pids[-2:])
    assert len(set(pids)) == 10
    leftover = live_children(me) - before
    assert not leftover, [psutil.Process(p).cmdline() for p in leftover if not gone(p)]


PARENT_SCRIPT = textwrap.dedent("""
    import json, os, time
    from cluster_sim import LocalCluster, ResourceSpec
    from cluster_sim.launcher import NodeLauncher
    cluster = LocalCluster(ResourceSpec.local(nodes=2), launcher=NodeLauncher()).start()
    print(json.dumps([cluster.pid(0), cluster.pid(1)]), flush=True)
    time.sleep(600)
""")


def test_sigkill_of_the_parent_takes_the_template_and_its_nodes_down(tmp_path):
    with parent_of_a_cluster(PARENT_SCRIPT, tmp_path, REPO) as (parent, pids):
        template = psutil.Process(pids[0]).ppid()
        assert psutil.Process(template).ppid() == parent.pid
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        assert wait_gone([template, *pids], timeout=10), [p for p in [template, *pids] if not gone(p)]
