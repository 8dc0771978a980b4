"""The conformance suite's library.

* ``oracle``, ``compare``: the single-device reference step and the bitwise comparator;
* ``model_spec``, ``case``: models and conformance cases as plain JSON data; ``model_graph``
  builds a model spec in TensorFlow;
* ``implementation``: the interface of an implementation under test and its loader;
* ``runner``, ``outcome``: run one property on one case; pass / fail / n/a / error;
* ``properties`` (1-4), ``saver_parity`` (5): the conformance properties as functions of a case;
* ``harness``: drives the implementation under test (build, restore, train, save, export);
* ``expectations``: what the oracle says a case's variables should be;
* ``checkpoints``, ``exports``: TensorFlow's own readers as witnesses of the checkpoint, the
  state file, the ``.meta`` and SavedModel MetaGraphs;
* ``plain_tf``, ``witness``, ``witness_files``: the plain-TensorFlow witness program, the
  process that serves it to a run, and the files they exchange;
* ``clusters``: simulated clusters shared across cases;
* ``plugin``, ``matrix``, ``profiles``: the pytest plugin, its conformance matrix, Hypothesis profiles;
* ``bench``, ``bench_report``: the save/restore throughput benchmark;
* ``cli``: the ``autodist-verify`` command.

Nothing here imports ``saver_impl``: the implementation under test (by default
``saver_impl``) is reached only through ``implementation.load_implementation``
(``tests/test_import_layers.py`` checks it).
"""
