"""Mutant: sparse (IndexedSlices) gradients are divided by the replica count twice.

Realistic: the concatenated slices are averaged once in aggregation and once more where
they are applied, so embedding rows get 1/R of their gradient: with SGD they learn R
times slower; Adam's normalisation hides most of it, but not all. Caught by
``save_fidelity`` (the embedding, and from the next step on everything, differs from
the oracle after k steps).
"""

import saver_impl
from saver_impl import SavedModelBuilder, Saver, strategy  # noqa: F401 - the interface


class SparseAveragedTwice(saver_impl.GradientAggregation):
    def sparse(self, values, indices):
        averaged, all_indices = super().sparse(values, indices)
        return averaged / len(values), all_indices


class AutoDist(saver_impl.AutoDist):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, aggregation=SparseAveragedTwice(), **kwargs)
