"""A local multi-process cluster of real TensorFlow servers, for AutoDist resource specs.

Importing this package does not import TensorFlow, so node processes can set their
environment (the determinism settings, when asked for) before they do.
"""

from cluster_sim.cluster import ClusterError, LocalCluster
from cluster_sim.determinism import INTRA_OP_THREADS as NODE_INTRA_OP_THREADS
from cluster_sim.scratch import private_view
from cluster_sim.spec import JOB_NAME, Device, Node, ResourceSpec, SpecError, is_loopback

__all__ = [
    "ClusterError", "Device", "JOB_NAME", "LocalCluster",
    "NODE_INTRA_OP_THREADS", "Node", "ResourceSpec", "SpecError", "is_loopback", "private_view",
]
