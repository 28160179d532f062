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


def _run(optimizer, gradients, start=1.0):
    variable = tf.Variable([start], dtype=tf.float32, name="dense/kernel")
    optimizer.build([variable])
    values = []
    for gradient in gradients:
        optimizer.apply_gradients([(tf.constant([gradient], tf.float32), variable)])
        values.append(float(variable.numpy()[0]))
    return values


def _adam_reference(gradients, learning_rate, amsgrad, start=1.0, beta_1=0.9, beta_2=0.999,
                    epsilon=1e-7):
    """Keras' Adam / AMSGrad update, one scalar at a time."""
    value, m, v, v_hat, values = start, 0.0, 0.0, 0.0, []
    for step, gradient in enumerate(gradients, start=1):
        m = beta_1 * m + (1 - beta_1) * gradient
        v = beta_2 * v + (1 - beta_2) * gradient ** 2
        v_hat = max(v_hat, v)
        alpha = learning_rate * np.sqrt(1 - beta_2 ** step) / (1 - beta_1 ** step)
        value -= alpha * m / (np.sqrt(v_hat if amsgrad else v) + epsilon)
        values.append(value)
    return values


def test_amsgrad_keeps_the_largest_second_moment():
    # A large gradient, then small ones: AMSGrad's denominator keeps the large moment, so its
    # later steps are smaller than Adam's.
    gradients = [10.0, 0.1, 0.1, 0.1, -0.1]
    amsgrad = _run(make_optimizer(learning_rate=0.1, name="amsgrad"), gradients)
    adam = _run(make_optimizer(learning_rate=0.1, name="adam"), gradients)
    np.testing.assert_allclose(amsgrad, _adam_reference(gradients, 0.1, True), rtol=1e-5)
    np.testing.assert_allclose(adam, _adam_reference(gradients, 0.1, False), rtol=1e-5)
    assert abs(amsgrad[-1] - adam[-1]) > 20 * 1e-5  # far beyond the tolerance above


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_and_nesterov(nesterov):
    gradients, learning_rate, momentum = [1.0, -2.0, 0.5, 3.0], 0.1, 0.9
    got = _run(make_optimizer(learning_rate=learning_rate, name="sgd", momentum=momentum,
                              nesterov=nesterov), gradients)
    value, velocity, expected = 1.0, 0.0, []
    for gradient in gradients:
        velocity = momentum * velocity - learning_rate * gradient
        value += momentum * velocity - learning_rate * gradient if nesterov else velocity
        expected.append(value)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize("name", ["amsgrad", "sgd"])
def test_weight_decay_is_decoupled_for_every_optimizer(name):
    variables = _variables()
    optimizer = make_optimizer(weight_decay=0.5, learning_rate=0.01, name=name)
    optimizer.build(list(variables.values()))
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables.values()])
    for variable_name, variable in variables.items():
        kernel = variable_name.split("/")[-1] in ("kernel", "depthwise_kernel")
        np.testing.assert_allclose(variable.numpy(), 2.0 * (1 - 0.005) if kernel else 2.0,
                                   rtol=1e-6, err_msg=variable_name)


def test_unknown_optimizer_is_rejected():
    with pytest.raises(ValueError, match="optimizer"):
        make_optimizer(name="lamb")
