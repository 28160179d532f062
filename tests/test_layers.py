"""Custom head layers against NumPy references; serialisation round trips."""
import numpy as np
import pytest

from utils.tf_env import tf, keras
from applications.layers import (Clip, CosineClassifier, FlippingLoss,
                                 GlobalGeMPooling2D, HorizontalFlip, HorizontalStripe)


def numpy_gem(x, p):
    return np.mean(np.maximum(x, 1e-6) ** p, axis=(1, 2)) ** (1.0 / p)


def test_gem_matches_formula_and_power_is_trainable_scalar():
    x = np.random.RandomState(0).uniform(-1, 2, size=(2, 3, 4, 5)).astype("float32")
    layer = GlobalGeMPooling2D()
    np.testing.assert_allclose(layer(x).numpy(), numpy_gem(x, 1.0), rtol=1e-5)
    assert layer.power.shape == () and float(layer.power) == 1.0
    assert [w.name for w in layer.trainable_weights] == [layer.power.name]
    assert layer.losses == []
    layer.power.assign(3.0)
    np.testing.assert_allclose(layer(x).numpy(), numpy_gem(x, 3.0), rtol=1e-5)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(layer(x))
    assert np.isfinite(float(tape.gradient(value, layer.power)))


def test_gem_options_and_rank_check():
    layer = GlobalGeMPooling2D(initial_power=3.0, trainable_power=False)
    layer.build((None, 2, 2, 1))
    assert float(layer.power) == 3.0 and layer.trainable_weights == []
    with pytest.raises(ValueError):
        GlobalGeMPooling2D()(np.zeros((2, 3), "float32"))


def test_clip():
    x = np.array([[-1.0, 0.2, 1.5]], "float32")
    np.testing.assert_allclose(Clip(0.0, 1.0)(x).numpy(), [[0.0, 0.2, 1.0]])
    np.testing.assert_allclose(Clip(None, 1.0)(x).numpy(), [[-1.0, 0.2, 1.0]])
    with pytest.raises(ValueError):
        Clip(1.0, 0.0)


@pytest.mark.parametrize("height, region_num, expected", [
    (24, 2, [(0, 12), (12, 24)]), (7, 3, [(0, 2), (2, 4), (4, 7)]), (5, 1, [(0, 5)])])
def test_horizontal_stripes(height, region_num, expected):
    x = np.random.RandomState(1).rand(2, height, 3, 4).astype("float32")
    for index, (start, stop) in enumerate(expected):
        layer = HorizontalStripe(index, region_num)
        np.testing.assert_array_equal(layer(x).numpy(), x[:, start:stop])
        assert layer.compute_output_shape((None, height, 3, 4)).as_list() == [None, stop - start, 3, 4]


def test_horizontal_stripe_bad_arguments():
    with pytest.raises(ValueError, match="index"):
        HorizontalStripe(2, 2)
    with pytest.raises(ValueError, match="region_num"):
        HorizontalStripe(0, 4)(np.zeros((1, 3, 2, 1), "float32"))


def test_horizontal_flip_mirrors_width():
    x = np.arange(2 * 3 * 4 * 2, dtype="float32").reshape(2, 3, 4, 2)
    np.testing.assert_array_equal(HorizontalFlip()(x).numpy(), x[:, :, ::-1, :])


def test_flipping_loss_value_metric_and_merge():
    rng = np.random.RandomState(2)
    shapes = [(4, 6), (4, 3)]
    vanilla = [rng.rand(*s).astype("float32") for s in shapes]
    flipped = [rng.rand(*s).astype("float32") for s in shapes]
    expected = sum(np.mean(np.mean((v - f) ** 2, axis=1)) for v, f in zip(vanilla, flipped))

    inputs = [keras.Input((s[1],)) for s in shapes] + [keras.Input((s[1],)) for s in shapes]
    merged = FlippingLoss(weight=2.5)([inputs[:2], inputs[2:]])
    model = keras.Model(inputs, merged)
    outputs = model(vanilla + flipped)
    for out, v, f in zip(outputs, vanilla, flipped):
        np.testing.assert_allclose(out.numpy(), (v + f) / 2, rtol=1e-6)
    assert len(model.losses) == 1
    assert float(model.losses[0]) == pytest.approx(2.5 * expected, rel=1e-5)
    model.compile(loss=[None, None])
    logs = model.evaluate(vanilla + flipped, verbose=0, return_dict=True, batch_size=4)
    assert logs["flipping"] == pytest.approx(expected, rel=1e-5)
    assert logs["loss"] == pytest.approx(2.5 * expected, rel=1e-5)


def test_layers_serialise_without_lambdas():
    image = keras.Input((6, 4, 3))
    flipped = HorizontalFlip()(image)
    maps = [HorizontalStripe(i, 2)(flipped) for i in range(2)]
    pooled = [Clip(0.0, 0.5)(GlobalGeMPooling2D(initial_power=2.0)(m)) for m in maps]
    merged = FlippingLoss(weight=0.5)([pooled[:1], pooled[1:]])
    model = keras.Model(image, merged)
    x = np.random.RandomState(3).uniform(0, 1, (2, 6, 4, 3)).astype("float32")
    clone = keras.models.model_from_json(model.to_json())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(x).numpy(), model(x).numpy(), rtol=1e-6)
    assert "Lambda" not in model.to_json()
    assert isinstance(keras.models.clone_model(model).layers[-1], FlippingLoss)


def test_cosine_classifier_gives_cosines_and_serialises():
    layer = CosineClassifier(3, name="classifier")
    features = np.random.RandomState(5).normal(size=(4, 6)).astype("float32")
    got = layer(features).numpy()
    kernel = layer.kernel.numpy()
    for i in range(4):
        for j in range(3):
            expected = float(features[i] @ kernel[:, j]) / (
                np.linalg.norm(features[i]) * np.linalg.norm(kernel[:, j]))
            assert got[i, j] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert layer.kernel.name.endswith("kernel:0")  # decayed / regularised like a Dense kernel
    image = keras.Input((6,))
    model = keras.Model(image, CosineClassifier(3)(image))
    clone = keras.models.model_from_json(model.to_json())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(features).numpy(), model(features).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="units"):
        CosineClassifier(0)
