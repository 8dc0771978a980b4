"""``python -m cluster_sim`` is the ``cluster-sim`` command."""

from cluster_sim.cli import main

main(prog_name="cluster-sim")
