"""The optimizer: Adam by default, AdamW decaying kernels only when --weight_decay is set."""
import numpy as np
import pytest

from utils.tf_env import keras, tf
from training.optimizer import make_optimizer


def _variables():
    # Names as Keras and the adaptive-L2 code give them.
    return {name: tf.Variable(np.full((2, 2), 2.0, "float32"), name=name) for name in (
        "conv/kernel", "block/depthwise_kernel", "dense/kernel", "dense/bias", "bn/gamma",
        "bn/beta", "gem/power", "conv/kernel_l2_regularization_theta")}


def test_default_is_plain_adam():
    optimizer = make_optimizer()
    assert type(optimizer) is keras.optimizers.Adam
    assert float(optimizer.learning_rate) == pytest.approx(0.001)


def test_weight_decay_shrinks_kernels_only():
    variables = _variables()
    optimizer = make_optimizer(weight_decay=0.5, learning_rate=0.01)
    optimizer.build(list(variables.values()))
    # Zero gradients: Adam's step is 0, so what changes is the decay alone.
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables.values()])
    decayed = 2.0 * (1 - 0.01 * 0.5)
    for name, variable in variables.items():
        expected = decayed if name.split("/")[-1] in ("kernel", "depthwise_kernel") else 2.0
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-6, err_msg=name)


def test_negative_weight_decay_is_rejected():
    with pytest.raises(ValueError, match="weight_decay"):
        make_optimizer(weight_decay=-1.0)
