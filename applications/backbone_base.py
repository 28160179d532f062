"""What every backbone is: a `Backbone` of functional blocks on raw RGB 0..255 images, whose
first block (``preprocess_input``, an `ImagePreprocessing` layer) normalises them as the
backbone's ImageNet weights expect; plus the block-copy helpers the re-ID head uses.
"""
import weakref

from utils.tf_env import keras, tf

PREPROCESSING_MODES = ("torch", "caffe", "tf")
PREPROCESS_BLOCK_NAME = "preprocess_input"
# Every family downsamples 32x at most; Keras refuses ResNets below 32x32 too.
DEFAULT_MIN_INPUT_SIZE = (32, 32)

_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)


@keras.utils.register_keras_serializable(package="reid")
class ImagePreprocessing(keras.layers.Layer):
    """ImageNet normalisation of raw RGB 0..255 images (Keras' ``imagenet_utils.preprocess_input``).

    mode "torch": ``(x / 255 - mean) / std`` (RGB); "caffe": RGB->BGR then minus the BGR mean, no
    scaling; "tf": ``x / 127.5 - 1``.
    """

    def __init__(self, mode, **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError("Unknown preprocessing mode {!r}; use one of {}.".format(
                mode, PREPROCESSING_MODES))
        self.mode = mode

    def call(self, inputs):
        x = tf.cast(inputs, self.compute_dtype)
        if self.mode == "torch":
            mean, std = tf.constant(_TORCH_MEAN, x.dtype), tf.constant(_TORCH_STD, x.dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "caffe":
            return tf.reverse(x, axis=[-1]) - tf.constant(_CAFFE_BGR_MEAN, x.dtype)
        return x / 127.5 - 1.0

    def get_config(self):
        config = super().get_config()
        config["mode"] = self.mode
        return config


def make_preprocess_block(input_shape, mode):
    """Functional model ``preprocess_input``: raw RGB (H, W, 3) -> normalised input."""
    inputs = keras.Input(shape=tuple(input_shape), name="raw_image")
    outputs = ImagePreprocessing(mode, name="preprocess")(inputs)
    return keras.Model(inputs, outputs, name=PREPROCESS_BLOCK_NAME)


# block -> copy function(block, name), for ``clone_block``. The functions must not reference the
# block, or the weak keys would never die.
_COPY_FACTORIES = weakref.WeakKeyDictionary()


class Backbone:
    """A feature extractor split into blocks applied in sequence to the raw RGB image.

    Attributes:
        name: registry name (e.g. "resnet50", "ResNet50", "MobileNetV3Small").
        blocks: list of functional ``tf.keras.Model``; ``blocks[0]`` is ``preprocess_input``; the
            last block outputs the 4-D feature map (B, h, w, feature_channels).
        preprocessing_mode: "torch", "caffe" or "tf" (what ``preprocess_input`` computes).
        min_input_size: smallest accepted (height, width).
        input_shape: (H, W, 3) the blocks were built for.
        last_stride: 1 (re-ID default: the last downsampling removed, output stride 16; OSNet 8)
            or 2 (upstream: output stride 32; OSNet 16).
        feature_channels: channels of the last block's output.
        frozen_block_names: names of all blocks (prefixes to freeze the backbone in stage A; they
            also match copies named ``<last block name><suffix>``).
        weights_path: the weights file that was loaded, or None for random initialisation.
    """

    def __init__(self, name, blocks, preprocessing_mode, input_shape, last_stride,
                 copy_block=None, min_input_size=DEFAULT_MIN_INPUT_SIZE, weights_path=None):
        self.name = name
        self.blocks = list(blocks)
        self.preprocessing_mode = preprocessing_mode
        self.min_input_size = tuple(min_input_size)
        self.input_shape = tuple(input_shape)
        self.last_stride = last_stride
        self.weights_path = weights_path
        # copy_block(block, name) -> independent copy; default: functional config + weights.
        self._copy_block = copy_block or copy_functional_model
        _COPY_FACTORIES[self.blocks[-1]] = self._copy_block

    @property
    def last_block(self):
        return self.blocks[-1]

    @property
    def feature_channels(self):
        return int(self.blocks[-1].output_shape[-1])

    @property
    def output_shape(self):
        """(h, w, c) of the feature map."""
        return tuple(int(v) for v in self.blocks[-1].output_shape[1:])

    @property
    def frozen_block_names(self):
        return [block.name for block in self.blocks]

    def make_last_block_copy(self, name):
        """Independent copy (own variables) of the last block, same weights, model name ``name``.

        Used for the global and regional branches of the re-ID head.
        """
        return self._copy_block(self.blocks[-1], name)

    def __call__(self, inputs, training=None):
        x = inputs
        for block in self.blocks:
            x = block(x, training=training)
        return x

    def __repr__(self):
        return "Backbone(name={!r}, blocks={}, output_shape={})".format(
            self.name, [block.name for block in self.blocks], self.output_shape)


def clone_block(block, suffix):
    """Independent copy of a backbone's last block named ``block.name + suffix``.

    Works for the last block of any ``Backbone`` from ``get_backbone`` (tf2cv blocks are rebuilt
    from their constructors) and for any functional Keras model (``from_config`` + weights).
    """
    name = block.name + suffix
    return _COPY_FACTORIES.get(block, copy_functional_model)(block, name)


def copy_functional_model(model, name):
    """Rebuild a functional model from its config (new variables), copy its weights, rename it."""
    try:
        config = model.get_config()
    except NotImplementedError as error:
        raise ValueError("Block {!r} holds layers without get_config (e.g. tf2cv layers); copy it "
                         "with Backbone.make_last_block_copy instead.".format(model.name)
                         ) from error
    config["name"] = name
    _prefix_layer_names(config, name.replace("/", "_") + "_")
    copy = keras.Model.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def _prefix_layer_names(config, prefix):
    """Rename every layer of a functional config, so the copy's variables get names distinct
    from the original's (HDF5 weight files key weights by name)."""
    renamed = {layer["name"]: prefix + layer["name"] for layer in config["layers"]}

    def rename_references(node):
        if isinstance(node, list):
            if node and isinstance(node[0], str) and node[0] in renamed:
                return [renamed[node[0]]] + [rename_references(item) for item in node[1:]]
            return [rename_references(item) for item in node]
        if isinstance(node, dict):
            return {key: rename_references(value) for key, value in node.items()}
        return node

    for layer in config["layers"]:
        layer["inbound_nodes"] = rename_references(layer["inbound_nodes"])
        layer["name"] = layer["config"]["name"] = renamed[layer["name"]]
    config["input_layers"] = rename_references(config["input_layers"])
    config["output_layers"] = rename_references(config["output_layers"])


def check_input_shape(input_shape, min_input_size=DEFAULT_MIN_INPUT_SIZE):
    """Validate (H, W, 3); raises ValueError naming --image_height/--image_width."""
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError("input_shape must be (image_height, image_width, 3), got {}.".format(
            shape))
    height, width = int(shape[0]), int(shape[1])
    if height < min_input_size[0] or width < min_input_size[1]:
        raise ValueError(
            "Input {}x{} (--image_height x --image_width) is smaller than the backbone's minimum "
            "{}x{}; increase --image_height/--image_width.".format(
                height, width, min_input_size[0], min_input_size[1]))
    return height, width, 3
