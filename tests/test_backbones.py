"""Backbone registry, block structure, last stride, preprocessing and last-block copies.

Random weights only (weights=None): nothing is downloaded. Weight files: tests/test_weights.py.
"""
import numpy as np
import pytest

from utils.tf_env import keras, tf

import applications
from applications import get_backbone

H, W = 64, 32
RNG = np.random.default_rng(0)


def _image(batch=2):
    return RNG.uniform(0, 255, size=(batch, H, W, 3)).astype("float32")


@pytest.fixture(scope="module")
def resnet18():
    return get_backbone("resnet18", (H, W, 3), weights=None)


@pytest.fixture(scope="module")
def keras_resnet50():
    return get_backbone("ResNet50", (H, W, 3), weights=None)


@pytest.fixture(scope="module")
def mobilenet_v3_small():
    return get_backbone("MobileNetV3Small", (H, W, 3), weights=None)


# ---------------------------------------------------------------------------------------------
# Registry and argument checks
# ---------------------------------------------------------------------------------------------
def test_names_cover_both_families_and_small_models():
    names = applications.BACKBONE_NAMES
    assert names == sorted(names)
    for name in ["resnet50", "ibn_resnet50", "resnesta50", "resnet101", "resnet152",
                 "ibn_resnet101", "resnesta101", "ResNet50", "ResNet101", "ResNet152",
                 "ResNet50V2", "ResNet101V2", "ResNet152V2", "MobileNetV3Small",
                 "MobileNetV3Large", "MobileNetV2", "EfficientNetV2B0", "EfficientNetV2S",
                 "EfficientNetV2M", "osnet_x1_0", "osnet_x0_75", "osnet_x0_5", "osnet_x0_25",
                 "osnet_ibn_x1_0"]:
        assert name in names


def test_unknown_name_lists_allowed_names():
    with pytest.raises(ValueError) as info:
        get_backbone("resnet51", (H, W, 3), weights=None)
    assert "resnet51" in str(info.value)
    assert "resnesta50" in str(info.value) and "MobileNetV3Small" in str(info.value)


@pytest.mark.parametrize("shape", [(31, 64, 3), (64, 16, 3)])
def test_too_small_input_names_flags_and_minimum(shape):
    with pytest.raises(ValueError) as info:
        get_backbone("resnet18", shape, weights=None)
    message = str(info.value)
    assert "--image_height" in message and "--image_width" in message and "32x32" in message


def test_min_input_size_without_building():
    assert applications.backbone_min_input_size("resnesta50") == (32, 32)
    assert applications.backbone_min_input_size("MobileNetV3Small") == (32, 32)
    with pytest.raises(ValueError, match="allowed"):
        applications.backbone_min_input_size("resnet")


def test_bad_arguments():
    with pytest.raises(ValueError, match="last_stride"):
        get_backbone("resnet18", (H, W, 3), weights=None, last_stride=3)
    with pytest.raises(ValueError, match="image_height, image_width, 3"):
        get_backbone("resnet18", (H, W), weights=None)


# ---------------------------------------------------------------------------------------------
# tf2cv family
# ---------------------------------------------------------------------------------------------
def test_tf2cv_blocks_and_shapes(resnet18):
    assert [b.name for b in resnet18.blocks] == [
        "preprocess_input", "features/init_block", "features/stage1", "features/stage2",
        "features/stage3", "features/stage4"]
    # /4 after the init block, /2 in stages 2 and 3, stage 4 keeps stage 3's resolution.
    expected = [(H, W, 3), (16, 8, 64), (16, 8, 64), (8, 4, 128), (4, 2, 256), (4, 2, 512)]
    assert [tuple(b.output_shape[1:]) for b in resnet18.blocks] == expected
    assert resnet18.feature_channels == 512
    assert resnet18.preprocessing_mode == "torch"
    assert resnet18.min_input_size == (32, 32)
    assert resnet18.frozen_block_names == [b.name for b in resnet18.blocks]


def test_tf2cv_last_stride_2_is_upstream():
    backbone = get_backbone("resnet18", (H, W, 3), weights=None, last_stride=2)
    assert tuple(backbone.blocks[-1].output_shape[1:]) == (2, 1, 512)


def test_tf2cv_blocks_match_tf2cv_model(resnet18):
    """With tf2cv's weights copied in, our blocks reproduce tf2cv's stages (equal strides)."""
    from tf2cv.models.resnet import resnet18 as tf2cv_resnet18
    reference = tf2cv_resnet18(pretrained=False)
    x = _image()
    # torch-mode preprocessing written out.
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    y_reference = ((x / 255.0 - mean) / std).astype("float32")
    np.testing.assert_allclose(resnet18.blocks[0](x).numpy(), y_reference, rtol=1e-5, atol=1e-5)
    y_ours = y_reference
    for index, block in enumerate(resnet18.blocks[1:-1]):
        stage = reference.features.children[index]
        y_reference = stage(y_reference, training=False).numpy()
        block.set_weights(stage.get_weights())
        y_ours = block(y_ours, training=False).numpy()
        np.testing.assert_allclose(y_ours, y_reference, rtol=1e-4, atol=1e-4)


def test_tf2cv_last_block_copy_is_independent(resnet18):
    original = resnet18.last_block
    copy = resnet18.make_last_block_copy("features/stage4_global_branch")
    assert copy.name == "features/stage4_global_branch"
    assert {id(v) for v in copy.weights}.isdisjoint({id(v) for v in original.weights})
    x = RNG.normal(size=(2,) + tuple(original.input_shape[1:])).astype("float32")
    np.testing.assert_array_equal(copy(x, training=False).numpy(),
                                  original(x, training=False).numpy())
    before = copy.get_weights()
    original.weights[0].assign(original.weights[0] + 1.0)
    for a, b in zip(before, copy.get_weights()):
        np.testing.assert_array_equal(a, b)
    original.weights[0].assign(original.weights[0] - 1.0)
    regional = applications.clone_block(original, "_regional_branch")
    assert regional.name == "features/stage4_regional_branch"
    assert {id(v) for v in regional.weights}.isdisjoint({id(v) for v in copy.weights})


def test_blocks_compose_into_a_functional_model_and_freeze(resnet18):
    inputs = keras.Input((H, W, 3))
    x = inputs
    for block in resnet18.blocks[:-1]:
        x = block(x)
    outputs = [resnet18.make_last_block_copy("features/stage4" + s)(x)
               for s in ("_global_branch", "_regional_branch")]
    model = keras.Model(inputs, outputs)
    assert [tuple(o.shape[1:]) for o in model.outputs] == [(4, 2, 512)] * 2
    for layer in model.layers:
        if any(layer.name.startswith(p) for p in resnet18.frozen_block_names):
            layer.trainable = False
    assert not model.trainable_weights
    for layer in model.layers:
        layer.trainable = True
    n_shared = sum(len(b.trainable_weights) for b in resnet18.blocks[:-1])
    n_last = len(resnet18.last_block.trainable_weights)
    assert len(model.trainable_weights) == n_shared + 2 * n_last


@pytest.mark.slow
@pytest.mark.parametrize("name,channels", [("ibn_resnet50", 2048), ("resnesta50", 2048),
                                           ("resnet50", 2048)])
def test_tf2cv_bottleneck_variants(name, channels):
    backbone = get_backbone(name, (H, W, 3), weights=None)
    assert [tuple(b.output_shape[1:3]) for b in backbone.blocks[1:]] == [
        (16, 8), (16, 8), (8, 4), (4, 2), (4, 2)]
    assert backbone.feature_channels == channels
    assert backbone(_image()).shape == (2, 4, 2, channels)


# ---------------------------------------------------------------------------------------------
# Keras family
# ---------------------------------------------------------------------------------------------
def _strides(model):
    return {layer.name: tuple(layer.strides) for layer in model.layers
            if hasattr(layer, "strides") and layer.strides is not None}


def test_keras_resnet50_blocks_and_last_stride(keras_resnet50):
    backbone = keras_resnet50
    assert [b.name for b in backbone.blocks] == [
        "preprocess_input", "stem", "stage1", "stage2", "stage3", "stage4"]
    expected = [(H, W, 3), (32, 16, 64), (16, 8, 256), (8, 4, 512), (4, 2, 1024), (4, 2, 2048)]
    assert [tuple(b.output_shape[1:]) for b in backbone.blocks] == expected
    assert backbone.preprocessing_mode == "caffe"
    strides = _strides(backbone.last_block)
    assert strides["conv5_block1_0_conv"] == (1, 1) and strides["conv5_block1_1_conv"] == (1, 1)
    # Everything else keeps Keras' strides.
    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(H, W, 3))
    ours = {}
    for block in backbone.blocks[1:]:
        ours.update(_strides(block))
    changed = {n for n, s in _strides(reference).items() if ours[n] != s}
    assert changed == {"conv5_block1_0_conv", "conv5_block1_1_conv"}
    # Blocks partition the weights of the Keras model, without duplicates.
    block_weights = [v for b in backbone.blocks for v in b.weights]
    assert len({id(v) for v in block_weights}) == len(block_weights) == len(reference.weights)


def test_keras_preprocessing_caffe(keras_resnet50):
    x = _image()
    expected = x[..., ::-1] - np.array([103.939, 116.779, 123.68])
    np.testing.assert_allclose(keras_resnet50.blocks[0](x).numpy(), expected, rtol=1e-5, atol=1e-4)


def test_keras_resnet50_matches_keras_model_with_last_stride_2():
    backbone = get_backbone("ResNet50", (H, W, 3), weights=None, last_stride=2)
    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(H, W, 3))
    by_name = {layer.name: layer for block in backbone.blocks for layer in block.layers}
    for layer in reference.layers:
        if layer.weights:
            by_name[layer.name].set_weights(layer.get_weights())
    x = _image()
    caffe = (x[..., ::-1] - np.array([103.939, 116.779, 123.68])).astype("float32")
    np.testing.assert_allclose(backbone(x, training=False).numpy(),
                               reference(caffe, training=False).numpy(), rtol=1e-3, atol=1e-3)


def test_keras_last_block_copy(keras_resnet50):
    original = keras_resnet50.last_block
    copy = keras_resnet50.make_last_block_copy("stage4_global_branch")
    assert copy.name == "stage4_global_branch"
    assert {id(v) for v in copy.weights}.isdisjoint({id(v) for v in original.weights})
    x = RNG.normal(size=(2, 4, 2, 1024)).astype("float32")
    np.testing.assert_array_equal(copy(x, training=False).numpy(),
                                  original(x, training=False).numpy())
    other = applications.clone_block(original, "_regional_branch")
    assert other.name == "stage4_regional_branch"
    assert {id(v) for v in other.weights}.isdisjoint({id(v) for v in copy.weights})


def test_mobilenet_v3_small(mobilenet_v3_small):
    backbone = mobilenet_v3_small
    assert backbone.blocks[0].name == "preprocess_input"
    assert backbone.preprocessing_mode == "tf"
    # Keras' built-in Rescaling(1/127.5, offset=-1) is the preprocessing.
    x = _image()
    np.testing.assert_allclose(backbone.blocks[0](x).numpy(), x / 127.5 - 1.0, rtol=1e-5,
                               atol=1e-5)
    assert tuple(backbone.last_block.output_shape[1:]) == (4, 2, 576)
    assert backbone.feature_channels == 576
    # The last strided depthwise conv (expanded_conv_8, 5x5 kernel) now has stride 1 and a
    # symmetric padding of 2, so the last block keeps its 4x2 input resolution.
    last = backbone.last_block
    assert last.get_layer("expanded_conv_8/depthwise").strides == (1, 1)
    assert tuple(map(tuple, last.get_layer("expanded_conv_8/depthwise/pad").padding)) == (
        (2, 2), (2, 2))
    assert tuple(last.input_shape[1:3]) == (4, 2)


def test_mobilenet_v3_small_last_stride_2_matches_keras():
    backbone = get_backbone("MobileNetV3Small", (H, W, 3), weights=None, last_stride=2)
    reference = keras.applications.MobileNetV3Small(include_top=False, weights=None,
                                                    input_shape=(H, W, 3))
    by_name = {layer.name: layer for block in backbone.blocks for layer in block.layers}
    for layer in reference.layers:
        if layer.weights:
            by_name[layer.name].set_weights(layer.get_weights())
    x = _image()
    np.testing.assert_allclose(backbone(x, training=False).numpy(),
                               reference(x, training=False).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name,mode,channels", [
    ("MobileNetV3Large", "tf", 960), ("MobileNetV2", "tf", 1280),
    ("EfficientNetV2B0", "torch", 1280), ("ResNet50V2", "tf", 2048)])
def test_other_keras_models(name, mode, channels):
    backbone = get_backbone(name, (H, W, 3), weights=None)
    assert backbone.preprocessing_mode == mode
    assert tuple(backbone.last_block.output_shape[1:]) == (4, 2, channels)
    upstream = get_backbone(name, (H, W, 3), weights=None, last_stride=2)
    assert tuple(upstream.last_block.output_shape[1:]) == (2, 1, channels)
    x = _image()
    if mode == "tf":
        expected = x / 127.5 - 1.0
    else:
        expected = (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(backbone.blocks[0](x).numpy(), expected, rtol=1e-4, atol=1e-4)
    assert backbone(x).shape == (2, 4, 2, channels)


def test_preprocessing_layer_serializes():
    layer = applications.ImagePreprocessing("torch")
    clone = applications.ImagePreprocessing.from_config(layer.get_config())
    assert clone.mode == "torch"
    with pytest.raises(ValueError, match="mode"):
        applications.ImagePreprocessing("bgr")
    x = tf.constant(_image())
    np.testing.assert_allclose(clone(x).numpy(), layer(x).numpy())


@pytest.mark.parametrize("name", ["resnet18", "MobileNetV3Small"])
def test_last_block_copies_have_distinct_variable_names(name):
    """HDF5 weight files key variables by name: the global and regional copies must differ."""
    from applications import get_backbone
    backbone = get_backbone(name, input_shape=(64, 32, 3), weights=None)
    first = backbone.make_last_block_copy(backbone.last_block.name + "_global_branch")
    second = backbone.make_last_block_copy(backbone.last_block.name + "_regional_branch")
    names = [weight.name for weight in first.weights]
    assert len(set(names)) == len(names)
    assert not set(names) & {weight.name for weight in second.weights}
    assert not set(names) & {weight.name for weight in backbone.last_block.weights}


# ---------------------------------------------------------------------------------------------
# EfficientNetV2-S / -M (Keras family), each built once at 64x32 from a weights file written here
# ---------------------------------------------------------------------------------------------
EFFICIENTNET_V2 = {  # name -> Keras notop weights file name
    "EfficientNetV2S": "efficientnetv2-s_notop.h5",
    "EfficientNetV2M": "efficientnetv2-m_notop.h5",
}


# M is the same code at about three times the build time: checked in the slow run only.
@pytest.fixture(scope="module", params=[
    "EfficientNetV2S", pytest.param("EfficientNetV2M", marks=pytest.mark.slow)])
def efficientnet_v2(request, tmp_path_factory):
    """(name, Keras reference model, its weights file, our backbone loaded from that file).

    The reference is ``keras.applications.<name>(include_top=False, weights=None)`` with random
    batch-norm weights and statistics (so no loaded value equals a fresh initial value), saved
    under Keras' notop file name; the backbone (last stride 1) loads it via a local path.
    """
    name = request.param
    reference = getattr(keras.applications, name)(include_top=False, weights=None,
                                                  input_shape=(H, W, 3))
    rng = np.random.default_rng(1)
    for variable in reference.weights:
        if any(key in variable.name for key in ("gamma", "beta", "moving_mean")):
            variable.assign(rng.normal(0, 0.1, size=variable.shape) + (
                1.0 if "gamma" in variable.name else 0.0))
        elif "moving_variance" in variable.name:
            variable.assign(rng.uniform(0.5, 1.5, size=variable.shape))
    path = str(tmp_path_factory.mktemp("keras_efficientnet_v2") / EFFICIENTNET_V2[name])
    reference.save_weights(path)
    backbone = get_backbone(name, (H, W, 3), weights=path)
    return name, reference, path, backbone


def test_efficientnet_v2_s_m_blocks_last_stride_1_and_parameters(efficientnet_v2):
    name, reference, path, backbone = efficientnet_v2
    assert backbone.weights_path == path
    assert [b.name for b in backbone.blocks] == [
        "preprocess_input", "stem", "stage1", "stage2", "stage3", "stage4"]
    # Cuts before the strided units block2a, block3a, block4a and block6a; last stride 1 keeps
    # stage3's 1/16 resolution (64x32 -> 4x2).
    channels = {"EfficientNetV2S": [24, 48, 64, 160, 1280],
                "EfficientNetV2M": [24, 48, 80, 176, 1280]}[name]
    sizes = [(32, 16), (16, 8), (8, 4), (4, 2), (4, 2)]
    assert [tuple(b.output_shape[1:]) for b in backbone.blocks] == [(H, W, 3)] + [
        size + (c,) for size, c in zip(sizes, channels)]
    assert backbone.output_shape == (H // 16, W // 16, 1280) and backbone.feature_channels == 1280
    assert backbone.last_block.get_layer("block6a_dwconv2").strides == (1, 1)
    ours = {}
    for block in backbone.blocks[1:]:
        ours.update(_strides(block))
    changed = {n for n, s in _strides(reference).items() if ours[n] != s}
    assert changed == {"block6a_dwconv2"}
    # The stride change keeps every weight: same parameter count as Keras' notop model, and the
    # blocks partition its weights without duplicates.
    assert sum(b.count_params() for b in backbone.blocks) == reference.count_params() == {
        "EfficientNetV2S": 20331360, "EfficientNetV2M": 53150388}[name]
    block_weights = [v for b in backbone.blocks for v in b.weights]
    assert len({id(v) for v in block_weights}) == len(block_weights) == len(reference.weights)
    # Keras' built-in preprocessing (include_preprocessing=True): Rescaling(1/128, offset=-1).
    assert backbone.preprocessing_mode == "tf"
    x = _image()
    np.testing.assert_allclose(backbone.blocks[0](x).numpy(), x / 128.0 - 1.0, rtol=1e-5,
                               atol=1e-5)
    assert backbone(x, training=False).shape == (2, H // 16, W // 16, 1280)


def test_efficientnet_v2_s_m_weights_file_round_trip(efficientnet_v2):
    _, reference, _, backbone = efficientnet_v2
    ours = {layer.name: layer for block in backbone.blocks for layer in block.layers}
    count = 0
    for layer in reference.layers:
        if layer.weights:
            for a, b in zip(ours[layer.name].get_weights(), layer.get_weights()):
                np.testing.assert_array_equal(a, b)
            count += 1
    assert count > 100
    # Up to the last block the strides are Keras', so our stage3 equals Keras' block6a input.
    x = _image()
    truncated = keras.Model(reference.input, reference.get_layer("block6a_expand_conv").input)
    y = x
    for block in backbone.blocks[:-1]:
        y = block(y, training=False)
    np.testing.assert_allclose(y.numpy(), truncated(x, training=False).numpy(), rtol=1e-3,
                               atol=1e-3)


def test_efficientnet_v2_s_m_last_block_copies(efficientnet_v2):
    _, _, _, backbone = efficientnet_v2
    original = backbone.last_block
    first = backbone.make_last_block_copy("stage4_global_branch")
    second = applications.clone_block(original, "_regional_branch")
    assert (first.name, second.name) == ("stage4_global_branch", "stage4_regional_branch")
    ids = [{id(v) for v in m.weights} for m in (original, first, second)]
    assert ids[0].isdisjoint(ids[1]) and ids[0].isdisjoint(ids[2]) and ids[1].isdisjoint(ids[2])
    names = [{v.name for v in m.weights} for m in (original, first, second)]
    assert names[0].isdisjoint(names[1] | names[2]) and names[1].isdisjoint(names[2])
    assert len(names[1]) == len(first.weights) == len(original.weights)
    for copy in (first, second):  # equal initial values
        for a, b in zip(copy.get_weights(), original.get_weights()):
            np.testing.assert_array_equal(a, b)
    x = RNG.normal(size=(2,) + tuple(original.input_shape[1:])).astype("float32")
    expected = original(x, training=False).numpy()
    np.testing.assert_array_equal(first(x, training=False).numpy(), expected)
    # Training one copy does not touch the other (or the original).
    first.weights[0].assign(first.weights[0] + 1.0)
    np.testing.assert_array_equal(second.weights[0].numpy(), original.weights[0].numpy())
    np.testing.assert_array_equal(second(x, training=False).numpy(), expected)


def test_efficientnet_v2_s_m_last_stride_2_matches_keras(efficientnet_v2):
    name, reference, path, _ = efficientnet_v2
    upstream = get_backbone(name, (H, W, 3), weights=path, last_stride=2)
    assert tuple(upstream.last_block.output_shape[1:]) == (H // 32, W // 32, 1280)
    x = _image()
    np.testing.assert_allclose(upstream(x, training=False).numpy(),
                               reference(x, training=False).numpy(), rtol=1e-3, atol=1e-3)
