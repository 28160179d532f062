"""Seeds of Python, NumPy and TensorFlow, and TensorFlow's op determinism."""
import random

import numpy as np


def seed_everything(seed, deterministic=False):
    """Seeds every global generator (the sampler and augmentors take their own seeds).

    ``deterministic`` turns on TensorFlow's op determinism, so that two runs with the same
    seed compute the same numbers (ops without a deterministic kernel then raise)."""
    from utils.tf_env import tf

    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        tf.random.set_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
