"""Turning a single-device training graph into a distributed one.

* :mod:`.analysis` reads the original graph: its variables and their roles, the
  gradient computation (copied once per replica) and the optimizer's apply ops
  (re-applied to every part or mirror of a variable).
* :mod:`.subgraph` copies a set of original ops into the distributed graph.
* :mod:`.placement` creates the distributed storage of each variable; :mod:`.layout`
  describes it as plain data.
* :mod:`.inputs` copies a tf.data input pipeline once and splits its element.
* :mod:`.aggregation` aggregates per-replica gradients as the equivalence contract says.
* :mod:`.transform` puts these together into a :class:`~.transform.DistributedGraph`.
"""
