"""OSNet backbones (applications/osnet.py): shapes and last stride, parameter counts equal to
torchreid's, the shared gate, instance-norm placement, weights files and a re-ID training step.

Random weights or files written here: nothing is downloaded and torch is not needed.
"""
import numpy as np
import pytest

from conftest import make_config
from utils.tf_env import keras

import applications
from applications import get_backbone, osnet

RNG = np.random.default_rng(0)
NAMES = ["osnet_x1_0", "osnet_x0_75", "osnet_x0_5", "osnet_x0_25", "osnet_ibn_x1_0"]

# torchreid's backbone parameters: sum(p.numel() for k, p in net.named_parameters() if not
# k.startswith(("fc.", "classifier."))) for torchreid 0.2.5's models/osnet.py (torch 2.14, CPU),
# num_classes=1000, pretrained=False; parameters() excludes the BN running statistics.
TORCHREID_BACKBONE_PARAMETERS = {
    "osnet_x1_0": 1905828,
    "osnet_x0_75": 1087610,
    "osnet_x0_5": 497426,
    "osnet_x0_25": 134792,
    "osnet_ibn_x1_0": 1906852,  # x1_0 + 1024 (IN gamma/beta after the two conv2 OSBlocks)
}
# torchreid's model zoo sizes (millions) are the backbone plus ``fc``: Linear(C, 512) + BN1d(512).
PUBLISHED_MILLIONS = {"osnet_x1_0": 2.2, "osnet_x0_75": 1.3, "osnet_x0_5": 0.6, "osnet_x0_25": 0.2}


def _images(shape, batch=2):
    return RNG.uniform(0, 255, size=(batch,) + tuple(shape)).astype("float32")


def _normalised(images):
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return ((images / 255.0 - mean) / std).astype("float32")


def _randomise(model, seed=1):
    """Random values for every weight (BN statistics too), so no loaded value is an initial one."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if "moving_variance" in variable.name or "gamma" in variable.name:
            variable.assign(rng.uniform(0.5, 1.5, size=variable.shape))
        else:
            variable.assign(rng.normal(0, 0.1, size=variable.shape))


@pytest.fixture(scope="module")
def backbones():
    """name -> backbone at 64x32, last stride 1, random weights."""
    return {name: get_backbone(name, (64, 32, 3), weights=None) for name in NAMES}


@pytest.fixture(scope="module")
def x0_25_file(tmp_path_factory):
    """(reference flat model with random weights, its .h5 file): last stride 2 at 64x32."""
    model = osnet.build_model("osnet_x0_25", (64, 32, 3), last_stride=2)
    _randomise(model)
    path = str(tmp_path_factory.mktemp("osnet") / "osnet_x0_25.h5")
    model.save_weights(path)
    return model, path


# ---------------------------------------------------------------------------------------------
# Names, shapes, last stride
# ---------------------------------------------------------------------------------------------
def test_names_are_torchreids_and_registered():
    assert osnet.NAMES == sorted(NAMES)
    assert set(NAMES) <= set(applications.BACKBONE_NAMES)
    assert applications.backbone_min_input_size("osnet_x0_25") == (32, 32)


def test_blocks_and_preprocessing(backbones):
    backbone = backbones["osnet_x0_25"]
    assert [b.name for b in backbone.blocks] == [
        "preprocess_input", "conv1", "conv2", "conv3", "conv4_5"]
    assert backbone.preprocessing_mode == "torch" and backbone.weights_path is None
    x = _images((64, 32, 3))
    np.testing.assert_allclose(backbone.blocks[0](x).numpy(), _normalised(x), rtol=1e-5,
                               atol=1e-5)


def _shape_cases():
    """Every name, last stride and size; the widths that share x0_25's code (x1_0, x0_75, x0_5)
    only at 64x32 with last stride 1 unless the slow checks run (each build takes a second)."""
    for name in NAMES:
        for last_stride in (1, 2):
            for size in ((64, 32), (128, 64)):
                slow = name not in ("osnet_x0_25", "osnet_ibn_x1_0") and (
                    size, last_stride) != ((64, 32), 1)
                yield pytest.param(name, last_stride, *size,
                                   marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("name, last_stride, height, width", _shape_cases())
def test_output_shapes(name, last_stride, height, width, backbones):
    if (height, width, last_stride) == (64, 32, 1):
        backbone = backbones[name]
    else:
        backbone = get_backbone(name, (height, width, 3), weights=None, last_stride=last_stride)
    channels = osnet._CHANNELS[name]
    # conv1 + maxpool /4, conv2's transition /2, conv3's transition /2 only with last stride 2.
    stride = 8 * last_stride
    assert [tuple(b.output_shape[1:]) for b in backbone.blocks[1:]] == [
        (height // 4, width // 4, channels[0]), (height // 8, width // 8, channels[1]),
        (height // stride, width // stride, channels[2]),
        (height // stride, width // stride, channels[3])]
    assert backbone.output_shape == (height // stride, width // stride, channels[3])
    assert backbone.last_stride == last_stride
    assert backbone.feature_channels == channels[3]


def test_last_stride_1_only_drops_conv3s_average_pooling(backbones, x0_25_file):
    def names(models):
        return {layer.name for m in models for layer in m.layers
                if not isinstance(layer, keras.layers.InputLayer)}

    ours, reference = names(backbones["osnet_x0_25"].blocks), names([x0_25_file[0]])
    assert reference - ours == {"conv3_2_1"}
    assert ours - reference == {"preprocess"}


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_equal_torchreids(name, backbones):
    blocks = backbones[name].blocks
    trainable = sum(int(np.prod(w.shape)) for b in blocks for w in b.trainable_weights)
    assert trainable == TORCHREID_BACKBONE_PARAMETERS[name]
    # The rest are exactly the BN moving statistics (torch's buffers, not parameters).
    rest = [w for b in blocks for w in b.non_trainable_weights]
    assert rest and all("moving_mean" in w.name or "moving_variance" in w.name for w in rest)
    if name in PUBLISHED_MILLIONS:
        fc = backbones[name].feature_channels * 512 + 512 + 2 * 512
        assert round((trainable + fc) / 1e6, 1) == PUBLISHED_MILLIONS[name]


# ---------------------------------------------------------------------------------------------
# The unified aggregation gate and instance normalisation
# ---------------------------------------------------------------------------------------------
def test_one_gate_per_block_shared_by_the_four_streams(backbones):
    backbone = backbones["osnet_x0_25"]
    gate_weights = [w.name for b in backbone.blocks for w in b.weights if "_gate_" in w.name]
    # 6 OSBlocks x (fc1, fc2) x (kernel, bias)
    assert len(gate_weights) == 6 * 4 == len(set(gate_weights))
    copy = backbone.make_last_block_copy("conv4_5_global_branch")
    prefix = "conv4_5_global_branch_conv4_1"
    for suffix in ("gate_global_avgpool", "gate_fc1", "gate_fc2"):
        assert len(copy.get_layer("{}_{}".format(prefix, suffix)).inbound_nodes) == 4
    # Closing the copy's one gate of conv4_1 (sigmoid(-100) ~ 0) silences all four streams: the
    # block passes its input through (conv3's BN of zeros is 0 at init, the input is >= 0).
    copy.get_layer(prefix + "_gate_fc2").bias.assign(np.full(32, -100.0, "float32"))
    probe = keras.Model(copy.input, [copy.get_layer("conv4_5_global_branch_conv4_0_relu").output,
                                     copy.get_layer(prefix + "_relu").output])
    x = RNG.uniform(0, 1, size=(2,) + tuple(copy.input_shape[1:])).astype("float32")
    block_input, block_output = probe(x, training=False)
    np.testing.assert_allclose(block_output.numpy(), block_input.numpy(), atol=1e-6)
    # The original's gate is untouched.
    original = backbone.last_block.get_layer("conv4_1_gate_fc2").bias.numpy()
    np.testing.assert_array_equal(original, np.zeros(32))


def test_instance_norm_only_where_torchreid_puts_it(backbones):
    def instance_norms(backbone):
        return {layer.name: layer.groups for b in backbone.blocks for layer in b.layers
                if isinstance(layer, keras.layers.GroupNormalization)}

    # IN=True: conv1's norm and the post-residual norm of both conv2 OSBlocks; groups = channels.
    ibn = backbones["osnet_ibn_x1_0"]
    assert instance_norms(ibn) == {"conv1_bn": 64, "conv2_0_IN": 256, "conv2_1_IN": 256}
    assert not any(isinstance(layer, keras.layers.BatchNormalization) and layer.name == "conv1_bn"
                   for layer in ibn.blocks[1].layers)
    for name in NAMES[:4]:
        assert instance_norms(backbones[name]) == {}
    # Per image and channel: zero mean, unit variance (beta 0, gamma 1), also in inference.
    layer = ibn.blocks[1].get_layer("conv1_bn")
    x = RNG.normal(3.0, 2.0, size=(2, 8, 4, 64)).astype("float32")
    y = layer(x, training=False).numpy()
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.var(axis=(1, 2)), 1.0, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Last-block copies (the re-ID head's global and regional branches)
# ---------------------------------------------------------------------------------------------
def test_last_block_copies_are_independent_with_distinct_variable_names(backbones):
    backbone = backbones["osnet_x0_25"]
    original = backbone.last_block
    first = backbone.make_last_block_copy("conv4_5_global_branch")
    second = applications.clone_block(original, "_regional_branch")
    assert second.name == "conv4_5_regional_branch"
    names = [{w.name for w in m.weights} for m in (original, first, second)]
    assert len(names[1]) == len(first.weights) == len(original.weights)
    assert names[0].isdisjoint(names[1] | names[2]) and names[1].isdisjoint(names[2])
    x = RNG.uniform(0, 1, size=(2,) + tuple(original.input_shape[1:])).astype("float32")
    np.testing.assert_array_equal(first(x, training=False).numpy(),
                                  original(x, training=False).numpy())
    first.weights[0].assign(first.weights[0] + 1.0)
    np.testing.assert_array_equal(second.weights[0].numpy(), original.weights[0].numpy())


# ---------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------
def test_imagenet_weights_are_refused_with_the_way_out():
    with pytest.raises(ValueError) as info:
        get_backbone("osnet_x0_25", (64, 32, 3))  # weights="imagenet" by default
    message = str(info.value)
    assert "osnet_x0_25" in message and "--backbone_weights none" in message
    assert ".h5" in message and "scratch" in message
    with pytest.raises(FileNotFoundError, match="osnet_x0_25"):
        get_backbone("osnet_x0_25", (64, 32, 3), weights="/nonexistent/osnet.h5")


@pytest.mark.parametrize("last_stride", [2, 1])
def test_local_h5_round_trip(last_stride, x0_25_file):
    model, path = x0_25_file
    backbone = get_backbone("osnet_x0_25", (64, 32, 3), weights=path, last_stride=last_stride)
    assert backbone.weights_path == path
    ours = {w.name: w.numpy() for b in backbone.blocks for w in b.weights}
    assert len(ours) == len(model.weights)
    for variable in model.weights:
        np.testing.assert_array_equal(ours[variable.name], variable.numpy())
    x = _images((64, 32, 3))
    expected = model(_normalised(x), training=False).numpy()
    if last_stride == 2:
        np.testing.assert_allclose(backbone(x, training=False).numpy(), expected, rtol=1e-4,
                                   atol=1e-4)
    else:  # conv3 ends before the dropped pooling: its average pooling gives the reference's
        y = x
        for block in backbone.blocks[:-1]:
            y = block(y, training=False)
        reference_conv3 = keras.Model(model.input, model.get_layer("conv3_2_1").output)
        pooled = keras.layers.AveragePooling2D(2)(y).numpy()
        np.testing.assert_allclose(pooled, reference_conv3(_normalised(x), training=False),
                                   rtol=1e-4, atol=1e-4)


def test_weights_file_of_another_width_is_rejected(x0_25_file):
    with pytest.raises(ValueError, match="osnet_x0_5"):
        get_backbone("osnet_x0_5", (64, 32, 3), weights=x0_25_file[1])


def _torchreid_layout(model):
    """A torchreid-style state dict of ``model``'s weights (inverse of the loader's mapping)."""
    state = {}
    for layer in model.layers:
        key = layer.name.replace("_", ".")
        values = layer.get_weights()
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            state[key + ".weight"] = values[0].transpose(2, 3, 0, 1)
        elif isinstance(layer, keras.layers.Conv2D):
            state[key + ".weight"] = values[0].transpose(3, 2, 0, 1)
            if layer.use_bias:
                state[key + ".bias"] = values[1]
        elif isinstance(layer, keras.layers.BatchNormalization):
            for suffix, value in zip(("weight", "bias", "running_mean", "running_var"), values):
                state[key + "." + suffix] = value
            state[key + ".num_batches_tracked"] = np.array(0)
    return state


def test_torchreid_state_dict_loads_into_the_backbone(backbones, x0_25_file):
    model, _ = x0_25_file
    state = _torchreid_layout(model)
    assert "conv2.0.gate.fc1.weight" in state and "conv2.2.0.conv.weight" in state
    state["fc.0.weight"] = np.zeros((512, 128), "float32")  # head tensors are ignored
    backbone = get_backbone("osnet_x0_25", (64, 32, 3), weights=None, last_stride=2)
    osnet.load_torchreid_state_dict(backbone, {"module." + k: v for k, v in state.items()})
    x = _images((64, 32, 3))
    np.testing.assert_allclose(backbone(x, training=False).numpy(),
                               model(_normalised(x), training=False).numpy(), rtol=1e-4,
                               atol=1e-4)
    state.pop("conv5.bn.running_var")
    with pytest.raises(ValueError, match="1 tensors missing"):
        osnet.load_torchreid_state_dict(backbone, state)
    with pytest.raises(ValueError, match="does not match"):  # x0_25 tensors for the IBN net
        osnet.load_torchreid_state_dict(backbones["osnet_ibn_x1_0"], _torchreid_layout(model))


# ---------------------------------------------------------------------------------------------
# The re-ID model on OSNet x0.25
# ---------------------------------------------------------------------------------------------
def test_reid_model_trains_with_flip_two_stripes_and_adaptive_l2():
    from training.trainer import Trainer
    config = make_config(backbone_model_name="osnet_x0_25", backbone_weights="none",
                         image_height=64, image_width=32, region_num=2,
                         use_horizontal_flipping_inside_model=True,
                         use_adaptive_l1_l2_regularizer=True)
    trainer = Trainer(config)
    trainer.build_models(num_classes=4)
    models = trainer.models
    assert [b.name for b in models.backbone_blocks] == [
        "preprocess_input", "conv1", "conv2", "conv3", "conv4_5_global_branch",
        "conv4_5_regional_branch"]
    assert models.embedding_sizes == [128, 64, 64]  # 8x4 map (output stride 8), two stripes
    # One adaptive term per conv kernel, gate bias and BN gamma/beta; a shared gate counts once.
    regularised = {term.variable.ref() for term in models.regularization_terms}
    assert len(regularised) == len(models.regularization_terms)
    assert any("conv4_5_regional_branch_conv4_1_gate_fc1" in term.variable.name
               for term in models.regularization_terms)
    trainer.build_optimizer()
    model = trainer.compile(run_eagerly=True)  # tracing the flipped 3-branch graph takes ~1 min
    images = _images((64, 32, 3), batch=8)
    labels = np.repeat(np.arange(4), 2).astype("int32")
    before = models.global_block.get_layer(
        "conv4_5_global_branch_conv4_1_gate_fc1").kernel.numpy().copy()
    history = model.fit(images, labels, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and history["flipping"][0] > 0
    after = models.global_block.get_layer("conv4_5_global_branch_conv4_1_gate_fc1").kernel.numpy()
    assert not np.array_equal(before, after)
