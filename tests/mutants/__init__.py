"""Mutants: implementations that wrap ``saver_impl`` and plant one bug each (``--impl tests.mutants.NAME``).

``tests/test_mutants.py`` checks that the named property catches each one, and that the
reference passes the same property on the same case.

* ``save_first_partition_only`` — saves a partitioned variable's first part only; ``save_fidelity``.
* ``save_partitions_reversed`` — concatenates the parts in reverse order when saving; ``save_fidelity``.
* ``save_float64_as_float32`` — writes float64 variables as float32; ``save_fidelity``.
* ``drop_optimizer_slots`` — leaves the optimizer's slots (``w/Adam``) out of the checkpoint; ``save_fidelity``.
* ``drop_global_step`` — leaves ``global_step`` out of the checkpoint; ``save_fidelity``.
* ``distributed_checkpoint_keys`` — keys entries by distributed names (``w/part_0/replica_0``); ``save_fidelity``.
* ``sparse_gradient_averaged_twice`` — divides sparse gradients by the replica count twice; ``save_fidelity``.
* ``restore_master_mirror_only`` — restores into the master mirror only; ``restore_fidelity`` and ``fine_tune``.
* ``restore_skips_global_step`` — restore silently leaves ``global_step`` at its old value; ``restore_fidelity``.
* ``saved_model_distributed_graph`` — the SavedModel's MetaGraph is the distributed graph; ``saved_model``.
* ``saved_model_initial_values`` — the SavedModel holds the initial, not the trained, values; ``saved_model``.
* ``saved_model_without_train_op`` — the SavedModel has no train op to fine-tune with; ``saved_model``.
* ``saver_meta_graph_distributed`` — ``Saver.save`` writes the distributed graph's ``.meta``; ``save_fidelity``.
* ``saver_without_state_file`` — ``Saver.save`` never updates the ``checkpoint`` state file
  (``tf.train.latest_checkpoint`` finds nothing); ``save_fidelity``.
* ``saver_state_before_data`` — ``Saver.save`` names the new checkpoint in the state file before
  writing it, so a save that fails leaves "latest" naming a partial checkpoint; ``crash_consistency``.
* ``batch_norm_state_from_last_replica`` — batch-norm moving averages from the last replica's
  batch, not replica 0's; ``save_fidelity``.
* ``save_int_counters_as_float`` — int32/int64 counters and ``global_step`` written as float32;
  ``save_fidelity``.
* ``restore_ignores_missing_keys`` — a checkpoint without a key restores, keeping the initial
  value; ``restore_fidelity``.
* ``saver_ignores_keep_every_n_hours`` — retires checkpoints by ``max_to_keep`` only; ``saver_api``.
* ``declines_sparse_gradients`` — refuses embeddings (a required feature); ``save_fidelity``.
* ``slots_joined_on_axis_0`` — slots of a variable partitioned along axis 1 or later joined as if
  split on axis 0; ``save_fidelity``.
* ``slots_of_first_optimizer_only`` — with two optimizers, the slots named like the first
  optimizer's only; ``save_fidelity``.
* ``keras_iterations_not_restored`` — restore leaves a Keras optimizer's ``iterations``;
  ``restore_fidelity``.
* ``saver_meta_graph_without_functions`` — the ``.meta`` lacks the functions of ``tf.cond`` and
  ``tf.while_loop``; ``save_fidelity``.
* ``tied_gradient_from_lookup_only`` — a tied embedding trained by its lookup's gradient only;
  ``save_fidelity``.
* ``clip_factor_from_master_replica`` — every replica's gradients clipped with replica 0's
  ``clip_by_global_norm`` factor; ``save_fidelity``.

``keras_iterations_not_restored``, ``slots_joined_on_axis_0``, ``slots_of_first_optimizer_only``
and ``saver_meta_graph_without_functions`` were first missed by the suite, which has been extended
to catch them.

Each plants its bug through the reference's public extension points only (``Saver.planner``, a
``CheckpointPlanner`` subclass; ``Saver.exported_graph``; ``SavedModelBuilder.exported_graph`` and
``exported_train_op``; ``AutoDist(aggregation=...)``; or TensorFlow's own public methods and
arguments): no name starting with ``_``, no code copied from ``saver_impl``
(``tests/test_mutant_hygiene.py`` checks the first).
"""
