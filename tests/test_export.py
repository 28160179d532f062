"""Exports of the inference model (SavedModel, TFLite float32 / float16, ONNX): each run by its
own runtime gives `FeatureExtractor.extract`'s embeddings, for a Keras-applications backbone
with flip averaging and a tf2cv one (layers without get_config) without; the export command
from a run folder; failures leave nothing behind."""
import importlib.util
import json
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest

from conftest import make_config

HEIGHT, WIDTH = 64, 32
REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_ONNX = all(importlib.util.find_spec(name) for name in ("tf2onnx", "onnx", "onnxruntime"))
ONNX_SKIP = "ONNX export needs tf2onnx, onnx and onnxruntime (pip install tf2onnx==1.17.0 " \
            "onnxruntime==1.32.0 onnx==1.23.2)"
ALL_FORMATS = ("saved_model", "tflite", "tflite_float16") + (("onnx",) if HAS_ONNX else ())
TOLERANCE = {"saved_model": 1e-4, "tflite": 1e-4, "tflite_float16": 1e-2, "onnx": 1e-4}


def tiny_models(backbone_name, seed=0):
    """A 64x32 FlipReID model (one stripe), see `perturb`."""
    from utils.tf_env import tf
    from applications import get_backbone
    from applications.reid_model import build_reid_models
    tf.random.set_seed(seed)
    backbone = get_backbone(backbone_name, input_shape=(HEIGHT, WIDTH, 3), weights=None)
    return perturb(build_reid_models(backbone, num_classes=5, region_num=1, verbose=False), seed)


def perturb(models, seed=0):
    """Random BatchNorm scales, BatchNorm statistics set from a batch (as training would: a
    fresh MobileNetV3's activations shrink about tenfold per stage, so every image would get
    the same embedding) and GeM powers off 1, so that every kind of weight shows."""
    from utils.tf_env import keras
    generator = np.random.default_rng(seed)
    layers = [layer for layer in models.inference_model.submodules
              if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        if layer.gamma is not None:
            layer.gamma.assign(generator.uniform(0.5, 1.0, layer.gamma.shape))
        layer.momentum = 0.0  # the moving statistics become this batch's
    models.inference_model(images(8, seed=seed + 100).astype(np.float32), training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    for layer in models.gem_layers:
        layer.power.assign(2.5)
    return models


def images(count, seed=1):
    from inference.export import check_images
    return check_images(HEIGHT, WIDTH, count, seed)


def export_case(tmp_path_factory, backbone_name, flip, formats):
    from inference.export import export_formats
    from inference.feature_extractor import FeatureExtractor
    models = tiny_models(backbone_name)
    extractor = FeatureExtractor(models.inference_model, HEIGHT, WIDTH,
                                 use_horizontal_flipping=flip, fingerprint="0123abcd")
    folder = str(tmp_path_factory.mktemp("export") / backbone_name)
    summary = export_formats(extractor, folder, formats, check=False)
    return extractor, folder, summary


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder as training leaves it (config.json + training_model.h5; MobileNetV3Small,
    flip averaging in evaluation), written from freshly built models instead of trained ones."""
    from callbacks.checkpoint import save_model_weights
    from inference.run_loading import CHECKPOINT_FILE_NAME
    from training.config import CONFIG_FILE_NAME
    from training.trainer import Trainer
    config = make_config(backbone_model_name="MobileNetV3Small", backbone_weights="none",
                         image_height=HEIGHT, image_width=WIDTH, region_num=1,
                         use_horizontal_flipping_in_evaluation=True,
                         output_folder_path=str(tmp_path_factory.mktemp("run")))
    models = perturb(Trainer(config).build_models(num_classes=5))
    os.makedirs(config.run_folder)
    config.save(os.path.join(config.run_folder, CONFIG_FILE_NAME))
    save_model_weights(models.training_model,
                       os.path.join(config.run_folder, CHECKPOINT_FILE_NAME),
                       dict(config.checkpoint_metadata_values, num_classes=5))
    return config.run_folder


@pytest.fixture(scope="module")
def keras_family(run_folder, tmp_path_factory):
    """The run folder exported by the command in every format (each checked by the command),
    and the extractor the command loaded (loading the run again would cost seconds)."""
    from inference.feature_extractor import FeatureExtractor
    from tools.export_model import export_run
    folder = str(tmp_path_factory.mktemp("export") / "MobileNetV3Small")
    loaded, from_run = [], FeatureExtractor.from_run

    def recording_from_run(*args, **kwargs):
        loaded.append(from_run(*args, **kwargs))
        return loaded[-1]

    with mock.patch.object(FeatureExtractor, "from_run", recording_from_run):
        summary = export_run(run_folder, folder, ",".join(ALL_FORMATS))
    extractor, = loaded
    return extractor, folder, summary


@pytest.fixture(scope="module")
def small_model():
    """A tiny Keras model, for the failure paths (they need no re-ID network)."""
    from utils.tf_env import keras
    inputs = keras.Input((HEIGHT, WIDTH, 3))
    outputs = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(inputs))
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def tf2cv_family(tmp_path_factory):
    """tf2cv's resnet18 without flip averaging; float16 TFLite and ONNX are in the slow test."""
    return export_case(tmp_path_factory, "resnet18", False, ("saved_model", "tflite"))


def check_parity(extractor, folder, name):
    from inference.export import FORMAT_FILE_NAMES, load_exported
    runner = load_exported(os.path.join(folder, FORMAT_FILE_NAMES[name]))
    batch = images(5)
    expected = extractor.extract(batch)
    got = runner(batch)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE[name])
    # Another batch size (the TFLite input is resized), and one image alone.
    np.testing.assert_allclose(runner(batch[:2]), expected[:2], rtol=0, atol=TOLERANCE[name])
    np.testing.assert_allclose(runner(batch[3:4]), expected[3:4], rtol=0, atol=TOLERANCE[name])
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=TOLERANCE[name])
    # Per row too: 1e-2 per element alone would be loose for ~1000-d unit vectors.
    assert np.linalg.norm(got - expected, axis=1).max() < TOLERANCE[name]
    # The images' embeddings must differ by far more, or a broken export could pass.
    distances = np.linalg.norm(expected[:, None] - expected[None], axis=2)
    assert distances[~np.eye(len(batch), dtype=bool)].min() > 10 * TOLERANCE[name]
    return runner


@pytest.mark.parametrize("name", ALL_FORMATS)
def test_each_format_matches_the_extractor_with_flip_averaging(keras_family, name):
    extractor, folder, summary = keras_family
    runner = check_parity(extractor, folder, name)
    assert runner.fingerprint == extractor.fingerprint
    assert (runner.image_height, runner.image_width) == (HEIGHT, WIDTH)
    assert runner.metadata["use_horizontal_flipping"] is True
    assert summary["formats"][name]["bytes"] > 0


@pytest.mark.parametrize("name", ["saved_model", "tflite"])
def test_a_tf2cv_backbone_exports_without_keras_serialisation(tf2cv_family, name):
    extractor, folder, _ = tf2cv_family
    assert not extractor.use_horizontal_flipping
    check_parity(extractor, folder, name)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_ONNX, reason=ONNX_SKIP)
def test_a_tf2cv_backbone_exports_to_float16_tflite_and_onnx(tmp_path_factory):
    extractor, folder, _ = export_case(tmp_path_factory, "resnet18", True,
                                       ("tflite_float16", "onnx"))
    for name in ("tflite_float16", "onnx"):
        check_parity(extractor, folder, name)


def test_the_files_name_their_input_output_and_metadata(keras_family):
    from utils.tf_env import tf
    from inference.export import load_exported
    extractor, folder, summary = keras_family
    with open(os.path.join(folder, "export.json")) as file:
        assert json.load(file) == summary
    assert summary["embedding_size"] == extractor.extract(images(1)).shape[1]
    assert (summary["image_height"], summary["image_width"]) == (HEIGHT, WIDTH)
    assert summary["fingerprint"] == extractor.fingerprint

    loaded = tf.saved_model.load(os.path.join(folder, "saved_model"))
    assert loaded.fingerprint.numpy().decode() == extractor.fingerprint
    assert loaded.image_size.numpy().tolist() == [HEIGHT, WIDTH]
    assert bool(loaded.use_horizontal_flipping.numpy())
    signature = loaded.signatures["serving_default"]
    assert list(signature.structured_input_signature[1]) == ["images"]
    assert signature.structured_input_signature[1]["images"].dtype == tf.uint8
    assert list(signature.structured_outputs) == ["embedding"]

    tflite = load_exported(os.path.join(folder, "model_float16.tflite"))
    assert tflite.metadata["format"] == "tflite_float16"
    assert tflite.interpreter.get_input_details()[0]["dtype"] == np.uint8
    assert list(tflite.interpreter.get_signature_list()["serving_default"]["outputs"]) == \
        ["embedding"]
    if HAS_ONNX:
        import onnx
        model = onnx.load(os.path.join(folder, "model.onnx"))
        properties = {entry.key: json.loads(entry.value) for entry in model.metadata_props}
        assert properties["fingerprint"] == extractor.fingerprint
        assert properties["image_height"] == HEIGHT and properties["use_horizontal_flipping"]
        assert [value.name for value in model.graph.input] == ["images"]
        assert [value.name for value in model.graph.output] == ["embedding"]


def test_runners_refuse_images_of_another_shape_or_type(keras_family):
    from inference.export import load_exported
    _, folder, _ = keras_family
    runner = load_exported(os.path.join(folder, "model.tflite"))
    with pytest.raises(ValueError, match=r"uint8 RGB images of shape \(N, 64, 32, 3\)"):
        runner(images(2).astype(np.float32))
    with pytest.raises(ValueError, match="resize them first"):
        runner(np.zeros((2, 128, 64, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_exported(os.path.join(folder, "missing.tflite"))
    with pytest.raises(ValueError, match="not a SavedModel folder"):
        load_exported(folder)


def test_tensorflows_own_tflite_interpreter_falls_back_from_xnnpack(keras_family, monkeypatch):
    """TF 2.21's XNNPACK refuses GeM's clamp; without LiteRT the runner uses the built-in
    kernels, with the same embeddings."""
    from utils.tf_env import tf
    from inference import export
    extractor, folder, _ = keras_family
    monkeypatch.setattr(export, "tflite_interpreter_class", lambda: tf.lite.Interpreter)
    with pytest.warns(UserWarning, match="XNNPACK failed"):
        runner = check_parity(extractor, folder, "tflite")
    assert runner.runtime == "tensorflow (no XNNPACK)"


def test_a_missing_converter_is_named_with_its_install_command(small_model, monkeypatch,
                                                               tmp_path):
    from inference import export
    extractor = small_model
    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import fails as if not installed
    with pytest.raises(export.ExportDependencyError, match="pip install tf2onnx"):
        export.export_onnx(extractor, str(tmp_path / "model.onnx"))
    with pytest.raises(export.ExportDependencyError, match="pip install tf2onnx"):
        export.export_formats(extractor, str(tmp_path / "out"), "saved_model,onnx")
    assert os.listdir(tmp_path) == []


def test_a_failed_export_leaves_nothing_and_an_old_one_intact(small_model, monkeypatch,
                                                              tmp_path):
    from inference import export
    extractor = small_model
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("old export")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export.export_formats(extractor, str(target), "tflite")

    def broken(*args, **kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(export, "convert_tflite", broken)
    with pytest.raises(RuntimeError, match="converter crashed"):
        export.export_formats(extractor, str(target), "saved_model,tflite", overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no staging folder left
    assert os.listdir(target) == ["keep.txt"]
    with pytest.raises(RuntimeError, match="converter crashed"):
        export.export_tflite(extractor, str(tmp_path / "model.tflite"))
    assert sorted(os.listdir(tmp_path)) == ["out"]
    with pytest.raises(ValueError, match=r"Unknown export format\(s\) 'tflite16'"):
        export.parse_formats("saved_model,tflite16")


def test_the_command_writes_every_format_with_its_metadata(keras_family):
    extractor, folder, summary = keras_family
    assert sorted(os.listdir(folder)) == sorted(
        ["export.json", "saved_model", "model.tflite", "model.tflite.json",
         "model_float16.tflite", "model_float16.tflite.json"]
        + (["model.onnx", "model.onnx.json"] if HAS_ONNX else []))
    assert extractor.use_horizontal_flipping
    assert summary["fingerprint"] == extractor.fingerprint
    for name, entry in summary["formats"].items():
        assert entry["max_abs_difference"] <= TOLERANCE[name]


def test_the_command_fails_clearly_before_loading_anything(run_folder, tmp_path):
    from tools.export_model import export_run
    with pytest.raises(FileNotFoundError, match="does not exist. Pass a run folder"):
        export_run(str(tmp_path / "no_run"), str(tmp_path / "out"), "saved_model")
    with pytest.raises(ValueError, match=r"Unknown export format\(s\) 'torchscript'"):
        export_run(run_folder, str(tmp_path / "out"), "saved_model,torchscript")
    assert os.listdir(tmp_path) == []
    # From the command line: absl flags, non-zero exit, the message on stderr.
    result = subprocess.run(
        [sys.executable, "-m", "tools.export_model", "--model_path", run_folder,
         "--output_folder", str(tmp_path / "out"), "--formats", "pickle"],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Unknown export format(s) 'pickle'" in result.stderr
    assert not (tmp_path / "out").exists()
