"""CPU threads of a run: TensorFlow's intra- and inter-op pools and OpenCV's own pool.

On small CPU machines they compete with the loader workers (``--workers``) for the same cores;
which setting is fastest differs between CPU makes (benchmarks/thread_speed.py measures them).
"""


def set_threads(intra_op=0, inter_op=0, opencv=-1):
    """Sets the pools; 0 (TensorFlow) or -1 (OpenCV) leaves a library's own choice.

    TensorFlow's pools can only be set before its runtime starts (the first op), so call this
    before building anything.
    """
    from utils.tf_env import tf
    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    if opencv >= 0:
        import cv2
        cv2.setNumThreads(opencv)  # 0: OpenCV runs each call on the calling thread


def thread_counts():
    """``{"intra_op": n, "inter_op": n, "opencv": n}`` as the libraries report them (0: their
    own choice, for TensorFlow)."""
    import cv2

    from utils.tf_env import tf
    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
            "opencv": cv2.getNumThreads()}
