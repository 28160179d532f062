"""Fixed and adaptive L2 against hand computations and brute-force loops."""
import numpy as np
import pytest

from utils.tf_env import tf, keras
from applications.regularization import (RegularizationConfig, attach_regularizers,
                                         regularization_factors, regularization_loss)

FACTORS = dict(kernel=1e-3, bias=2e-3, gamma=3e-3, beta=4e-3)


def nested_model(seed=0):
    """Conv/BN/depthwise/Dense inside a nested model, plus a LayerNorm that must be skipped."""
    keras.utils.set_random_seed(seed)
    inner_input = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="inner_conv")(inner_input)
    x = keras.layers.BatchNormalization(name="inner_bn")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="inner_depthwise")(x)
    x = keras.layers.BatchNormalization(scale=False, name="inner_bn_no_scale")(x)
    inner = keras.Model(inner_input, x, name="inner")
    image = keras.Input((8, 8, 3))
    y = inner(image)
    y = keras.layers.Conv2D(5, 1, use_bias=False, name="outer_conv")(y)
    y = keras.layers.LayerNormalization(name="outer_layer_norm")(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    y = keras.layers.Dense(2, name="outer_dense")(y)
    return keras.Model(image, y, name="outer")


def brute_force_expected(model, factors):
    """(count, value) by walking weight names: kernels/biases of conv/dense layers, gamma/beta of
    BN layers, nothing else."""
    count, value = 0, 0.0
    for weight in model.weights:
        name = weight.name.split(":")[0]
        layer_name, parameter = name.rsplit("/", 1)
        if "layer_norm" in layer_name or "moving" in parameter:
            continue
        factor = factors["kernel" if "kernel" in parameter else parameter]
        if factor > 0:
            count += 1
            value += factor * float(np.sum(np.square(weight.numpy().astype("float64"))))
    return count, value


def test_fixed_l2_value_and_count_match_brute_force(capsys):
    model = nested_model()
    for weight in model.weights:  # non-trivial gamma/beta/bias values
        weight.assign(np.random.RandomState(len(weight.name)).randn(*weight.shape))
    terms = attach_regularizers(model, RegularizationConfig(**FACTORS, adaptive=False))
    count, value = brute_force_expected(model, FACTORS)
    assert count == len(terms) == 10
    assert len(model.losses) == 1  # one fused loss for all terms
    assert float(tf.add_n(model.losses)) == pytest.approx(value, rel=1e-5)
    assert float(regularization_loss(terms)) == pytest.approx(value, rel=1e-5)
    assert all(term.theta is None for term in terms)
    assert regularization_factors(terms) == {}
    assert "Added 10 regularization terms." in capsys.readouterr().out


def test_fused_adaptive_loss_and_gradients_match_the_per_tensor_formula():
    """Every θ in a different part of the hard sigmoid (flat 0, slope, flat 1): the fused loss and
    its gradients against amplitude * clip(0.2θ + 0.5, 0, 1) * sum(w^2), term by term in float64."""
    model = nested_model()
    terms = attach_regularizers(model, RegularizationConfig(**FACTORS), verbose=False)
    rng = np.random.RandomState(3)
    for index, term in enumerate(terms):
        term.variable.assign(rng.randn(*term.variable.shape))
        term.theta.assign([-3.0, -1.0, 0.4, 2.0, 3.5][index % 5])
    with tf.GradientTape() as tape:
        (loss,) = model.losses
    variables = [term.variable for term in terms] + [term.theta for term in terms]
    gradients = tape.gradient(loss, variables)
    expected_loss = 0.0
    for index, term in enumerate(terms):
        w = term.variable.numpy().astype("float64")
        theta = float(term.theta.numpy())
        amplitude = FACTORS["kernel" if "kernel" in term.parameter else term.parameter]
        fraction = min(max(0.2 * theta + 0.5, 0.0), 1.0)
        expected_loss += amplitude * fraction * np.sum(w ** 2)
        np.testing.assert_allclose(gradients[index], 2 * amplitude * fraction * w, rtol=1e-5)
        slope = 0.2 if -2.5 < theta < 2.5 else 0.0
        assert float(gradients[len(terms) + index]) == pytest.approx(
            amplitude * slope * np.sum(w ** 2), rel=1e-5, abs=1e-12)
    assert float(loss) == pytest.approx(expected_loss, rel=1e-5)


@pytest.mark.parametrize("adaptive", [True, False])
def test_one_loss_per_tensor_gives_the_fused_value_and_gradients(adaptive):
    losses_and_gradients = []
    for fused in (True, False):
        model = nested_model()
        terms = attach_regularizers(model, RegularizationConfig(
            **FACTORS, adaptive=adaptive, fused=fused), verbose=False)
        rng = np.random.RandomState(5)
        for term in terms:
            term.variable.assign(rng.randn(*term.variable.shape))
            if adaptive:
                term.theta.assign(rng.uniform(-3.0, 3.0))
        assert len(model.losses) == (1 if fused else len(terms))
        with tf.GradientTape() as tape:
            loss = tf.add_n(model.losses)
        losses_and_gradients.append((float(loss), tape.gradient(loss, model.trainable_weights)))
    (fused_loss, fused_gradients), (loss, gradients) = losses_and_gradients
    assert fused_loss == pytest.approx(loss, rel=1e-6)
    for fused_gradient, gradient in zip(fused_gradients, gradients):
        if gradient is None:  # not regularised (the LayerNorm's weights)
            assert fused_gradient is None
        else:
            np.testing.assert_allclose(fused_gradient, gradient, rtol=1e-5, atol=1e-9)


def test_each_term_goes_to_the_first_given_model_that_holds_it():
    model = nested_model()
    inner = model.get_layer("inner")
    weights = {weight.name: np.random.RandomState(len(weight.name)).randn(*weight.shape)
               for weight in model.weights}
    for weight in model.weights:
        weight.assign(weights[weight.name])
    terms = attach_regularizers([inner, model], RegularizationConfig(**FACTORS, adaptive=False),
                                verbose=False)
    _, total = brute_force_expected(model, FACTORS)
    _, inner_only = brute_force_expected(inner, FACTORS)
    assert len(terms) == 10 and len(inner.losses) == 1 and len(model.losses) == 2
    assert float(tf.add_n(inner.losses)) == pytest.approx(inner_only, rel=1e-5)
    assert float(tf.add_n(model.losses)) == pytest.approx(total, rel=1e-5)  # each term once


def test_fixed_zero_factor_skips_adaptive_zero_attaches():
    fixed = attach_regularizers(nested_model(), RegularizationConfig(
        kernel=1e-3, bias=0.0, gamma=0.0, beta=None, adaptive=False), verbose=False)
    assert {term.parameter for term in fixed} == {"kernel", "depthwise_kernel"}
    adaptive = attach_regularizers(nested_model(), RegularizationConfig(
        kernel=1e-3, bias=0.0, gamma=0.0, beta=0.0, adaptive=True), verbose=False)
    assert len(adaptive) == 10


def test_unbuilt_layers_are_refused():
    with pytest.raises(ValueError, match="not built"):
        attach_regularizers(keras.Sequential([keras.layers.Dense(2)]), RegularizationConfig())


def test_attaching_twice_is_refused():
    model = nested_model()
    attach_regularizers(model, RegularizationConfig(adaptive=False), verbose=False)
    with pytest.raises(ValueError, match="already has an L2 term"):
        attach_regularizers(model, RegularizationConfig(adaptive=False), verbose=False)


def single_dense_term(amplitude, theta_value):
    layer = keras.layers.Dense(3, name="dense_for_theta")
    layer.build((None, 2))
    layer.kernel.assign([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])  # sum of squares = 15.25
    (term,) = attach_regularizers(layer, RegularizationConfig(
        kernel=amplitude, bias=None, gamma=None, beta=None, adaptive=True), verbose=False)
    term.theta.assign(theta_value)
    return layer, term


@pytest.mark.parametrize("theta, expected_gradient", [
    (0.0, 0.005 * 0.2 * 15.25), (-1.7, 0.005 * 0.2 * 15.25), (2.0, 0.005 * 0.2 * 15.25),
    (2.6, 0.0), (-2.6, 0.0), (4.0, 0.0)])
def test_theta_gradient_is_amplitude_times_slope_times_sum_of_squares(theta, expected_gradient):
    layer, term = single_dense_term(0.005, theta)
    assert term.theta.name == "dense_for_theta/kernel_l2_regularization_theta:0"
    assert term.theta.ref() in {weight.ref() for weight in layer.trainable_weights}
    with tf.GradientTape() as tape:
        loss = tf.add_n(layer.losses)
    assert float(tape.gradient(loss, term.theta)) == pytest.approx(expected_gradient, rel=1e-5)


@pytest.mark.parametrize("theta, expected_fraction", [
    (-3.0, 0.0), (-2.5, 0.0), (-1.0, 0.3), (0.0, 0.5), (1.0, 0.7), (2.0, 0.9), (2.5, 1.0),
    (3.0, 1.0)])
def test_effective_factor_uses_slope_0_2(theta, expected_fraction):
    layer, term = single_dense_term(0.004, theta)
    assert term.effective_factor() == pytest.approx(0.004 * expected_fraction, abs=1e-9)
    assert float(layer.losses[0]) == pytest.approx(0.004 * expected_fraction * 15.25, abs=1e-7)
    key = "dense_for_theta_kernel_regularizer_l2_regularization_factor"
    assert regularization_factors([term]) == {key: pytest.approx(0.004 * expected_fraction)}


def test_adaptive_factors_only_fall_during_fit_and_frozen_thetas_stay():
    model = nested_model()
    terms = attach_regularizers(model, RegularizationConfig(), verbose=False)
    assert len(terms) == 10
    before = regularization_factors(terms)
    assert list(before.values()) == pytest.approx([0.0025] * 10)
    assert len(set(before)) == 10
    inner = model.get_layer("inner")
    inner_thetas = [term.theta for term in terms if term.layer.name.startswith("inner")]
    assert len(inner_thetas) == 7
    inner.trainable = False
    assert not any(theta.ref() in {v.ref() for v in model.trainable_weights} for theta in inner_thetas)
    # Zero targets and inputs: the data loss is 0 so model.losses (the L2 terms) is all there is.
    x = np.random.RandomState(0).rand(8, 8, 8, 3).astype("float32")
    y = model.predict(x, verbose=0)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    expected_loss = float(tf.add_n(model.losses))
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(expected_loss, rel=1e-4)  # includes frozen terms
    model.fit(x, y, epochs=3, batch_size=4, verbose=0)
    after = regularization_factors(terms)
    for term in terms:
        key = [k for k in before if k.startswith(f"{term.layer.name}_{term.parameter}_")][0]
        if term.layer.name.startswith("inner"):
            assert after[key] == before[key]
        else:
            assert after[key] < before[key]


def test_h5_round_trip_keeps_thetas(tmp_path):
    model = nested_model(seed=1)
    terms = attach_regularizers(model, RegularizationConfig(), verbose=False)
    for index, term in enumerate(terms):
        term.theta.assign(-0.1 * index)
    path = str(tmp_path / "weights.h5")
    model.save_weights(path)
    other = nested_model(seed=2)
    other_terms = attach_regularizers(other, RegularizationConfig(), verbose=False)
    other.load_weights(path)
    assert [float(t.theta) for t in other_terms] == pytest.approx([-0.1 * i for i in range(10)])


class Unit(keras.layers.Layer):
    """tf2cv-style layer: sublayers held as attributes, short names repeated in every unit."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(3, 1, name="conv")
        self.bn = keras.layers.BatchNormalization(name="bn")

    def call(self, inputs):
        return self.bn(self.conv(inputs))


def test_sublayers_of_subclassed_layers_get_unique_keys_and_theta_names(tmp_path):
    image = keras.Input((4, 4, 3))
    model = keras.Model(image, Unit(name="unit2")(Unit(name="unit1")(image)))
    terms = attach_regularizers(model, RegularizationConfig(), verbose=False)
    assert len(terms) == 8  # kernel, bias, gamma, beta per unit
    assert sorted(regularization_factors(terms)) == sorted(
        f"{unit}_{layer}_{parameter}_regularizer_l2_regularization_factor"
        for unit in ("unit1", "unit2") for layer, parameters in
        (("conv", ("kernel", "bias")), ("bn", ("gamma", "beta"))) for parameter in parameters)
    assert len({term.theta.name for term in terms}) == 8
    model.save_weights(str(tmp_path / "units.h5"))  # needs unique weight names
