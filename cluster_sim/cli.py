"""``cluster-sim``: check a resource spec, run a simulated cluster, or serve one real node.

Exit codes: 0 success; 2 invalid spec or usage; 1 a cluster that failed to start or a
node that died while ``up``; for ``run``, the command's own exit code (127 if it cannot
be started).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from cluster_sim import determinism
from cluster_sim.cluster import ClusterError, LocalCluster
from cluster_sim.node import PR_SET_PDEATHSIG
from cluster_sim.spec import DEFAULT_SERVER_PORT, JOB_NAME, Node, ResourceSpec, SpecError, is_loopback

# What `cluster-sim run` puts in the command's environment.
ENV_TARGET = "CLUSTER_SIM_TARGET"
ENV_CLUSTER = "CLUSTER_SIM_CLUSTER"
ENV_SPEC = "CLUSTER_SIM_SPEC"


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class _SpecClickException(click.ClickException):
    exit_code = 2


def _load_or_exit(spec_path: str, simulate: bool = True) -> ResourceSpec:
    """The spec at ``spec_path``; exit 2 if invalid. A spec to simulate that would start
    many server processes is loaded with a warning saying how many."""
    try:
        spec = ResourceSpec.from_file(spec_path, simulate=simulate)
    except SpecError as err:
        raise _SpecClickException(str(err)) from err
    warning = spec.size_warning() if simulate else None
    if warning:
        click.echo(f"warning: {warning}", err=True)
    return spec


def _start(spec: ResourceSpec, log_dir: str | None, private_scratch: bool, deterministic: bool) -> LocalCluster:
    click.echo(f"starting {len(spec.nodes)} node(s) of {spec.source} ...", err=True)
    began = time.monotonic()
    cluster = LocalCluster(spec, log_dir=log_dir, private_scratch=private_scratch, deterministic=deterministic)
    try:
        cluster.start()
    except ClusterError as err:
        _fail(str(err), 1)
    click.echo(f"cluster up in {time.monotonic() - began:.1f} s; target {cluster.target}", err=True)
    return cluster


def _command_environment(cluster: LocalCluster, spec_path: str) -> dict[str, str]:
    env = dict(os.environ)
    if cluster.deterministic:  # the command compares bits with the nodes: same settings
        env.update(determinism.DETERMINISM_ENV)
    env[ENV_TARGET] = cluster.target
    env[ENV_CLUSTER] = json.dumps(cluster.describe())
    env[ENV_SPEC] = str(Path(spec_path).resolve())
    env["TF_CONFIG"] = json.dumps(cluster.tf_config(cluster.spec.chief))
    return env


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Simulate an AutoDist resource spec as a cluster of real TensorFlow servers.

    Every node of the spec becomes one OS process running a tf.distribute.Server on
    its loopback address (127.0.0.1, 127.0.0.2, ...), with one extra device per
    simulated gpu. Ports are chosen free at start.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # `run`'s command inherits it: tf.keras is Keras 2, which builds the TF1 graphs AutoDist needs.
    for name, value in determinism.LEGACY_KERAS_ENV.items():
        os.environ.setdefault(name, value)


_DETERMINISTIC_HELP = (
    "Run the nodes under the conformance suite's determinism settings (what bitwise "
    "comparisons need; unseeded random ops then fail). Default: TensorFlow's defaults."
)


def _deterministic_option(command):
    return click.option("--deterministic", is_flag=True, help=_DETERMINISTIC_HELP)(command)


@main.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--real-hosts", is_flag=True, help="Allow non-loopback addresses (a spec for real hosts).")
def check(spec_path: str, real_hosts: bool) -> None:
    """Validate SPEC and print its replica and parameter-server devices."""
    spec = _load_or_exit(spec_path, simulate=not real_hosts)
    click.echo(f"{spec.source}: valid, {len(spec.nodes)} node(s)")
    for node in spec.nodes:
        role = " (chief)" if node.chief else ""
        port = f" port {node.port}" if node.port is not None else ""
        click.echo(f"  task {node.task_index}: {node.address}{role}{port}")
    click.echo("replicas:")
    for device in spec.replica_devices:
        click.echo(f"  {device.name:<24} {device.tf_name}")
    click.echo("parameter servers:")
    for device in spec.ps_devices:
        click.echo(f"  {device.name:<24} {device.tf_name}")


@main.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--log-dir", type=click.Path(file_okay=False), help="Keep node logs here (default: temporary).")
@click.option("--private-scratch", is_flag=True, help="Give every node its own working directory.")
@_deterministic_option
def up(spec_path: str, log_dir: str | None, private_scratch: bool, deterministic: bool) -> None:
    """Start the cluster of SPEC and keep it up until Ctrl-C.

    Prints the cluster as JSON on stdout: the cluster, the chief's session target,
    every node's devices and log file, and one TF_CONFIG per node.
    """
    spec = _load_or_exit(spec_path)
    cluster = _start(spec, log_dir, private_scratch, deterministic)
    # SIGTERM ends `up` as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with cluster:
        description: dict[str, Any] = cluster.describe()
        description["tf_config"] = {node.address: cluster.tf_config(node) for node in spec.nodes}
        click.echo(json.dumps(description, indent=2))
        sys.stdout.flush()
        click.echo("cluster is up; Ctrl-C to stop", err=True)
        try:
            while True:
                dead = [n.address for n in spec.nodes if not cluster.is_alive(n)]
                if dead:
                    _fail(f"node {dead[0]} exited; its log: {cluster.log_file(dead[0])}", 1)
                time.sleep(0.5)
        except KeyboardInterrupt:
            click.echo("stopping", err=True)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--log-dir", type=click.Path(file_okay=False), help="Keep node logs here (default: temporary).")
@click.option("--private-scratch", is_flag=True, help="Give every node its own working directory.")
@_deterministic_option
def run(spec_path: str, command: tuple[str, ...], log_dir: str | None, private_scratch: bool,
        deterministic: bool) -> None:
    """Start the cluster of SPEC, run COMMAND against it, stop it; exit with COMMAND's code.

    Write the command after `--`. Its environment describes the cluster:
    CLUSTER_SIM_TARGET (the chief's grpc:// target), CLUSTER_SIM_CLUSTER (the
    cluster as JSON, as `up` prints it), CLUSTER_SIM_SPEC (the spec's path) and
    TF_CONFIG (the chief's). With --deterministic it also carries the determinism
    environment variables, so the command's TensorFlow matches the nodes'.
    """
    spec = _load_or_exit(spec_path)
    cluster = _start(spec, log_dir, private_scratch, deterministic)
    with cluster:
        try:
            code = _run_command(list(command), _command_environment(cluster, spec_path))
        except FileNotFoundError:
            _fail(f"command not found: {command[0]}", 127)
    sys.exit(code)


def _run_command(command: list[str], env: dict[str, str]) -> int:
    """Run ``command`` to its end and return its exit code (128 + N if signal N ended it).

    SIGTERM and SIGINT sent to this process are passed on to the command, which is
    waited for; the cluster stops after it. A SIGINT from the terminal (Ctrl-C) already
    reached the command, which shares our process group, so it is not sent twice. If
    this process is killed outright (SIGKILL), the kernel kills the command too
    (``PR_SET_PDEATHSIG``, set in the child before it executes the command), as it kills
    the nodes; the command's own children are its business.
    """
    process: subprocess.Popen | None = None
    pending: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and _from_terminal():
            return
        if process is None:
            pending.append(signum)
        else:
            process.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        process = subprocess.Popen(command, env=env, preexec_fn=_die_with_this_process())
        for signum in pending:
            process.send_signal(signum)
        code = process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if code < 0:
        click.echo(f"the command ended by signal {-code}; stopping the cluster", err=True)
        return 128 - code
    return code


def _die_with_this_process() -> Any:
    """A ``preexec_fn`` that gives the child ``PR_SET_PDEATHSIG`` = SIGKILL. libc is
    loaded here, before the fork: the child of a threaded parent must not load libraries."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    parent = os.getpid()

    def in_child() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # this process died before prctl took effect
            os._exit(1)

    return in_child


def _from_terminal() -> bool:
    """Whether a SIGINT just received was probably the terminal's Ctrl-C: this process
    group is the foreground group of the controlling terminal, so the command (in the
    same group) got the signal too."""
    try:
        with open("/dev/tty", "rb") as tty:
            return os.tcgetpgrp(tty.fileno()) == os.getpgrp()
    except OSError:  # no controlling terminal
        return False


def _refuse_a_shared_port(spec: ResourceSpec, this: Node, port: int) -> None:
    """Exit 2 if another loopback node of ``spec`` would listen on this loopback node's
    port: both run on this machine, where a server listens on every interface, so the
    second one to start could not bind it."""
    if not is_loopback(this.address):
        return
    for other in spec.nodes:
        if other is not this and is_loopback(other.address) and other.server_port(port) == this.server_port(port):
            raise _SpecClickException(
                f"{spec.source}: nodes {this.task_index} ({this.address}) and {other.task_index} ({other.address}) "
                f"both run on this machine (loopback addresses) and on port {this.server_port(port)}; "
                "give each node its own 'port' in the spec"
            )


@main.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--address", required=True, help="Which node of SPEC this host is (its address, without a port).")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_SERVER_PORT, show_default=True,
              help="The server port of every node of SPEC that has no 'port' field.")
@click.option("--scratch-dir", type=click.Path(file_okay=False),
              help="Run the node in this working directory (created if missing), as a private scratch "
                   "directory: several nodes on one machine then resolve relative paths, and "
                   "cluster_sim.private_view links, each in its own directory, as separate hosts do.")
@_deterministic_option
def node(spec_path: str, address: str, port: int, scratch_dir: str | None, deterministic: bool) -> None:
    """Serve one node of SPEC in the foreground: what each host of a real cluster runs.

    A node listens on its 'port' from SPEC, else on PORT; start this on every host of
    the spec, then run the training program on the chief with
    AutoDist(resource_spec_file=SPEC, port=PORT). Nodes with distinct ports (and
    distinct loopback addresses) can all run on one machine.
    """
    from cluster_sim.node import run_node

    spec = _load_or_exit(spec_path, simulate=False)
    try:
        this = spec.node(address)
    except SpecError as err:
        raise _SpecClickException(str(err)) from err
    _refuse_a_shared_port(spec, this, port)
    if scratch_dir is not None:
        scratch_dir = os.path.abspath(scratch_dir)
        os.makedirs(scratch_dir, exist_ok=True)
    click.echo(f"serving task {this.task_index} of job {JOB_NAME} at {this.address}:{this.server_port(port)}",
               err=True)
    run_node(spec.cluster_def(port), JOB_NAME, this.task_index, this.num_devices,
             log_file=None, scratch_dir=scratch_dir, deterministic=deterministic, parent_pid=None, report=None)


if __name__ == "__main__":
    main()
