"""Loading ImageNet weight files: tf2cv .tf2.h5 and Keras notop .h5, written by the tests.

The reference files are saved by tf2cv's / Keras' own models with random weights; nothing is
downloaded (the downloaders are replaced by failing stubs where "imagenet" is resolved).
"""
import hashlib
import logging

import h5py
import numpy as np
import pytest

from utils.tf_env import keras

from applications import get_backbone
from applications import weights as weights_lib

H, W = 64, 32
RNG = np.random.default_rng(1)
TF2CV_RESNET18_FILE = "resnet18-0870-e1d3f22e.tf2.h5"
KERAS_RESNET50_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


def _image(batch=2):
    return RNG.uniform(0, 255, size=(batch, H, W, 3)).astype("float32")


def _torch_mode(x):
    return ((x / 255.0 - np.array([0.485, 0.456, 0.406])) /
            np.array([0.229, 0.224, 0.225])).astype("float32")


def _read_layers(path):
    """Keras-2 h5 layout read independently: [(layer, [(weight_name, array)])]."""
    with h5py.File(path, "r") as f:
        out = []
        for layer in f.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else layer
            names = [n.decode() if isinstance(n, bytes) else n
                     for n in f[layer].attrs["weight_names"]]
            out.append((layer, [(n, np.asarray(f[layer][n])) for n in names]))
    return out


def _write_layers(path, layers):
    """Write the Keras-2 h5 weights layout (root attr layer_names, per-group weight_names)."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [name.encode() for name, _ in layers]
        f.attrs["backend"] = b"tensorflow"
        for name, weights in layers:
            group = f.create_group(name)
            group.attrs["weight_names"] = [w.encode() for w, _ in weights]
            for weight_name, value in weights:
                group.create_dataset(weight_name, data=value)


def _perturb_batchnorm_statistics(model):
    """Random BN moving statistics so that every weight differs from its initial value."""
    for variable in model.weights:
        if "moving_mean" in variable.name:
            variable.assign(RNG.normal(0, 0.1, size=variable.shape))
        elif "moving_variance" in variable.name:
            variable.assign(RNG.uniform(0.5, 1.5, size=variable.shape))


# ---------------------------------------------------------------------------------------------
# tf2cv
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tf2cv_resnet18(tmp_path_factory):
    """(tf2cv resnet18 with random weights, path of its save_weights .tf2.h5 file)."""
    from tf2cv.models.resnet import resnet18
    net = resnet18(pretrained=False)
    net.build((1, 224, 224, 3))  # tf2cv's 7x7 final pool needs 224x224
    _perturb_batchnorm_statistics(net)
    path = tmp_path_factory.mktemp("tf2cv") / TF2CV_RESNET18_FILE
    net.save_weights(str(path))
    return net, str(path)


def _assert_blocks_hold(backbone, net):
    children = net.features.children
    for block, child in zip(backbone.blocks[1:], children):
        ours, reference = block.get_weights(), child.get_weights()
        assert len(ours) == len(reference) > 0
        for a, b in zip(ours, reference):
            np.testing.assert_array_equal(a, b)


def test_tf2cv_file_loads_every_weight(tf2cv_resnet18):
    net, path = tf2cv_resnet18
    backbone = get_backbone("resnet18", (H, W, 3), weights=path)
    assert backbone.weights_path == path
    _assert_blocks_hold(backbone, net)
    # Forward: stride-identical stages equal tf2cv's own intermediate outputs.
    x = _image()
    ours = backbone.blocks[0](x)
    reference = _torch_mode(x)
    for block, child in zip(backbone.blocks[1:-1], net.features.children[:4]):
        ours = block(ours, training=False)
        reference = child(reference, training=False)
        np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-4, atol=1e-4)


def test_tf2cv_last_stride_2_equals_tf2cv_features(tf2cv_resnet18):
    net, path = tf2cv_resnet18
    backbone = get_backbone("resnet18", (H, W, 3), weights=path, last_stride=2)
    x = _image()
    reference = _torch_mode(x)
    for child in net.features.children[:5]:
        reference = child(reference, training=False)
    np.testing.assert_allclose(backbone(x, training=False).numpy(), reference.numpy(),
                               rtol=1e-4, atol=1e-4)


def test_tf2cv_mapping_is_by_name_not_order(tf2cv_resnet18, tmp_path):
    net, path = tf2cv_resnet18
    layers = _read_layers(path)
    shuffled = []
    for name, weights in layers:
        order = RNG.permutation(len(weights))
        shuffled.append((name, [weights[i] for i in order]))
    shuffled_path = str(tmp_path / TF2CV_RESNET18_FILE)
    _write_layers(shuffled_path, shuffled)
    _assert_blocks_hold(get_backbone("resnet18", (H, W, 3), weights=shuffled_path), net)


def test_tf2cv_unknown_names_fall_back_to_keras_order(tf2cv_resnet18, tmp_path, caplog):
    net, path = tf2cv_resnet18
    renamed = [(name, [("w{}:0".format(i), value) for i, (_, value) in enumerate(weights)])
               for name, weights in _read_layers(path)]
    renamed_path = str(tmp_path / "renamed.h5")
    _write_layers(renamed_path, renamed)
    with caplog.at_level(logging.WARNING):
        backbone = get_backbone("resnet18", (H, W, 3), weights=renamed_path)
    assert "topological order" in caplog.text
    _assert_blocks_hold(backbone, net)


def test_tf2cv_wrong_file_is_rejected(tf2cv_resnet18):
    _, path = tf2cv_resnet18
    with pytest.raises(ValueError) as info:
        get_backbone("resnet34", (H, W, 3), weights=path)
    assert "resnet34-0744-7f7d70e7.tf2.h5" in str(info.value)


def test_tf2cv_missing_local_file(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        get_backbone("resnet50", (H, W, 3), weights=str(tmp_path / "nope.h5"))
    message = str(info.value)
    assert "resnet50-0604-728800bf.tf2.h5" in message and ".tensorflow/models" in message


def test_tf2cv_imagenet_uses_model_store(tf2cv_resnet18, tmp_path, monkeypatch):
    from tf2cv.models import model_store
    _, path = tf2cv_resnet18
    monkeypatch.setenv("HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("no network in tests")
    monkeypatch.setattr(model_store, "get_model_file", offline)
    store = tmp_path / ".tensorflow" / "models"
    # Absent: the download fails -> clear error with the file name, URL and directory.
    with pytest.raises(FileNotFoundError) as info:
        weights_lib.resolve_tf2cv_weights("resnet18", "imagenet")
    message = str(info.value)
    assert TF2CV_RESNET18_FILE in message and str(store) in message
    assert "github.com/osmr/imgclsmob/releases/download/v0.0.478/" in message
    # Present but not the released file: refused (no silent re-download).
    store.mkdir(parents=True)
    local = store / TF2CV_RESNET18_FILE
    local.write_bytes(open(path, "rb").read())
    with pytest.raises(ValueError, match="SHA-1"):
        weights_lib.resolve_tf2cv_weights("resnet18", "imagenet")
    # Present with the released hash (faked: the real file is not available): used as is.
    released_sha1 = model_store.get_model_name_suffix_data("resnet18")[1]
    monkeypatch.setattr(weights_lib, "file_digest", lambda *args: released_sha1)
    assert weights_lib.resolve_tf2cv_weights("resnet18", "imagenet") == str(local)
    assert weights_lib.resolve_tf2cv_weights("resnet18", None) is None


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ibn_resnet50", "resnesta50"])
def test_tf2cv_other_families_load(name, tmp_path):
    from tf2cv.models.ibnresnet import ibn_resnet50
    from tf2cv.models.resnesta import resnesta50
    net = {"ibn_resnet50": ibn_resnet50, "resnesta50": resnesta50}[name](pretrained=False)
    net.build((1, 224, 224, 3))
    _perturb_batchnorm_statistics(net)
    path = str(tmp_path / weights_lib.tf2cv_weights_file_name(name))
    net.save_weights(path)
    backbone = get_backbone(name, (H, W, 3), weights=path)
    _assert_blocks_hold(backbone, net)
    x = _image()
    ours, reference = backbone.blocks[0](x), _torch_mode(x)
    for block, child in zip(backbone.blocks[1:-1], net.features.children[:4]):
        ours, reference = block(ours, training=False), child(reference, training=False)
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Keras
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keras_resnet50(tmp_path_factory):
    model = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(H, W, 3))
    _perturb_batchnorm_statistics(model)
    path = tmp_path_factory.mktemp("keras") / KERAS_RESNET50_FILE
    model.save_weights(str(path))
    return model, str(path)


def _assert_layers_hold(backbone, model):
    ours = {layer.name: layer for block in backbone.blocks for layer in block.layers}
    count = 0
    for layer in model.layers:
        if layer.weights:
            for a, b in zip(ours[layer.name].get_weights(), layer.get_weights()):
                np.testing.assert_array_equal(a, b)
            count += 1
    assert count > 0


def test_keras_file_loads_every_weight(keras_resnet50):
    model, path = keras_resnet50
    backbone = get_backbone("ResNet50", (H, W, 3), weights=path)
    _assert_layers_hold(backbone, model)
    # conv1..conv4 keep Keras' strides, so stage3 equals Keras' conv4_block6_out.
    x = _image()
    caffe = (x[..., ::-1] - np.array([103.939, 116.779, 123.68])).astype("float32")
    reference = keras.Model(model.input, model.get_layer("conv4_block6_out").output)
    ours = x
    for block in backbone.blocks[:-1]:
        ours = block(ours, training=False)
    np.testing.assert_allclose(ours.numpy(), reference(caffe, training=False).numpy(),
                               rtol=1e-3, atol=1e-3)


def test_keras_mobilenet_v3_file_loads(tmp_path):
    model = keras.applications.MobileNetV3Small(include_top=False, weights=None,
                                                input_shape=(H, W, 3))
    _perturb_batchnorm_statistics(model)
    path = str(tmp_path / "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5")
    model.save_weights(path)
    backbone = get_backbone("MobileNetV3Small", (H, W, 3), weights=path)
    _assert_layers_hold(backbone, model)


def test_keras_unknown_names_fall_back_to_order(keras_resnet50, tmp_path, caplog):
    model, path = keras_resnet50
    renamed = [("layer{}".format(i), weights) for i, (_, weights) in enumerate(
        item for item in _read_layers(path) if item[1])]
    renamed_path = str(tmp_path / "renamed.h5")
    _write_layers(renamed_path, renamed)
    with caplog.at_level(logging.WARNING):
        backbone = get_backbone("ResNet50", (H, W, 3), weights=renamed_path)
    assert "topological order" in caplog.text
    _assert_layers_hold(backbone, model)


def test_keras_wrong_file_is_rejected(keras_resnet50):
    _, path = keras_resnet50
    with pytest.raises(ValueError) as info:
        get_backbone("ResNet50V2", (H, W, 3), weights=path)
    assert "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5" in str(info.value)


def test_not_an_h5_file(tmp_path):
    path = tmp_path / "broken.h5"
    path.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="HDF5"):
        get_backbone("resnet18", (H, W, 3), weights=str(path))


def test_keras_imagenet_uses_keras_cache(keras_resnet50, tmp_path, monkeypatch):
    _, path = keras_resnet50
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))

    def offline(*args, **kwargs):
        raise OSError("no network in tests")
    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(FileNotFoundError) as info:
        get_backbone("ResNet50", (H, W, 3), weights="imagenet")
    message = str(info.value)
    assert KERAS_RESNET50_FILE in message and str(tmp_path / "keras_home" / "models") in message
    assert "storage.googleapis.com/tensorflow/keras-applications/resnet/" in message
    # A cached file that is not Keras' release (hash differs) is refused.
    cache = tmp_path / "keras_home" / "models"
    cache.mkdir(parents=True)
    (cache / KERAS_RESNET50_FILE).write_bytes(open(path, "rb").read())
    with pytest.raises(ValueError, match="md5"):
        get_backbone("ResNet50", (H, W, 3), weights="imagenet")
    md5 = hashlib.md5(open(path, "rb").read()).hexdigest()
    assert weights_lib.resolve_keras_weights(KERAS_RESNET50_FILE, "unused://", md5,
                                             "imagenet") == str(cache / KERAS_RESNET50_FILE)


def test_keras_missing_local_file(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        get_backbone("MobileNetV3Large", (H, W, 3), weights=str(tmp_path / "x.h5"))
    message = str(info.value)
    assert "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5" in message
    assert weights_lib.keras_models_dir() in message
