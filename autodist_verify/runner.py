"""Run one property on one case and say what happened: the one runner of the suite.

The pytest plugin, ``autodist-verify replay`` and the project's mutant tests all call
:func:`run_property`, so a case means the same thing everywhere. Its
:class:`Outcome` is one of:

* ``pass``: the property holds for the case;
* ``fail``: it does not, or the implementation raised: non-conformance;
* ``n/a``: it cannot hold for this case, for a reason outside the implementation, or
  the case uses an optional graph feature (``model_spec.optional_features``) that the
  implementation declines with ``NotImplementedError`` (a declined required feature is
  a failure);
* ``error``: the harness or the environment failed (a cluster did not start, a port
  was taken, the witness process died). An error says nothing about the
  implementation and never counts as non-conformance; a run with errors is incomplete.
"""

from __future__ import annotations

import traceback
from dataclasses import replace

from autodist_verify import model_spec
from autodist_verify.case import Case
from autodist_verify.clusters import ClusterPool
from autodist_verify.harness import Context
from autodist_verify.implementation import Implementation
from autodist_verify.oracle_pool import OraclePool
from autodist_verify.outcome import ERROR, FAIL, NOT_APPLICABLE, PASS, NotApplicable, Outcome, PropertyFailure
from autodist_verify.properties import PROPERTIES
from autodist_verify.witness import Witness, WitnessUnavailable
from cluster_sim import ClusterError
from cluster_sim.launcher import LauncherError
from cluster_sim.tempdirs import owned_temp_dir, remove_owned

# What the harness raises when it, not the implementation, could not do its part.
HARNESS_ERRORS = (ClusterError, LauncherError, WitnessUnavailable)


class UnknownProperty(KeyError):
    """A property name the suite does not know; the message lists the known ones."""


def _layout(case: Case) -> str:
    """Where a case trains and is restored, in words, for a failure message."""
    def describe(setting) -> str:
        nodes = len(setting.cluster["nodes"])
        return f"{setting.label} on {nodes} node{'s' if nodes > 1 else ''} ({setting.replicas} replicas)"

    return f"training under {describe(case.source)}, restoring under {describe(case.target)}"


def run_property(prop: str, case: Case, impl: Implementation, clusters: ClusterPool,
                 witness: Witness) -> Outcome:
    """Run property ``prop`` on ``case`` against ``impl`` in a scratch directory of its own."""
    return run_properties([prop], case, impl, clusters, witness)[0]


def run_properties(props: list[str], case: Case, impl: Implementation, clusters: ClusterPool,
                   witness: Witness) -> list[Outcome]:
    """Run each property of ``props`` on ``case`` against ``impl``, in order, in one
    scratch directory: a distributed run (train, save, restore) that a later property
    asks for exactly as an earlier one did is done once and its result shared
    (:func:`~autodist_verify.harness.run_distributed`). Each property checks everything
    it checks alone; one property's failure does not stop the others."""
    unknown = [prop for prop in props if prop not in PROPERTIES]
    if unknown:
        raise UnknownProperty(f"unknown property {unknown[0]!r} (known: {', '.join(PROPERTIES)})")
    workdir = owned_temp_dir("autodist-verify", "-".join(props))  # removed below, on SIGTERM, or once stale
    shared_runs: dict = {}
    outcomes = []
    try:
        with OraclePool() as oracles:
            for prop in props:
                context = Context(impl, clusters, witness, workdir, runs=shared_runs, oracles=oracles)
                outcome = _outcome(prop, case, context)
                outcomes.append(replace(outcome, observed=tuple(context.observed)))
    finally:
        remove_owned(workdir)
    return outcomes


def _outcome(prop: str, case: Case, context: Context) -> Outcome:
    """Run the property and say what happened."""
    try:
        PROPERTIES[prop](context, case)
    except NotApplicable as reason:
        return Outcome(NOT_APPLICABLE, str(reason))
    except PropertyFailure as failure:
        return Outcome(FAIL, str(failure))
    except HARNESS_ERRORS as error:
        return Outcome(ERROR, f"{type(error).__name__}: {error}")
    except NotImplementedError as error:
        optional = model_spec.optional_features(case.model)
        if not optional:
            return Outcome(FAIL, f"the implementation declined a required feature: {error}")
        return Outcome(NOT_APPLICABLE, f"the implementation does not support {', '.join(optional)}: "
                                       f"{str(error).splitlines()[0] if str(error) else type(error).__name__}")
    except Exception as error:  # raised by the implementation (or by TensorFlow inside it)
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return Outcome(FAIL, f"the implementation raised {type(error).__name__}: {message}\n"
                             f"while running {prop} with {_layout(case)}\n"
                             + "".join(traceback.format_exception(error, limit=-6)))
    return Outcome(PASS)
