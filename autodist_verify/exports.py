"""What an implementation writes besides checkpoint values, checked against TensorFlow:
the checkpoint state file, the ``.meta`` MetaGraph beside a checkpoint, the SavedModel's
MetaGraphs (each must be the original graph: free of distribution artifacts, with the
functions its control flow calls)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autodist_verify import checkpoints, model_graph
from autodist_verify.function_library import function_library_problems


def state_file_problems(checkpoint: str) -> list[str]:
    """The directory's checkpoint state file names the checkpoint save() returned."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(Path(checkpoint).parent))
    if latest != checkpoint:
        return [f"checkpoint state file: tf.train.latest_checkpoint gives {latest!r}, "
                f"not the path save() returned ({checkpoint!r})"]
    return []


def meta_file_problems(original: Any, checkpoint: str) -> list[str]:
    """The MetaGraph that save() writes beside the checkpoint is the ``original`` graph
    (a ``GraphDef``)."""
    from tensorflow.core.protobuf import meta_graph_pb2

    path = Path(f"{checkpoint}.meta")
    if not path.exists():
        return [f".meta: save() wrote no MetaGraph at {path} (write_meta_graph defaults to True)"]
    meta = meta_graph_pb2.MetaGraphDef()
    meta.ParseFromString(path.read_bytes())
    return [f".meta: {p}" for p in exported_graph_problems(meta.graph_def, original)]


def saved_model_artifacts(original: Any, export_dir: Path) -> list[str]:
    """Every MetaGraph of the SavedModel at ``export_dir`` is the ``original`` graph
    (a ``GraphDef``)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    return [p for meta in saved.meta_graphs for p in exported_graph_problems(meta.graph_def, original)]


def exported_graph_problems(graph_def: Any, original: Any) -> list[str]:
    """An exported graph is the original: no distribution artifacts, and the functions
    its control flow calls are there and unchanged."""
    return checkpoints.distribution_artifacts(graph_def, original) + function_library_problems(graph_def, original)


def original_graph_def(model: Mapping[str, Any]) -> Any:
    """The ``GraphDef`` of ``model``'s original graph, built by plain TensorFlow."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        model_graph.build(model)
    return graph.as_graph_def()

