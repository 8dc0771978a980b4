"""``autodist-verify``: run the conformance suite, replay a reproduction, inspect and diff checkpoints.

Exit codes: 0 conforms / passes / identical; 1 a property failed or checkpoints differ;
2 bad input (a missing file, an invalid case, an implementation that cannot be imported); 3 the
replayed property is not applicable to the case; 4 the harness failed (a cluster did
not start, the witness process was unavailable): no verdict.
"""

from __future__ import annotations

from cluster_sim.determinism import apply_environment

apply_environment()  # before TensorFlow is imported

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, TextIO  # noqa: E402

import click  # noqa: E402

from autodist_verify.implementation import DEFAULT_IMPLEMENTATION  # noqa: E402
from autodist_verify.profiles import EXAMPLES, PROFILES  # noqa: E402

if TYPE_CHECKING:
    from autodist_verify.case import Case
    from autodist_verify.implementation import Implementation

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _InputError(click.ClickException):
    exit_code = 2


def _implementation(impl: str) -> Implementation:
    """The implementation named by ``--impl``, loaded before any other work: a module
    that cannot be imported or lacks the interface is one usage error (exit 2)."""
    from autodist_verify.implementation import ImplementationError, load_implementation

    try:
        return load_implementation(impl)
    except ImplementationError as err:
        raise _InputError(str(err)) from err


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Check that a distributed TensorFlow system's Saver and SavedModelBuilder save the
    original graph: save, restore and fine-tune round trips bit-identical to
    single-device training, on simulated clusters of real TensorFlow servers."""


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--impl", default=DEFAULT_IMPLEMENTATION, show_default=True,
              help="Implementation under test: a module exposing AutoDist, Saver, SavedModelBuilder.")
@click.option("--profile", type=click.Choice(list(EXAMPLES)), default="ci", show_default=True,
              help="Hypothesis profile: quick (2 examples per cell), ci (10 per cell; minutes) "
                   "or thorough (many more examples, drawn anew each run).")
@click.option("--report", default="conformance-report", show_default=True,
              help="Directory for matrix.json, matrix.md and reproductions.")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="pytest-xdist worker processes, each with its own clusters and witness; "
                   "0 runs every test in this process.")
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def run(impl: str, profile: str, report: str, workers: int, pytest_args: tuple[str, ...]) -> None:
    """Run the conformance suite against IMPL and print the conformance matrix.

    Hypothesis generates models, clusters (1-3 simulated nodes with 0-2 gpus each),
    strategies and schedules; every cluster a case needs is started on this machine
    as real TensorFlow server processes and shared by the cases of one worker (each
    worker process starts its own). pytest's report and the matrix go to standard
    output; TensorFlow's C++ log, of this process and every process it starts, goes to
    tensorflow.log in --report. Extra arguments go to pytest (e.g. `-k fine_tune`,
    `-x`). Exit code 0 only if everything conforms; 1 if a property failed (with `-x`
    and workers, pytest-xdist interrupts the other worker at the first failure and the
    exit code is 2: use `--workers 0 -x` to stop at the first failure with 1).
    """
    from autodist_verify.tf_log import stderr_to

    report_dir = Path(report)
    created = not report_dir.exists()
    report_dir.mkdir(parents=True, exist_ok=True)
    log_file = report_dir / "tensorflow.log"
    # From here on TensorFlow is imported (here and in every process the run starts); an
    # error of this command leaves the redirect before click prints it.
    with stderr_to(log_file) as terminal:
        import pytest

        import property_tests

        # Here, not in every test's setup: a broken module stops the run before collection,
        # and leaves no report directory behind if this command made it.
        try:
            _implementation(impl)
        except _InputError:
            if created:
                shutil.rmtree(report_dir)
            raise
        suite = str(Path(property_tests.__file__).parent)
        click.echo(f"conformance suite against {impl} (profile {profile}); report in {report}/, "
                   f"TensorFlow's log in {log_file}", file=terminal)
        # Tests, not files, go to the workers (--dist load): one file holds most of the suite.
        # The ci profile is derandomized per test, so a test draws the same cases on any worker.
        parallel = ["-n", str(workers), "--dist", "load"] if workers else []
        arguments = [suite, "--impl", impl, "--hypothesis-profile", PROFILES[profile], "--conformance-report",
                     report, "-p", "no:cacheprovider", *parallel, *pytest_args]
        code = pytest.main(arguments)
    sys.exit(int(code))


@main.command()
@click.argument("case_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--impl", default=DEFAULT_IMPLEMENTATION, show_default=True, help="Implementation under test.")
@click.option("--property", "prop", default=None,
              help="Property to run (default: the one the file names, else all).")
def replay(case_file: str, impl: str, prop: str | None) -> None:
    """Re-run the properties of CASE_FILE (a reproduction the suite wrote) outside Hypothesis."""
    from autodist_verify.case import CaseError, load_reproduction
    from autodist_verify.clusters import ClusterPool
    from autodist_verify.outcome import ERROR, FAIL, NOT_APPLICABLE, PASS
    from autodist_verify.properties import PROPERTIES
    from autodist_verify.runner import run_property
    from autodist_verify.witness import Witness

    try:
        case, named = load_reproduction(case_file)
    except CaseError as err:
        raise _InputError(str(err)) from err
    implementation = _implementation(impl)
    prop = prop or named
    names = [prop] if prop else list(PROPERTIES)
    unknown = [n for n in names if n not in PROPERTIES]
    if unknown:
        raise _InputError(f"unknown property {unknown[0]!r} (known: {', '.join(PROPERTIES)})")
    statuses = []
    with ClusterPool() as pool, Witness(forbidden=implementation.name) as witness:
        for name in names:
            click.echo(f"{name}: running ...", err=True)
            began = time.monotonic()
            outcome = run_property(name, case, implementation, pool, witness)
            statuses.append(outcome.status)
            label = {PASS: "pass", FAIL: "FAIL", NOT_APPLICABLE: "not applicable", ERROR: "ERROR (harness)"}
            detail = f"\n{outcome.detail}" if outcome.status in (FAIL, ERROR) else (
                f": {outcome.detail}" if outcome.detail else "")
            click.echo(f"{name}: {label[outcome.status]} ({time.monotonic() - began:.1f} s){detail}")
    if FAIL in statuses:
        sys.exit(1)
    if ERROR in statuses:
        sys.exit(4)
    sys.exit(3 if all(s == NOT_APPLICABLE for s in statuses) else 0)


@main.command()
@click.argument("checkpoint")
@click.option("--model-spec", "model_spec_path", type=click.Path(exists=True, dir_okay=False),
              help="JSON model spec of the original graph to check against.")
@click.option("--graph", "meta_graph", type=click.Path(exists=True, dir_okay=False),
              help="MetaGraph (.meta) of the original graph to check against.")
@click.option("--plan", "case_file", type=click.Path(exists=True, dir_okay=False),
              help="A case file: also print the plan IMPL's Saver saves its model by in its setting.")
@click.option("--impl", default=DEFAULT_IMPLEMENTATION, show_default=True, help="Implementation, for --plan.")
def inspect(checkpoint: str, model_spec_path: str | None, meta_graph: str | None, case_file: str | None,
            impl: str) -> None:
    """List what CHECKPOINT holds; with an original graph, compare it with what
    tf.compat.v1.train.Saver writes for that graph (keys, shapes, dtypes). With --plan,
    print beside it which device writes which slice of each key, from which copies,
    after checking which mirrors (the implementation's checkpoint plan, if it reports one;
    this starts the case's cluster)."""
    from autodist_verify import checkpoints
    from autodist_verify.case import Case, CaseError

    if model_spec_path and meta_graph:
        raise _InputError("give at most one of --model-spec and --graph")
    plan: tuple[Case, Implementation] | None = None
    if case_file:  # the bad input a plan can meet is reported before anything is printed
        try:
            plan = Case.load(case_file), _implementation(impl)
        except CaseError as err:
            raise _InputError(str(err)) from err
    try:
        held = checkpoints.contents(checkpoint)
    except Exception as err:  # TensorFlow raises several types for unreadable checkpoints
        raise _InputError(f"{checkpoint}: cannot read the checkpoint: {err}") from err
    for key in sorted(held):
        click.echo(f"{key:<48} {held[key].dtype:<8} {list(held[key].shape)}")
    if plan is not None:
        _print_plan(*plan, set(held))
    if not (model_spec_path or meta_graph):
        return
    expected = _expected_contents(model_spec_path, meta_graph)
    problems = checkpoints.layout_problems(expected, held)
    for problem in problems:
        click.echo(f"MISMATCH {problem}")
    click.echo(f"{len(held)} keys; " + (f"{len(problems)} differences from the original graph" if problems
                                          else "exactly what TensorFlow's Saver writes for the original graph"))
    sys.exit(1 if problems else 0)


def _print_plan(case: Case, implementation: Implementation, held_keys: set[str]) -> None:
    """Print the implementation's checkpoint plan for the case's model and setting."""
    from autodist_verify.clusters import ClusterPool
    from autodist_verify.harness import checkpoint_plan

    impl = implementation.name
    with ClusterPool(capacity=1) as pool:
        rows = checkpoint_plan(implementation, pool, case.model, case.source, sharded=case.sharded)
    click.echo(f"plan of {impl} for {case.source.label} on {len(case.source.resource_spec.nodes)} node(s):")
    if rows is None:
        click.echo(f"  {impl}'s Saver reports no plan (no checkpoint_plan method)")
        return
    for row in rows:
        where = f"slice {row['slice']}" if row["slice"] else "whole"
        checks = f"; checks {', '.join(row['checks'])}" if row["checks"] else ""
        click.echo(f"  {row['key']:<40} {where:<28} written by {row['writer']} from "
                   f"{', '.join(row['sources'])}{checks}")
    planned = {row["key"] for row in rows}
    for key in sorted(planned - held_keys):
        click.echo(f"PLAN ONLY {key!r}: planned, but not in the checkpoint")
    for key in sorted(held_keys - planned):
        click.echo(f"CHECKPOINT ONLY {key!r}: in the checkpoint, but not planned")


def _expected_contents(model_spec_path: str | None, meta_graph: str | None):
    """What tf.compat.v1.train.Saver writes for the original graph, by saving it once."""
    import tensorflow as tf

    from autodist_verify import checkpoints, model_graph

    graph = tf.Graph()
    with graph.as_default(), tempfile.TemporaryDirectory() as directory:
        if model_spec_path:
            model_graph.build(json.loads(Path(model_spec_path).read_text()))
        else:
            tf.compat.v1.train.import_meta_graph(meta_graph, clear_devices=True)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            prefix = saver.save(sess, os.path.join(directory, "expected"))
        return checkpoints.contents(prefix)


@main.command()
@click.argument("checkpoint_a")
@click.argument("checkpoint_b")
def diff(checkpoint_a: str, checkpoint_b: str) -> None:
    """Compare two checkpoints bit for bit: keys, shapes, dtypes, then every value's bytes."""
    from autodist_verify import checkpoints

    try:
        problems = checkpoints.diff(checkpoint_a, checkpoint_b)
    except Exception as err:
        raise _InputError(f"cannot read a checkpoint: {err}") from err
    for problem in problems:
        click.echo(problem)
    if problems:
        click.echo(f"{len(problems)} difference(s)")
        sys.exit(1)
    click.echo(f"identical: {len(checkpoints.contents(checkpoint_a))} keys, bit for bit")


@main.command()
@click.option("--impl", default=DEFAULT_IMPLEMENTATION, show_default=True, help="Implementation under test.")
@click.option("--sizes", default="4,32,128", show_default=True,
              help="Model sizes in MiB, comma-separated (e.g. 4,64,1024 for a 1 GiB point).")
@click.option("--layouts", default="ps-1node,ps-2nodes,partitioned-ps,allreduce", show_default=True,
              help="Where the variables live: ps-1node, ps-2nodes, partitioned-ps, allreduce.")
@click.option("--rounds", type=click.IntRange(1), default=3, show_default=True,
              help="Repetitions; medians are reported.")
@click.option("--out", "out_dir", default="bench-results", show_default=True,
              help="Directory for bench.json, bench.md and bench.png.")
@click.option("--workdir", default=None,
              help="Where checkpoints are written (default: a temporary directory in --out).")
@click.option("--durable/--no-durable", default=True, show_default=True,
              help="Also measure IMPL's durable saves (Saver(..., durable=True)), if its Saver has that keyword.")
@click.option("--native/--no-native", default=True, show_default=True,
              help="Also measure each layout built with TensorFlow alone (replica_device_setter, "
                   "fixed_size_partitioner) on the same cluster.")
def bench(impl: str, sizes: str, layouts: str, rounds: int, out_dir: str, workdir: str | None,
          durable: bool, native: bool) -> None:
    """Save/restore throughput of IMPL's Saver beside tf.compat.v1.train.Saver, the same
    layouts built natively with TensorFlow, and the raw disk. The terminal gets the table
    and the progress; TensorFlow's logs go to bench.log in --out."""
    from autodist_verify.bench import LAYOUTS
    from autodist_verify.tf_log import stderr_to

    try:
        size_list = [float(s) for s in sizes.split(",") if s.strip()]
    except ValueError as err:
        raise _InputError(f"--sizes: {sizes!r} is not a comma-separated list of numbers") from err
    layout_list = [name.strip() for name in layouts.split(",") if name.strip()]
    unknown = [name for name in layout_list if name not in LAYOUTS]
    if unknown:
        raise _InputError(f"--layouts: unknown layout {unknown[0]!r} (known: {', '.join(LAYOUTS)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_file = out / "bench.log"
    settings = {"impl": impl, "sizes_mib": size_list, "layouts": layout_list, "rounds": rounds,
                "durable": durable, "native": native}
    with stderr_to(log_file) as terminal:
        measurements = _bench_measurements(impl, settings, Path(workdir) if workdir else None, out, terminal)
        _bench_outputs(measurements, settings, out, terminal)
        click.echo(f"TensorFlow's log: {log_file}", file=terminal)


def _bench_measurements(impl: str, settings: dict, workdir: Path | None, out: Path, terminal: TextIO) -> list:
    """Every measurement of ``bench``; progress lines go to ``terminal``."""
    from autodist_verify.bench import Bench, supports_durable
    from autodist_verify.clusters import ClusterPool

    implementation = _implementation(impl)
    durable = settings["durable"] and supports_durable(implementation)
    if settings["durable"] and not durable:
        click.echo(f"{impl}: its Saver has no durable keyword; no durable rows", file=terminal)
    per_layout = 2 * (1 + durable) + (2 if settings["native"] else 0)
    total = len(settings["sizes_mib"]) * (2 + per_layout * len(settings["layouts"]))
    done = 0

    def progress(text: str) -> None:
        nonlocal done
        done += 1
        click.echo(f"[{done}/{total}] {text}", file=terminal)

    scratch = workdir or Path(tempfile.mkdtemp(prefix="bench-", dir=out))
    measurements = []
    try:
        with ClusterPool(capacity=2) as pool:
            runner = Bench(implementation, pool, scratch, rounds=settings["rounds"], progress=progress)
            for size in settings["sizes_mib"]:
                measurements.append(runner.disk(size))
                measurements.append(runner.tensorflow(size))
                for layout in settings["layouts"]:
                    if settings["native"]:
                        measurements += runner.native(layout, size)
                    for sharded in (False, True):
                        measurements += runner.ours(layout, sharded, size, durable=durable)
    finally:
        if workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    return measurements


def _bench_outputs(measurements: list, settings: dict, out: Path, terminal: TextIO) -> None:
    """The table on standard output; bench.json, bench.md and bench.png in ``out``."""
    from autodist_verify import bench_report

    text = bench_report.table(measurements)
    click.echo(text)
    bench_report.write_json(measurements, out / "bench.json", settings)
    (out / "bench.md").write_text(text)
    bench_report.plot(measurements, out / "bench.png")
    click.echo(f"written: {out / 'bench.json'}, {out / 'bench.md'}, {out / 'bench.png'}", file=terminal)


if __name__ == "__main__":
    main()
