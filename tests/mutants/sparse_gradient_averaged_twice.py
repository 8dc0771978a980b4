"""Mutant: sparse (IndexedSlices) gradients are divided by the replica count twice.

Realistic: the concatenated slices are averaged once in aggregation and once more where
they are applied, so embedding rows get 1/R of their gradient: with SGD they learn R
times slower; Adam's normalisation hides most of it, but not all. Caught by
``save_fidelity`` (the embedding, and from the next step on everything, differs from
the oracle after k steps).
"""

import tensorflow as tf

import saver_impl
from cluster_sim.determinism import session_config
from saver_impl import SavedModelBuilder, Saver, strategy  # noqa: F401 - the interface
from saver_impl.graph.transform import DistributedGraph
from saver_impl.session import DistributedSession


class SparseAveragedTwiceGraph(DistributedGraph):
    def _aggregate(self):
        aggregated = super()._aggregate()
        for record in self.item.model_variables:
            if record.gradient is None or not record.gradient.sparse:
                continue
            for mirrors in aggregated[record.name]:
                for mirror, (values, *rest) in enumerate(mirrors):
                    with tf.device(values.device):
                        mirrors[mirror] = [values / self.replicas, *rest]
        return aggregated


class AutoDist(saver_impl.AutoDist):
    def create_distributed_session(self):
        # The reference checks the graph and builds the strategy; its session is then
        # replaced by one running the faulty distributed graph.
        reference = super().create_distributed_session()
        reference.close()
        self._sessions.remove(reference)
        self.distributed_graph = SparseAveragedTwiceGraph(
            self.graph_item, self.strategy, self._tf_device, self._container)
        session = DistributedSession(
            self.distributed_graph, self._target(), session_config(operation_timeout_in_ms=self._timeout_ms))
        self._sessions.append(session)
        return session
