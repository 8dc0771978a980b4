"""The conformance suite's library.

* ``oracle``, ``compare``: the single-device reference step and the bitwise comparator;
* ``model_spec``, ``case``: models and conformance cases as plain JSON data;
* ``implementation``: the interface of an implementation under test and its loader;
* ``properties``: the conformance properties as functions of a case;
* ``checkpoints``: TensorFlow's own checkpoint readers as witnesses;
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
