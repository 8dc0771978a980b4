"""Turning a single-device training graph into a distributed one.

* :mod:`.analysis` reads the original graph: its variables and their roles, the
  gradient computation (copied once per replica) and the optimizer's apply ops
  (re-applied to every part or mirror of a variable).
* :mod:`.subgraph` copies a set of original ops into the distributed graph.
* :mod:`.storage` creates the distributed storage of each variable.
* :mod:`.aggregation` aggregates per-replica gradients as the equivalence contract says.
* :mod:`.transform` puts these together into a :class:`~.transform.DistributedGraph`.
"""
