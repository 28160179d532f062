"""OSNet backbones (Zhou et al., "Omni-Scale Feature Learning for Person Re-Identification",
ICCV 2019), layer for layer as torchreid's ``torchreid/models/osnet.py``.

Names: ``osnet_x1_0``, ``osnet_x0_75``, ``osnet_x0_5``, ``osnet_x0_25`` (width multipliers of
channels [64, 256, 384, 512]) and ``osnet_ibn_x1_0`` (x1.0 with instance normalisation).

Included (torchreid's ``featuremaps``): conv1 (7x7/2 conv + BN + ReLU), maxpool 3x3/2, conv2 and
conv3 (two OSBlocks each, then the transition 1x1 conv + BN + ReLU + 2x2 average pooling), conv4
(two OSBlocks), conv5 (1x1 conv + BN + ReLU). An OSBlock is a 1x1 reduction to out/4 channels,
T=4 streams of 1..4 lite 3x3 convs (1x1 conv, depthwise 3x3, BN, ReLU), ONE channel gate
(global average pool, 1x1 conv to C/16 + ReLU, 1x1 conv + sigmoid) shared by the four streams,
their sum, a linear 1x1 expansion, the residual (a linear 1x1 conv + BN when channels differ)
and a ReLU. ``osnet_ibn_x1_0`` replaces conv1's BN by an instance norm and adds one after the
residual sum of both conv2 OSBlocks, as torchreid (``GroupNormalization(groups=channels)`` =
``InstanceNorm2d(affine=True)``, statistics of each image in training and inference alike).
Not included: torchreid's global average pooling, ``fc`` (the 512-d Linear + BN1d + ReLU
embedding) and ``classifier``; the re-ID head pools and classifies. torchreid's published sizes
(2.2M, 1.3M, 0.6M, 0.2M) are this backbone plus ``fc``.

Last stride: torchreid's OSNet has output stride 16 (its last downsampling is conv3's
transition pooling; conv4 and conv5 keep that resolution). ``last_stride=2`` is that network
exactly; ``last_stride=1`` (the toolkit's default: remove the last downsampling) drops the
average pooling of conv3's transition, giving output stride 8 (a 256x128 image -> 32x16 map).
No weights change, so one weights file serves both.

Blocks: ``preprocess_input`` ("torch": ImageNet mean/std, as torchreid), ``conv1`` (with the
maxpool), ``conv2``, ``conv3``, ``conv4_5`` (conv4 + conv5, copied for the re-ID branches).
Layers are named after torchreid's module paths with "." -> "_" (``conv2.0.gate.fc1`` ->
``conv2_0_gate_fc1``), which `load_torchreid_state_dict` uses. Padding as PyTorch: explicit
zero padding + "valid" for the strided 7x7 conv and the maxpool (zeros equal PyTorch's -inf there,
the maxpool's input being ReLU output >= 0), "same" for the stride-1 depthwise 3x3.
Initialisation and BN follow torchreid: He normal on fan-out (PyTorch's fan-out of a depthwise
kernel is Keras' fan-in), BN epsilon 1e-5 and momentum 0.9 (PyTorch's 0.1).

Weights: torchreid's ImageNet weights are PyTorch files, so ``weights="imagenet"`` is refused;
OSNet trains from scratch (``--backbone_weights none``) or loads a local Keras ``.h5`` written
by ``build_model(name, ...).save_weights(path)`` (e.g. after `load_torchreid_state_dict`).
"""
import os

import numpy as np

from utils.tf_env import keras

from applications import weights as weights_lib
from applications.backbone_base import Backbone, copy_functional_model, make_preprocess_block

_CHANNELS = {  # conv1, conv2, conv3, conv4 (= conv5) output channels, as torchreid
    "osnet_x1_0": (64, 256, 384, 512),
    "osnet_x0_75": (48, 192, 288, 384),
    "osnet_x0_5": (32, 128, 192, 256),
    "osnet_x0_25": (16, 64, 96, 128),
    "osnet_ibn_x1_0": (64, 256, 384, 512),
}
NAMES = sorted(_CHANNELS)
OUTPUT_STRIDE = 8  # with last_stride=1 (the toolkit's default); 16 with 2, as torchreid
HAS_IMAGENET_WEIGHTS = False
PREPROCESSING_MODE = "torch"
BLOCK_NAMES = ("conv1", "conv2", "conv3", "conv4_5")
OSBLOCKS_PER_STAGE = 2
STREAMS = ("2a", "2b", "2c", "2d")  # stream i has i + 1 lite 3x3 convs
BOTTLENECK_REDUCTION = 4
GATE_REDUCTION = 16
NORM_EPSILON = 1e-5  # PyTorch's BatchNorm2d / InstanceNorm2d default
BN_MOMENTUM = 0.9  # PyTorch's momentum 0.1 (weight of the new batch)

# torchreid's kaiming_normal_(mode="fan_out", nonlinearity="relu"); for depthwise kernels
# (kh, kw, C, 1) PyTorch's fan-out (C * kh * kw) is what Keras calls fan-in.
_CONV_INIT = dict(scale=2.0, mode="fan_out", distribution="untruncated_normal")
_DEPTHWISE_INIT = dict(scale=2.0, mode="fan_in", distribution="untruncated_normal")


def _uses_instance_norm(name):
    return name.startswith("osnet_ibn")


# ----------------------------------------------------------------------------------------------
# Layers (named after torchreid's module paths, "." -> "_")
# ----------------------------------------------------------------------------------------------
def _conv(x, filters, kernel_size, name, use_bias=False, activation=None):
    return keras.layers.Conv2D(
        filters, kernel_size, use_bias=use_bias, activation=activation,
        kernel_initializer=keras.initializers.VarianceScaling(**_CONV_INIT), name=name)(x)


def _batch_norm(x, name):
    return keras.layers.BatchNormalization(epsilon=NORM_EPSILON, momentum=BN_MOMENTUM,
                                           name=name)(x)


def _instance_norm(x, name):
    return keras.layers.GroupNormalization(groups=int(x.shape[-1]), epsilon=NORM_EPSILON,
                                           name=name)(x)


def _conv1x1(x, filters, prefix, relu=True):
    """torchreid's Conv1x1 (conv + BN + ReLU) or, with ``relu=False``, Conv1x1Linear."""
    x = _batch_norm(_conv(x, filters, 1, prefix + "_conv"), prefix + "_bn")
    return keras.layers.ReLU(name=prefix + "_relu")(x) if relu else x


def _light_conv3x3(x, prefix):
    """LightConv3x3: 1x1 conv, depthwise 3x3 conv, BN, ReLU (no biases)."""
    x = _conv(x, int(x.shape[-1]), 1, prefix + "_conv1")
    x = keras.layers.DepthwiseConv2D(
        3, padding="same", use_bias=False,
        depthwise_initializer=keras.initializers.VarianceScaling(**_DEPTHWISE_INIT),
        name=prefix + "_conv2")(x)
    x = _batch_norm(x, prefix + "_bn")
    return keras.layers.ReLU(name=prefix + "_relu")(x)


def _channel_gate(channels, prefix):
    """ChannelGate layers, created once: ``gate(x, stream)`` applies them to one stream."""
    pool = keras.layers.GlobalAveragePooling2D(keepdims=True, name=prefix + "_global_avgpool")
    fc1 = keras.layers.Conv2D(channels // GATE_REDUCTION, 1, activation="relu",
                              kernel_initializer=keras.initializers.VarianceScaling(**_CONV_INIT),
                              name=prefix + "_fc1")
    fc2 = keras.layers.Conv2D(channels, 1, activation="sigmoid",
                              kernel_initializer=keras.initializers.VarianceScaling(**_CONV_INIT),
                              name=prefix + "_fc2")

    def gate(x, stream):
        return keras.layers.Multiply(name="{}_{}".format(prefix, stream))([x, fc2(fc1(pool(x)))])

    return gate


def _os_block(x, out_channels, prefix, instance_norm):
    """OSBlock: 1x1 reduction, T=4 streams under one shared gate, 1x1 expansion, residual."""
    mid_channels = out_channels // BOTTLENECK_REDUCTION
    reduced = _conv1x1(x, mid_channels, prefix + "_conv1")
    gate = _channel_gate(mid_channels, prefix + "_gate")
    gated = []
    for depth, stream in enumerate(STREAMS, start=1):
        y = reduced
        for index in range(depth):
            # A single conv is a module of its own in torchreid (conv2a), longer streams are
            # nn.Sequential (conv2b.0, conv2b.1, ...).
            y = _light_conv3x3(y, "{}_conv{}{}".format(
                prefix, stream, "" if depth == 1 else "_{}".format(index)))
        gated.append(gate(y, stream))
    y = keras.layers.Add(name=prefix + "_streams")(gated)
    y = _conv1x1(y, out_channels, prefix + "_conv3", relu=False)
    identity = x
    if int(x.shape[-1]) != out_channels:
        identity = _conv1x1(x, out_channels, prefix + "_downsample", relu=False)
    y = keras.layers.Add(name=prefix + "_add")([y, identity])
    if instance_norm:
        y = _instance_norm(y, prefix + "_IN")
    return keras.layers.ReLU(name=prefix + "_relu")(y)


def _stage(x, out_channels, prefix, instance_norm, transition, pool):
    """torchreid's ``_make_layer``: OSBlocks, then (``transition``) Conv1x1 + 2x2 avg-pool."""
    for index in range(OSBLOCKS_PER_STAGE):
        x = _os_block(x, out_channels, "{}_{}".format(prefix, index), instance_norm)
    if transition:
        transition_prefix = "{}_{}".format(prefix, OSBLOCKS_PER_STAGE)
        x = _conv1x1(x, out_channels, transition_prefix + "_0")
        if pool:
            x = keras.layers.AveragePooling2D(2, name=transition_prefix + "_1")(x)
    return x


def build_model(name, input_shape, last_stride=2):
    """OSNet ``name`` as one functional model: normalised (H, W, 3) image -> conv5 feature map.

    Its layers are the backbone's; ``build_model(name, shape).save_weights(path)`` writes a file
    that ``get_backbone(name, shape, weights=path)`` loads (any input size and last stride).
    """
    if name not in _CHANNELS:
        raise ValueError("Unknown OSNet {!r}; use one of {}.".format(name, ", ".join(NAMES)))
    if last_stride not in (1, 2):
        raise ValueError("last_stride must be 1 or 2, got {!r}.".format(last_stride))
    channels = _CHANNELS[name]
    instance_norm = _uses_instance_norm(name)
    inputs = keras.Input(shape=tuple(input_shape), name="normalised_image")
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = keras.layers.Conv2D(channels[0], 7, strides=2, use_bias=False,
                            kernel_initializer=keras.initializers.VarianceScaling(**_CONV_INIT),
                            name="conv1_conv")(x)
    x = _instance_norm(x, "conv1_bn") if instance_norm else _batch_norm(x, "conv1_bn")
    x = keras.layers.ReLU(name="conv1_relu")(x)
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    x = _stage(x, channels[1], "conv2", instance_norm, transition=True, pool=True)
    x = _stage(x, channels[2], "conv3", False, transition=True, pool=last_stride == 2)
    x = _stage(x, channels[3], "conv4", False, transition=False, pool=False)
    x = _conv1x1(x, channels[3], "conv5")
    return keras.Model(inputs, x, name=name)


def _block_ends(last_stride):
    """Names of the last layer of each block after ``preprocess_input``."""
    conv3_end = "conv3_2_1" if last_stride == 2 else "conv3_2_0_relu"
    return ("maxpool", "conv2_2_1", conv3_end, "conv5_relu")


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------
def _weights_description(name):
    return "a Keras .h5 of {} (build_model({!r}, ...).save_weights)".format(name, name)


def _resolve_weights(name, weights):
    """Path to load for ``weights`` (None | local .h5 path); refuses "imagenet"."""
    if weights is None:
        return None
    if weights == "imagenet":
        raise ValueError(
            "{} has no ImageNet weights in Keras format (torchreid's are PyTorch files): OSNet "
            "trains from scratch here, --backbone_weights none, or takes a local Keras .h5 file "
            "of its weights (a path; build_model + load_torchreid_state_dict + save_weights "
            "converts torchreid's).".format(name))
    path = os.path.expanduser(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError("OSNet weights file {!r} not found (expected {}).".format(
            path, _weights_description(name)))
    return path


def _torch_key(layer_name):
    return layer_name.replace("_", ".")


def _torch_values(layer, prefix, state_dict, used):
    """Values for ``layer.weights`` from torchreid's ``<prefix>.weight`` etc. (keys -> ``used``)."""
    def get(suffix):
        key = prefix + "." + suffix
        if key not in state_dict:
            raise KeyError(key)
        used.add(key)
        return np.asarray(state_dict[key])

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [get("weight").transpose(2, 3, 0, 1)]  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    if isinstance(layer, keras.layers.Conv2D):
        values = [get("weight").transpose(2, 3, 1, 0)]  # (out, in, kh, kw) -> (kh, kw, in, out)
        return values + ([get("bias")] if layer.use_bias else [])
    if isinstance(layer, keras.layers.BatchNormalization):
        return [get("weight"), get("bias"), get("running_mean"), get("running_var")]
    if isinstance(layer, keras.layers.GroupNormalization):
        return [get("weight"), get("bias")]
    raise ValueError("No torchreid counterpart for layer {} ({}).".format(
        layer.name, type(layer).__name__))


def load_torchreid_state_dict(model, state_dict):
    """Set ``model``'s weights (`build_model` or a Backbone's blocks) from torchreid's
    ``state_dict`` (name -> array, e.g. ``{k: v.numpy() for k, v in net.state_dict().items()}``).

    ``fc``, ``classifier`` and ``num_batches_tracked`` are ignored; any other unused or missing
    tensor raises ValueError (e.g. an osnet_ibn_x1_0 checkpoint for osnet_x1_0).
    """
    state_dict = {key[len("module."):] if key.startswith("module.") else key: value
                  for key, value in state_dict.items()}
    models = model.blocks if hasattr(model, "blocks") else [model]
    layers = {id(layer): layer for m in models for layer in m.layers if layer.weights}
    used, assignments, missing = set(), [], []
    for layer in layers.values():
        try:
            values = _torch_values(layer, _torch_key(layer.name), state_dict, used)
        except KeyError as error:
            missing.append(str(error.args[0]))
            continue
        assignments.append((layer, values))
    ignored = ("fc.", "classifier.")
    unused = sorted(key for key in set(state_dict) - used
                    if not key.startswith(ignored) and not key.endswith("num_batches_tracked"))
    if missing or unused:
        raise ValueError("The torchreid state dict does not match this OSNet: {} tensors missing "
                         "(e.g. {}), {} unused (e.g. {}).".format(
                             len(missing), missing[:3], len(unused), unused[:3]))
    for layer, values in assignments:
        shapes = [tuple(w.shape) for w in layer.weights]
        if shapes != [value.shape for value in values]:
            raise ValueError("Layer {}: shapes {} differ from torchreid's {}.".format(
                layer.name, shapes, [value.shape for value in values]))
        layer.set_weights(values)


# ----------------------------------------------------------------------------------------------
# Builder
# ----------------------------------------------------------------------------------------------
def build_backbone(name, input_shape, weights="imagenet", last_stride=1):
    """OSNet backbone ``name`` (see module docstring); ``weights``: None or a local .h5 path."""
    weights_path = _resolve_weights(name, weights)
    model = build_model(name, input_shape, last_stride)
    if weights_path is not None:
        weights_lib.load_keras_weights(model, weights_path, _weights_description(name))
    blocks = [make_preprocess_block(input_shape, PREPROCESSING_MODE)]
    block_input = model.input
    for block_name, end in zip(BLOCK_NAMES, _block_ends(last_stride)):
        block_output = model.get_layer(end).output
        blocks.append(keras.Model(block_input, block_output, name=block_name))
        block_input = block_output
    return Backbone(name, blocks, PREPROCESSING_MODE, input_shape, last_stride,
                    copy_functional_model, weights_path=weights_path)
