"""Import TensorFlow with the legacy tf-keras (Keras 2) front end, quietly.

tf2cv builds only under tf-keras, and tf-keras trains faster on CPU, so every module
that needs TensorFlow imports it from here: ``from utils.tf_env import tf``.

TensorFlow's start-up lines (oneDNN, "Could not find cuda drivers", "failed call to cuInit"
on every CPU machine) are hidden unless ``REID_VERBOSE_TENSORFLOW=1`` (solution.py's
``--verbose_tensorflow``) or ``TF_CPP_MIN_LOG_LEVEL`` is set. Some are written to the
process's stderr before TensorFlow's log level applies, so stderr is closed while it loads.

TensorFlow's oneDNN kernels are on here on every x86 CPU (``TF_ENABLE_ONEDNN_OPTS=0`` turns
them off): TensorFlow itself turns them on only where the CPU has AVX-512 VNNI or newer, and on
an AVX2-only AMD EPYC its default Eigen kernels trained about half as fast (benchmarks/README.md,
"Threads and oneDNN").
"""
import contextlib
import os
import sys

from utils.machine import is_x86

_HINT = ("Set TF_USE_LEGACY_KERAS=1 before TensorFlow is imported (e.g. `export "
         "TF_USE_LEGACY_KERAS=1`, or import `utils.tf_env` before anything that imports "
         "TensorFlow).")

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise RuntimeError("TensorFlow was imported before TF_USE_LEGACY_KERAS=1 was set, so "
                       "tf.keras would be Keras 3, which tf2cv and this toolkit do not support. "
                       + _HINT)
os.environ["TF_USE_LEGACY_KERAS"] = "1"
VERBOSE = (os.environ.get("REID_VERBOSE_TENSORFLOW") == "1"
           or "TF_CPP_MIN_LOG_LEVEL" in os.environ)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if is_x86():
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


@contextlib.contextmanager
def _stderr_closed(closed):
    """Points file descriptor 2 at /dev/null (C++ writes bypass sys.stderr) while active."""
    if not closed:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


with _stderr_closed(not VERBOSE and "tensorflow" not in sys.modules):
    import tensorflow as tf  # noqa: E402
    # The first device query initialises the CUDA platform, which logs its failure on CPU-only
    # machines; doing it here keeps that line inside the silenced section too.
    tf.config.list_physical_devices()

if not tf.keras.layers.Layer.__module__.startswith("tf_keras"):
    raise RuntimeError("tf.keras resolved to Keras 3 instead of tf-keras. Install tf-keras "
                       "(pip install -r requirements.txt). " + _HINT)

keras = tf.keras

__all__ = ["tf", "keras"]
