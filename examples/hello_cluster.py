"""Run one computation on every device of a cluster started by `cluster-sim run`.

    cluster-sim run examples/two_nodes.yml -- python examples/hello_cluster.py

Each device sums its own slice of a vector; the chief adds the partial sums. The run
metadata shows which devices really executed ops; the exit code is 1 if one did not.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402


def main() -> int:
    target = os.environ["CLUSTER_SIM_TARGET"]
    cluster = json.loads(os.environ["CLUSTER_SIM_CLUSTER"])
    devices = [name for node in cluster["nodes"] for name in node["devices"].values()]

    tf.compat.v1.disable_eager_execution()
    # Fed, not constant: a constant input would be folded into one op on the chief.
    values = tf.compat.v1.placeholder(tf.float64, [len(devices) * 1000])
    partial_sums = []
    for i, device in enumerate(devices):
        with tf.device(device):
            partial_sums.append(tf.reduce_sum(values[i * 1000:(i + 1) * 1000]))
    total = tf.add_n(partial_sums)

    options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
    metadata = tf.compat.v1.RunMetadata()
    with tf.compat.v1.Session(target) as sess:
        feed = {values: [float(i) for i in range(len(devices) * 1000)]}
        result = sess.run(total, feed_dict=feed, options=options, run_metadata=metadata)

    expected = float(sum(range(len(devices) * 1000)))
    # Run metadata names devices with a replica field: /job:worker/replica:0/task:0/...
    ran = {stats.device.replace("/replica:0", "") for stats in metadata.step_stats.dev_stats}
    print(f"sum over {len(devices)} devices: {result} (expected {expected})")
    for device in devices:
        print(f"  {'ran ' if device in ran else 'IDLE'} {device}")
    return 0 if result == expected and all(d in ran for d in devices) else 1


if __name__ == "__main__":
    sys.exit(main())
