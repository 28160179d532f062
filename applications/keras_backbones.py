"""Backbones from ``tf.keras.applications``: AdaptiveL2's ResNets, small CPU models and the
EfficientNetV2 family (B0, S, M).

Construction, public API only:
1. build the Keras application (``include_top=False, weights=None``) for the requested input;
2. for ``last_stride=1`` edit its functional config: every strided layer of the last
   downsampling unit gets ``strides=1`` and its ``ZeroPadding2D`` (if any) becomes symmetric
   ``kernel_size // 2``, so the unit keeps its input resolution; rebuild with ``Model.from_config``;
3. load the notop ``.h5`` weights by layer name (strides do not change weight shapes);
4. cut the model into blocks: sub-models between "cut" tensors just before each downsampling
   unit, so blocks share the loaded layers. Names: ``preprocess_input``, ``stem``, ``stage1`` ..
   ``stageN`` (each stage starts with a downsampling unit).

Differences from AdaptiveL2's backbones, all deliberate: preprocessing is inside the model; the V2
ResNets are Keras' standard pre-activation models (ALR passed ``preact=False``, leaving
``conv1_bn`` random and dropping ``post_bn``); with ``last_stride=1`` the V2 models also lose their
last downsampling (in ``conv4_block6``; ALR kept output stride 32 there; ``last_stride=2``
reproduces it). ResNeXt is not offered: tf.keras.applications has no ResNeXt.
"""
import re

from utils.tf_env import keras

from applications import weights as weights_lib
from applications.backbone_base import Backbone, copy_functional_model, make_preprocess_block

_KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
_RESNET_UNITS = r"^(conv\d+_block\d+_|conv1_|pool1_)"


def _resnet(constructor, file_stem, file_hash, mode):
    file_name = file_stem + "_weights_tf_dim_ordering_tf_kernels_notop.h5"
    return dict(constructor=constructor, kwargs={}, mode=mode, unit_pattern=_RESNET_UNITS,
                file_name=file_name, origin=_KERAS_URL + "resnet/" + file_name, file_hash=file_hash)


def _mobilenet_v3(constructor, model_type, file_hash):
    file_name = "weights_mobilenet_v3_{}_224_1.0_float_no_top_v2.h5".format(model_type)
    return dict(constructor=constructor, mode="tf",
                kwargs=dict(alpha=1.0, minimalistic=False, include_preprocessing=True),
                unit_pattern=r"^(expanded_conv(?:_\d+)?/|Conv(?=/|$))", file_name=file_name,
                origin=_KERAS_URL + "mobilenet_v3/" + file_name, file_hash=file_hash)


def _efficientnet_v2(constructor, variant, file_hash, mode):
    """EfficientNetV2 ``variant`` ("b0", "s", "m"): Keras' ``efficientnetv2-<variant>_notop.h5``.

    Units are ``stem_`` and ``block<stage><letter>_``; the strided units are the stem and the
    first block of stages 2, 3, 4 and 6 (V2-M's stage 7 keeps stage 6's resolution), all with
    ``same`` padding, so ``last_stride=1`` only sets ``block6a``'s stride to 1.
    """
    file_name = "efficientnetv2-{}_notop.h5".format(variant)
    return dict(constructor=constructor, kwargs=dict(include_preprocessing=True), mode=mode,
                unit_pattern=r"^(block\d+[a-z]_|stem_)", file_name=file_name,
                origin=_KERAS_URL + "efficientnet_v2/" + file_name, file_hash=file_hash)


_MOBILENET_V2_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"

# mode = what the preprocessing computes; for MobileNetV3/EfficientNetV2 Keras' own layers do it.
_SPECS = {
    "ResNet50": lambda a: _resnet(a.ResNet50, "resnet50", "4d473c1dd8becc155b73f8504c6f6626",
                                  "caffe"),
    "ResNet101": lambda a: _resnet(a.ResNet101, "resnet101", "88cf7a10940856eca736dc7b7e228a21",
                                   "caffe"),
    "ResNet152": lambda a: _resnet(a.ResNet152, "resnet152", "ee4c566cf9a93f14d82f913c2dc6dd0c",
                                   "caffe"),
    "ResNet50V2": lambda a: _resnet(a.ResNet50V2, "resnet50v2", "fac2f116257151a9d068a22e544a4917",
                                    "tf"),
    "ResNet101V2": lambda a: _resnet(a.ResNet101V2, "resnet101v2",
                                     "c0ed64b8031c3730f411d2eb4eea35b5", "tf"),
    "ResNet152V2": lambda a: _resnet(a.ResNet152V2, "resnet152v2",
                                     "ed17cf2e0169df9d443503ef94b23b33", "tf"),
    "MobileNetV3Small": lambda a: _mobilenet_v3(a.MobileNetV3Small, "small",
                                                "d3e8ec802a04aa4fc771ee12a9a9b836"),
    "MobileNetV3Large": lambda a: _mobilenet_v3(a.MobileNetV3Large, "large",
                                                "07fb09a5933dd0c8eaafa16978110389"),
    "MobileNetV2": lambda a: dict(
        constructor=a.MobileNetV2, kwargs=dict(alpha=1.0), mode="tf",
        unit_pattern=r"^(block_\d+_|Conv1$)", file_name=_MOBILENET_V2_FILE,
        origin=_KERAS_URL + "mobilenet_v2/" + _MOBILENET_V2_FILE, file_hash=None),
    # B0: Keras' Rescaling(1/255) + Normalization(ImageNet mean/std) = "torch".
    "EfficientNetV2B0": lambda a: _efficientnet_v2(a.EfficientNetV2B0, "b0",
                                                   "893217f2bb855e2983157299931e43ff", "torch"),
    # S / M: Keras' Rescaling(1/128, offset=-1), i.e. x/128 - 1 (nearest mode: "tf", x/127.5 - 1).
    "EfficientNetV2S": lambda a: _efficientnet_v2(a.EfficientNetV2S, "s",
                                                  "af0682fb74e8c54910f2d4393339c070", "tf"),
    "EfficientNetV2M": lambda a: _efficientnet_v2(a.EfficientNetV2M, "m",
                                                  "1b8dc055df72dde80d614482840fe342", "tf"),
}
NAMES = sorted(_SPECS)

_STRIDED_TYPES = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D",
                  "AveragePooling2D")
_PREPROCESSING_TYPES = ("Rescaling", "Normalization")


def get_spec(name):
    """Static description of Keras backbone ``name`` (constructor, mode, weights file, ...)."""
    return _SPECS[name](keras.applications)


# ----------------------------------------------------------------------------------------------
# Functional-config helpers
# ----------------------------------------------------------------------------------------------
def _inbound_names(layer_config):
    """Names of the layers feeding a layer, from its serialized ``inbound_nodes``."""
    names = []

    def scan(item):
        if isinstance(item, (list, tuple)):
            if (len(item) >= 3 and isinstance(item[0], str) and isinstance(item[1], int)
                    and isinstance(item[2], int)):
                names.append(item[0])
                for rest in item[3:]:
                    scan(rest)
            else:
                for sub in item:
                    scan(sub)
        elif isinstance(item, dict):
            for sub in item.values():
                scan(sub)

    scan(layer_config.get("inbound_nodes", []))
    return names


def _pairs(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def _is_strided(layer_config):
    if layer_config["class_name"] not in _STRIDED_TYPES:
        return False
    strides = layer_config["config"].get("strides")
    return strides is not None and any(s != 1 for s in _pairs(strides))


def _cut_layers(layers):
    """Names of layers every input->output path goes through (valid block boundaries)."""
    position = {layer["name"]: index for index, layer in enumerate(layers)}
    furthest_use = list(range(len(layers)))  # furthest consumer position of each layer
    for index, layer in enumerate(layers):
        for source in _inbound_names(layer):
            furthest_use[position[source]] = max(furthest_use[position[source]], index)
    cuts, reach = set(), -1
    for index, layer in enumerate(layers):
        # No earlier layer is consumed after this one, so the graph narrows to this layer.
        if reach <= index:
            cuts.add(layer["name"])
        reach = max(reach, furthest_use[index])
    return cuts


def _unit_boundaries(layers, unit_pattern):
    """For each downsampling unit, the layer feeding it (in order, without duplicates)."""
    pattern = re.compile(unit_pattern)
    first_layer_of_unit, boundaries = {}, []
    for layer in layers:
        match = pattern.match(layer["name"])
        if match and match.group(1) not in first_layer_of_unit:
            first_layer_of_unit[match.group(1)] = layer
    for layer in layers:
        match = pattern.match(layer["name"])
        if not (match and _is_strided(layer)):
            continue
        sources = _inbound_names(first_layer_of_unit[match.group(1)])
        if len(sources) != 1:
            raise ValueError("Cannot find the input of unit {!r}.".format(match.group(1)))
        if sources[0] not in boundaries:
            boundaries.append(sources[0])
    return boundaries


def _remove_last_downsampling(config, start_name, boundaries):
    """Set strides 1 on all strided layers after the last boundary (the last downsampling unit)."""
    layers = config["layers"]
    by_name = {layer["name"]: layer for layer in layers}
    position = {layer["name"]: index for index, layer in enumerate(layers)}
    last_boundary = position[boundaries[-1] if boundaries else start_name]
    for layer in layers[last_boundary + 1:]:
        if not _is_strided(layer):
            continue
        layer_config = layer["config"]
        layer_config["strides"] = (1, 1)
        sources = _inbound_names(layer)
        if len(sources) == 1 and by_name[sources[0]]["class_name"] == "ZeroPadding2D":
            kernel = _pairs(layer_config.get("kernel_size", layer_config.get("pool_size", 1)))
            dilation = _pairs(layer_config.get("dilation_rate", 1))
            pad = [(k - 1) * d // 2 for k, d in zip(kernel, dilation)]
            by_name[sources[0]]["config"]["padding"] = ((pad[0], pad[0]), (pad[1], pad[1]))
        elif layer_config.get("padding") == "valid" and any(
                k != 1 for k in _pairs(layer_config.get("kernel_size",
                                                        layer_config.get("pool_size", 1)))):
            raise ValueError("Cannot set stride 1 on {!r}: valid padding without a padding layer "
                             "would shrink the map.".format(layer["name"]))
    for layer in layers:
        layer.pop("build_config", None)  # input shapes changed downstream


# ----------------------------------------------------------------------------------------------
# Builder
# ----------------------------------------------------------------------------------------------
def build_backbone(name, input_shape, weights="imagenet", last_stride=1):
    """Keras backbone ``name`` (see module docstring); ``weights`` as in ``get_backbone``."""
    spec = get_spec(name)
    weights_path = weights_lib.resolve_keras_weights(spec["file_name"], spec["origin"],
                                                     spec["file_hash"], weights)
    base = spec["constructor"](include_top=False, weights=None, input_shape=tuple(input_shape),
                               **spec["kwargs"])
    config = base.get_config()
    layers = config["layers"]
    del base

    # The built-in preprocessing layers (if any) right after the input end preprocess_input.
    start_name = layers[0]["name"]
    preprocess_end = None
    for layer in layers[1:]:
        if layer["class_name"] not in _PREPROCESSING_TYPES:
            break
        preprocess_end = layer["name"]
    stem_start = preprocess_end or start_name
    boundaries = [b for b in _unit_boundaries(layers, spec["unit_pattern"]) if b != stem_start]
    cuts = _cut_layers(layers)
    not_cuts = [b for b in boundaries if b not in cuts]
    if not_cuts:
        raise ValueError("Block boundaries {} of {} are not graph cuts.".format(not_cuts, name))
    if last_stride == 1:
        _remove_last_downsampling(config, stem_start, boundaries)
    model = keras.Model.from_config(config)

    if weights_path is not None:
        weights_lib.load_keras_weights(model, weights_path, spec["file_name"])

    blocks = []
    if preprocess_end is None:
        blocks.append(make_preprocess_block(input_shape, spec["mode"]))
        block_input = model.input
    else:
        block_input = model.get_layer(preprocess_end).output
        blocks.append(keras.Model(model.input, block_input, name="preprocess_input"))
    ends = [model.get_layer(b).output for b in boundaries] + [model.output]
    for index, block_output in enumerate(ends):
        block_name = "stem" if index == 0 else "stage{}".format(index)
        blocks.append(keras.Model(block_input, block_output, name=block_name))
        block_input = block_output

    return Backbone(name, blocks, spec["mode"], input_shape, last_stride, copy_functional_model,
                    weights_path=weights_path)
