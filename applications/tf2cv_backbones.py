"""FlipReID backbones built from tf2cv's own layer classes, with last stride 1.

The units (``ResUnit``, ``IBNResUnit``, ``ResNeStAUnit``) and init blocks (``ResInitBlock``,
``SEInitBlock``) are imported from the installed tf2cv package, not copied. Only the stage
assembly is ours, with the FlipReID change: a stage's first unit downsamples when
``(j == 0) and (i != 0) and (i != last stage)``, i.e. stage 4 keeps stage 3's resolution
(``last_stride=2`` restores upstream tf2cv). Unit layer names stay tf2cv's (``stage{i}/unit{j}``,
already unique across stages), so tf2cv's released ``.tf2.h5`` weights map by name.

Blocks: ``preprocess_input`` (torch mode), ``features/init_block``, ``features/stage1`` ..
``features/stage4``; each is a functional model wrapping one tf2cv layer. tf2cv layers have no
``get_config``, so the last-block copy is rebuilt from the same constructor and gets the weights
with ``set_weights``.
"""
from utils.tf_env import keras

from applications import weights as weights_lib
from applications.backbone_base import Backbone, make_preprocess_block

# name -> (family, units per stage, options); depth tables as in tf2cv's get_* functions.
_SPECS = {
    "resnet18": ("resnet", [2, 2, 2, 2], dict(bottleneck=False)),
    "resnet34": ("resnet", [3, 4, 6, 3], dict(bottleneck=False)),
    "resnet50": ("resnet", [3, 4, 6, 3], dict(bottleneck=True, conv1_stride=True)),
    "resnet50b": ("resnet", [3, 4, 6, 3], dict(bottleneck=True, conv1_stride=False)),
    "resnet101": ("resnet", [3, 4, 23, 3], dict(bottleneck=True, conv1_stride=True)),
    "resnet101b": ("resnet", [3, 4, 23, 3], dict(bottleneck=True, conv1_stride=False)),
    "resnet152": ("resnet", [3, 8, 36, 3], dict(bottleneck=True, conv1_stride=True)),
    "resnet152b": ("resnet", [3, 8, 36, 3], dict(bottleneck=True, conv1_stride=False)),
    "ibn_resnet50": ("ibn", [3, 4, 6, 3], {}),
    "ibn_resnet101": ("ibn", [3, 4, 23, 3], {}),
    "resnesta18": ("resnesta", [2, 2, 2, 2], dict(bottleneck=False)),
    "resnesta50": ("resnesta", [3, 4, 6, 3], dict(bottleneck=True)),
    "resnesta101": ("resnesta", [3, 4, 23, 3], dict(bottleneck=True)),
    "resnesta152": ("resnesta", [3, 8, 36, 3], dict(bottleneck=True)),
}
NAMES = sorted(_SPECS)
PREPROCESSING_MODE = "torch"


def _stage_channels(family, options, name):
    """(init block channels, per-stage out channels) as tf2cv computes them."""
    bottleneck = options.get("bottleneck", True)
    widths = [64, 128, 256, 512]
    if bottleneck:
        widths = [w * 4 for w in widths]
    init_channels = 64
    if family == "resnesta" and int(name[len("resnesta"):]) >= 101:
        init_channels = 128
    return init_channels, widths


def _make_init_block(family, init_channels):
    if family == "resnesta":
        from tf2cv.models.senet import SEInitBlock
        return SEInitBlock(in_channels=3, out_channels=init_channels, name="init_block")
    from tf2cv.models.resnet import ResInitBlock
    return ResInitBlock(in_channels=3, out_channels=init_channels, name="init_block")


def _make_unit(family, options, in_channels, out_channels, strides, name):
    if family == "resnet":
        from tf2cv.models.resnet import ResUnit
        return ResUnit(in_channels=in_channels, out_channels=out_channels, strides=strides,
                       bottleneck=options["bottleneck"],
                       conv1_stride=options.get("conv1_stride", True), name=name)
    if family == "ibn":
        from tf2cv.models.ibnresnet import IBNResUnit
        return IBNResUnit(in_channels=in_channels, out_channels=out_channels, strides=strides,
                          conv1_ibn=(out_channels < 2048), name=name)
    from tf2cv.models.resnesta import ResNeStAUnit
    return ResNeStAUnit(in_channels=in_channels, out_channels=out_channels, strides=strides,
                        bottleneck=options["bottleneck"], name=name)


def unit_strides(stage_index, unit_index, stage_count, last_stride):
    """FlipReID rule: the first unit of stages 2..N-1 downsamples; of stage N iff last_stride=2."""
    if unit_index != 0 or stage_index == 0:
        return 1
    if stage_index == stage_count - 1:
        return last_stride
    return 2


def _make_stage(family, options, stage_index, stage_count, unit_count, in_channels, out_channels,
                last_stride, name=None):
    from tf2cv.models.common import SimpleSequential
    stage = SimpleSequential(name=name or "stage{}".format(stage_index + 1))
    for unit_index in range(unit_count):
        stage.add(_make_unit(
            family, options, in_channels, out_channels,
            unit_strides(stage_index, unit_index, stage_count, last_stride),
            name="unit{}".format(unit_index + 1)))
        in_channels = out_channels
    return stage


def _wrap(layer, input_shape, name):
    inputs = keras.Input(shape=tuple(input_shape))
    return keras.Model(inputs, layer(inputs), name=name)


def build_backbone(name, input_shape, weights="imagenet", last_stride=1):
    """tf2cv backbone ``name`` (see module docstring); ``weights`` as in ``get_backbone``."""
    family, layers, options = _SPECS[name]
    weights_path = weights_lib.resolve_tf2cv_weights(name, weights)
    init_channels, widths = _stage_channels(family, options, name)

    blocks = [make_preprocess_block(input_shape, PREPROCESSING_MODE)]
    blocks.append(_wrap(_make_init_block(family, init_channels), input_shape,
                        "features/init_block"))
    in_channels = init_channels
    for stage_index, (unit_count, out_channels) in enumerate(zip(layers, widths)):
        stage = _make_stage(family, options, stage_index, len(layers), unit_count, in_channels,
                            out_channels, last_stride)
        blocks.append(_wrap(stage, blocks[-1].output_shape[1:],
                            "features/stage{}".format(stage_index + 1)))
        last_stage_args = (stage_index, unit_count, in_channels, out_channels)
        in_channels = out_channels

    if weights_path is not None:
        weights_lib.load_tf2cv_weights(blocks[1:], weights_path,
                                       weights_lib.tf2cv_weights_file_name(name))

    stage_index, unit_count, stage_in_channels, out_channels = last_stage_args

    def copy_last_stage(source, copy_name):
        # A distinct stage name gives the copy distinct variable names, which HDF5 files need.
        stage = _make_stage(family, options, stage_index, len(layers), unit_count,
                            stage_in_channels, out_channels, last_stride,
                            name=copy_name.replace("/", "_"))
        copy = _wrap(stage, source.input_shape[1:], copy_name)
        copy.set_weights(source.get_weights())
        return copy

    return Backbone(name, blocks, PREPROCESSING_MODE, input_shape, last_stride, copy_last_stage,
                    weights_path=weights_path)
