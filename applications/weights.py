"""ImageNet weight files: where they live, how they are fetched, how they map onto our blocks.

* tf2cv ``<name>-<error>-<sha1[:8]>.tf2.h5`` (Keras 2 ``save_weights`` of tf2cv's subclassed
  models): looked up in ``~/.tensorflow/models`` and otherwise fetched through
  ``tf2cv.models.model_store.get_model_file``, as FlipReID does.
* Keras ``*notop.h5`` files: looked up in ``$KERAS_HOME/models`` (default ``~/.keras/models``) and
  otherwise fetched with ``tf.keras.utils.get_file`` from Keras' URL, hash-checked.

A local path can always be given instead of "imagenet" (offline machines). Files are read with
h5py and mapped by weight/layer name, falling back to Keras' own topological order when names
differ; shapes are always checked and a mismatch raises ``ValueError`` naming the expected file.
"""
import hashlib
import logging
import os
import re

import h5py
import numpy as np

TF2CV_MODEL_STORE_DIR = os.path.join("~", ".tensorflow", "models")
_TF2CV_RELEASES_URL = "https://github.com/osmr/imgclsmob/releases/download"


# ----------------------------------------------------------------------------------------------
# Locating files
# ----------------------------------------------------------------------------------------------
def tf2cv_weights_file_name(model_name):
    """Released file name, e.g. ``resnet50-0604-728800bf.tf2.h5``."""
    from tf2cv.models import model_store
    error, sha1_hash, _ = model_store.get_model_name_suffix_data(model_name)
    return "{}-{}-{}.tf2.h5".format(model_name, error, sha1_hash[:8])


def file_digest(path, algorithm):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_local_path(path, expected_file_name, where):
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            "Weights file {!r} not found. Expected the ImageNet weights file {!r} (put it in {} "
            "and use weights='imagenet', or pass its path).".format(
                path, expected_file_name, where))
    return path


def resolve_tf2cv_weights(model_name, weights, store_dir=TF2CV_MODEL_STORE_DIR):
    """Path of the tf2cv weights to load for ``weights`` ("imagenet" | None | local path)."""
    if weights is None:
        return None
    file_name = tf2cv_weights_file_name(model_name)
    store_dir = os.path.expanduser(store_dir)
    if weights != "imagenet":
        return _check_local_path(weights, file_name, store_dir)
    from tf2cv.models import model_store
    _, sha1_hash, release_tag = model_store.get_model_name_suffix_data(model_name)
    local_path = os.path.join(store_dir, file_name)
    if os.path.isfile(local_path):
        if file_digest(local_path, "sha1") != sha1_hash:
            raise ValueError(
                "{} exists but its SHA-1 differs from tf2cv's released {}; delete it to "
                "re-download, or pass its path as the weights argument to load it anyway.".format(
                    local_path, file_name))
        return local_path
    url = "{}/{}/{}.zip".format(_TF2CV_RELEASES_URL, release_tag, file_name)
    try:
        return model_store.get_model_file(model_name, local_model_store_dir_path=store_dir)
    except Exception as error:  # network errors come in many types; all mean "not available"
        raise FileNotFoundError(
            "Could not obtain tf2cv ImageNet weights {} ({}: {}). On an offline machine download "
            "{} elsewhere, unzip it into {}/ and retry, or pass the .tf2.h5 path as weights."
            .format(
                file_name, type(error).__name__, error, url, store_dir)) from error


def keras_models_dir():
    """Keras' download cache, ``$KERAS_HOME/models`` (default ``~/.keras/models``)."""
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(keras_home, "models")


def resolve_keras_weights(file_name, origin, file_hash, weights, cache_dir=None):
    """Path of the Keras notop weights for ``weights`` ("imagenet" | None | local path)."""
    if weights is None:
        return None
    models_dir = keras_models_dir() if cache_dir is None else os.path.join(cache_dir, "models")
    if weights != "imagenet":
        return _check_local_path(weights, file_name, models_dir)
    local_path = os.path.join(models_dir, file_name)
    if os.path.isfile(local_path):
        if file_hash:
            algorithm = "sha256" if len(file_hash) == 64 else "md5"
            if file_digest(local_path, algorithm) != file_hash:
                raise ValueError(
                    "{} exists but its {} differs from Keras' released file; delete it to "
                    "re-download, or pass its path as the weights argument to load it anyway."
                    .format(local_path, algorithm))
        return local_path
    from utils.tf_env import keras
    try:
        return keras.utils.get_file(file_name, origin, cache_subdir="models", file_hash=file_hash,
                                    cache_dir=cache_dir)
    except Exception as error:  # network errors come in many types; all mean "not available"
        raise FileNotFoundError(
            "Could not obtain Keras ImageNet weights {} ({}: {}). On an offline machine download "
            "{} elsewhere into {}/ and retry, or pass the .h5 path as weights.".format(
                file_name, type(error).__name__, error, origin, models_dir)) from error


# ----------------------------------------------------------------------------------------------
# Reading Keras-2 HDF5 weight files
# ----------------------------------------------------------------------------------------------
def _decode(values):
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def read_h5_weights(path):
    """Weights of a Keras 2 ``save_weights``/``save`` .h5 file, in file (topological) order.

    Returns a list of ``(layer_name, [(weight_name, array), ...])``.
    """
    try:
        stream = h5py.File(path, "r")
    except OSError as error:
        raise ValueError("{} is not a readable HDF5 weights file ({}).".format(
            path, error)) from error
    with stream:
        root = stream["model_weights"] if "model_weights" in stream else stream
        if "layer_names" not in root.attrs:
            raise ValueError("{} is not a Keras .h5 weights file (no 'layer_names' attribute)."
                             .format(path))
        layers = []
        for layer_name in _decode(root.attrs["layer_names"]):
            group = root[layer_name]
            weight_names = _decode(group.attrs.get("weight_names", []))
            layers.append((layer_name, [(w, np.asarray(group[w])) for w in weight_names]))
    return layers


def _assign(pairs, description):
    """Assign ``[(variable, value)]`` after checking every shape."""
    for variable, value in pairs:
        if tuple(variable.shape) != tuple(value.shape):
            raise ValueError("{}: shape {} of {} does not match {} in the file.".format(
                description, tuple(variable.shape), variable.name, tuple(value.shape)))
    for variable, value in pairs:
        variable.assign(value)


# ----------------------------------------------------------------------------------------------
# tf2cv files -> our tf2cv blocks
# ----------------------------------------------------------------------------------------------
_TF2CV_ROOT_TOKEN = re.compile(r"^(init_block|stage\d+)$")


def tf2cv_weight_key(weight_name):
    """Canonical key of a tf2cv weight name, independent of the enclosing name scopes.

    ``features/features/stage1/stage1/unit1/body/conv1/conv/conv/kernel:0`` (file) and
    ``stage1/stage1/unit1/body/conv1/conv/conv/kernel:0`` (our block) both give
    ``stage1/unit1/body/conv1/conv/conv/kernel``. None if the name is outside the feature stages
    (e.g. the classifier ``output1``).
    """
    parts = re.sub(r":\d+$", "", weight_name).split("/")
    for index, part in enumerate(parts):
        if _TF2CV_ROOT_TOKEN.match(part):
            rest = parts[index + 1:]
            while rest and rest[0] == part:  # SimpleSequential prefixes children with its name
                rest = rest[1:]
            return "/".join([part] + rest)
    return None


def load_tf2cv_weights(blocks, path, expected_file_name):
    """Load a tf2cv ``.tf2.h5`` file into our tf2cv ``blocks`` (without ``preprocess_input``).

    Maps by canonical weight name; if the names differ (other TF versions scope names
    differently) falls back to Keras' topological order, which for the ``features`` group is all
    trainable weights of init_block, stage1..4, then all non-trainable ones.
    """
    where = "{} (expected {})".format(path, expected_file_name)
    file_layers = read_h5_weights(path)
    # tf2cv models hold ``features`` (what we need) and the classifier ``output1``.
    if any(name == "features" for name, _ in file_layers):
        file_layers = [item for item in file_layers if item[0] == "features"]
    else:
        file_layers = [item for item in file_layers if not item[0].startswith("output")]
    file_weights = [item for _, weights in file_layers for item in weights]
    by_key = {tf2cv_weight_key(name): value for name, value in file_weights}
    variables = [v for block in blocks for v in block.weights]
    keys = [tf2cv_weight_key(v.name) for v in variables]
    missing = [k for k in keys if k not in by_key]
    if not missing and None not in by_key and len(by_key) == len(variables) == len(file_weights):
        _assign([(v, by_key[k]) for v, k in zip(variables, keys)], where)
        return
    ordered = ([v for block in blocks for v in block.trainable_weights]
               + [v for block in blocks for v in block.non_trainable_weights])
    if len(ordered) == len(file_weights) and all(
            tuple(v.shape) == value.shape for v, (_, value) in zip(ordered, file_weights)):
        logging.warning("Weight names in %s do not match the tf2cv layout (e.g. %s); loaded them "
                        "in Keras' topological order (all shapes match).", path,
                        missing[:1] or "count differs")
        _assign([(v, value) for v, (_, value) in zip(ordered, file_weights)], where)
        return
    raise ValueError(
        "Weights file {} does not match this backbone: {} of our {} weights are missing from it "
        "(e.g. {}) and it holds {} feature weights. Is it {}?".format(
            path, len(missing), len(variables), missing[:3], len(file_weights), expected_file_name))


# ----------------------------------------------------------------------------------------------
# Keras notop files -> a functional Keras model
# ----------------------------------------------------------------------------------------------
def load_keras_weights(model, path, expected_file_name, optional_layer_types=("Normalization",)):
    """Load a Keras notop ``.h5`` file into functional ``model`` by layer name.

    Every layer with weights must be in the file (except ``optional_layer_types``, whose weights
    come from their config) and every weighted layer of the file must be used. Falls back to
    Keras' topological order (``load_weights`` without ``by_name``) when layer names differ.
    """
    where = "{} (expected {})".format(path, expected_file_name)
    file_layers = [(name, weights) for name, weights in read_h5_weights(path) if weights]
    by_name = dict(file_layers)
    model_layers = [layer for layer in model.layers if layer.weights]
    required = [layer for layer in model_layers
                if type(layer).__name__ not in optional_layer_types or layer.name in by_name]
    missing = [layer.name for layer in required if layer.name not in by_name]
    if not missing and len(required) == len(file_layers):
        pairs = []
        for layer in required:
            values = [value for _, value in by_name[layer.name]]
            if len(values) != len(layer.weights):
                raise ValueError("{}: layer {} has {} weights, the file {}.".format(
                    where, layer.name, len(layer.weights), len(values)))
            pairs.extend(zip(layer.weights, values))
        _assign(pairs, where)
        return
    if len(required) == len(file_layers) and all(
            len(layer.weights) == len(weights) and all(
                tuple(v.shape) == value.shape for v, (_, value) in zip(layer.weights, weights))
            for layer, (_, weights) in zip(required, file_layers)):
        logging.warning("Layer names in %s differ from the model's (e.g. %s); loaded them in "
                        "topological order (all shapes match).", path, missing[:1])
        _assign([(v, value) for layer, (_, weights) in zip(required, file_layers)
                 for v, (_, value) in zip(layer.weights, weights)], where)
        return
    unused = sorted(set(by_name) - {layer.name for layer in required})
    raise ValueError(
        "Weights file {} does not match this backbone: {} layers missing from it (e.g. {}), {} "
        "unused layers in it (e.g. {}). Is it {}?".format(
            path, len(missing), missing[:3], len(unused), unused[:3], expected_file_name))
