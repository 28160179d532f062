"""Import TensorFlow with the legacy tf-keras (Keras 2) front end.

tf2cv builds only under tf-keras, and tf-keras trains faster on CPU, so every module
that needs TensorFlow imports it from here: ``from utils.tf_env import tf``.
"""
import os
import sys

_HINT = ("Set TF_USE_LEGACY_KERAS=1 before TensorFlow is imported (e.g. `export "
         "TF_USE_LEGACY_KERAS=1`, or import `utils.tf_env` before anything that imports "
         "TensorFlow).")

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise RuntimeError("TensorFlow was imported before TF_USE_LEGACY_KERAS=1 was set, so "
                       "tf.keras would be Keras 3, which tf2cv and this toolkit do not support. "
                       + _HINT)
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

if not tf.keras.layers.Layer.__module__.startswith("tf_keras"):
    raise RuntimeError("tf.keras resolved to Keras 3 instead of tf-keras. Install tf-keras "
                       "(pip install -r requirements.txt). " + _HINT)

keras = tf.keras

__all__ = ["tf", "keras"]
