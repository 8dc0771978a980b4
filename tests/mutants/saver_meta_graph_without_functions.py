"""Mutant: the ``.meta`` beside a checkpoint lacks the graph's function library.

Realistic: the saver rebuilds the exported MetaGraph from the graph's nodes and
collections and forgets the functions that ``tf.cond`` and ``tf.while_loop`` (and any
``tf.function`` call) are made of. ``tf.train.import_meta_graph`` and the restore still
work — no function runs then — so the checkpoint looks fine until a fine-tune from the
``.meta`` runs its first step. Only graphs with control flow are affected. Caught by
``save_fidelity`` (the ``.meta``'s If/While nodes call functions it does not hold).
"""

from pathlib import Path

import saver_impl
from saver_impl import AutoDist, SavedModelBuilder, strategy  # noqa: F401 - the interface


class Saver(saver_impl.Saver):
    def export_meta_graph(self, filename=None, *args, **kwargs):
        meta_graph = super().export_meta_graph(None, *args, **kwargs)
        del meta_graph.graph_def.library.function[:]
        if filename:
            Path(filename).write_bytes(meta_graph.SerializeToString())
        return meta_graph
