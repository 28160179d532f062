"""Backbone registry: ``get_backbone(name, input_shape, weights, last_stride)`` -> ``Backbone``.

Three naming families are accepted by ``--backbone_model_name``:

* tf2cv (FlipReID): ``resnet50``, ``ibn_resnet50``, ``resnesta50``, ... built from tf2cv's own
  layer classes (``applications.tf2cv_backbones``), ImageNet weights = tf2cv's ``.tf2.h5`` files;
* Keras applications (AdaptiveL2): ``ResNet50``, ``ResNet101``, ``ResNet152``, the V2 ResNets and
  the small CPU-friendly ``MobileNetV3Small``, ``MobileNetV3Large``, ``MobileNetV2``,
  ``EfficientNetV2B0`` and the larger ``EfficientNetV2S`` / ``EfficientNetV2M``
  (``applications.keras_backbones``), ImageNet weights = Keras' ``*notop.h5`` files;
* OSNet (torchreid): ``osnet_x1_0``, ``osnet_x0_75``, ``osnet_x0_5``, ``osnet_x0_25``,
  ``osnet_ibn_x1_0`` (``applications.osnet``), no ImageNet weights (trained from scratch, or a
  local ``.h5``); output stride 16 with ``last_stride=2`` (torchreid's), 8 with 1.

Every backbone takes the RAW RGB float image (0..255). Its first block, ``preprocess_input``, does
the backbone's own normalisation: tf2cv and OSNet -> "torch" ``(x/255 - mean)/std``; Keras ResNet
V1 -> "caffe" (RGB->BGR, minus the BGR mean); ResNet V2 and MobileNetV2 -> "tf" ``x/127.5 - 1``;
MobileNetV3 / EfficientNetV2 -> Keras' own built-in ``Rescaling``/``Normalization`` layers.
Deliberate deviation for AdaptiveL2: the original applied ``preprocess_input`` in the data
generators; here it lives inside the model graph for every backbone, so pipelines and evaluation
always feed raw pixels (and in-model horizontal flipping commutes with it).
"""
from applications import keras_backbones, osnet, tf2cv_backbones
from applications.backbone_base import DEFAULT_MIN_INPUT_SIZE, check_input_shape

_FAMILIES = (tf2cv_backbones, keras_backbones, osnet)


def _all_names():
    names = []
    for family in _FAMILIES:
        names.extend(family.NAMES)
    return sorted(names)


BACKBONE_NAMES = _all_names()


def _check_name(name):
    if name not in BACKBONE_NAMES:
        raise ValueError("Unknown backbone {!r}; allowed --backbone_model_name values: {}.".format(
            name, ", ".join(BACKBONE_NAMES)))


def _family(name):
    _check_name(name)
    return next(family for family in _FAMILIES if name in family.NAMES)


def backbone_output_stride(name, last_stride=1):
    """How many times backbone ``name`` reduces the image's height and width."""
    return getattr(_family(name), "OUTPUT_STRIDE", 16) * last_stride


def backbone_has_imagenet_weights(name):
    """Whether ``weights="imagenet"`` can load (OSNet's are PyTorch files only)."""
    return getattr(_family(name), "HAS_IMAGENET_WEIGHTS", True)


def backbone_min_input_size(name):
    """Smallest (image_height, image_width) backbone ``name`` accepts (without building it)."""
    _check_name(name)
    return DEFAULT_MIN_INPUT_SIZE


def get_backbone(name, input_shape=(384, 128, 3), weights="imagenet", last_stride=1):
    """Build backbone ``name`` for raw RGB inputs of ``input_shape`` = (H, W, 3).

    Args:
        name: one of ``BACKBONE_NAMES``.
        weights: "imagenet" (tf2cv model store ``~/.tensorflow/models`` or Keras cache
            ``~/.keras/models``; downloaded only if absent; refused for OSNet), None (random), or
            a local ``.h5`` path.
        last_stride: 1 removes the last downsampling (re-ID default, output stride 16; OSNet 8);
            2 keeps it (32; OSNet 16).
    """
    _check_name(name)
    if last_stride not in (1, 2):
        raise ValueError("last_stride must be 1 or 2, got {!r}.".format(last_stride))
    input_shape = check_input_shape(input_shape)
    if weights is not None and not isinstance(weights, str):
        raise ValueError("weights must be 'imagenet', None or a path to an .h5 file, got {!r}."
                         .format(weights))
    for family in _FAMILIES:
        if name in family.NAMES:
            return family.build_backbone(name, input_shape, weights=weights,
                                         last_stride=last_stride)
    raise AssertionError("unreachable")

