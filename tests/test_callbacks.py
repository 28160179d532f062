"""HistoryLogger outputs, atomic files, checkpoint metadata checks and the NaN guard."""
import csv
import os
import pickle

import numpy as np
import pytest

from utils.files import atomic_path, atomic_write
from utils.tf_env import keras


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(str(path), "w") as file:
            file.write("half")
            raise RuntimeError("crash")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]
    with atomic_write(str(path), "w") as file:
        file.write("new")
    assert path.read_text() == "new"


def test_atomic_path_keeps_extension_and_replaces(tmp_path):
    target = tmp_path / "m.h5"
    with atomic_path(str(target)) as temporary:
        assert temporary.endswith(".h5") and temporary != str(target)
        open(temporary, "w").write("x")
    assert target.read_text() == "x"


def test_history_logger_writes_png_csv_pickle_and_groups_ranks(tmp_path):
    from callbacks.history_logger import HistoryLogger
    logger = HistoryLogger(str(tmp_path))
    for epoch, (loss, rank1) in enumerate([(2.0, 0.1), (1.5, 0.3)]):
        logger.on_epoch_end(epoch, {"loss": loss, "test_cosine_False_rank-1 accuracy": rank1,
                                    "test_cosine_False_rank-5 accuracy": rank1 + 0.2,
                                    "test_cosine_False_mAP_score": rank1 / 2})
    with open(tmp_path / "accumulated_logs_dict.pkl", "rb") as file:
        history = pickle.load(file)
    assert history["loss"] == {0: 2.0, 1: 1.5}
    assert history["test_cosine_False_rank_to_accuracy_dict"][1] == {
        "rank-1 accuracy": 0.3, "rank-5 accuracy": pytest.approx(0.5)}
    for key in ("loss", "test_cosine_False_rank_to_accuracy_dict", "test_cosine_False_mAP_score"):
        png = tmp_path / (key + ".png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.reader(open(tmp_path / "history.csv")))
    assert rows[0][:2] == ["epoch", "loss"] and rows[2][:2] == ["2", "1.5"]
    assert "test_cosine_False_rank_to_accuracy_dict/rank-1 accuracy" in rows[0]
    assert any(name.startswith("events") for name in os.listdir(tmp_path / "tensorboard"))
    # A new logger on the same folder (a resumed run) continues the history.
    HistoryLogger(str(tmp_path)).on_epoch_end(2, {"loss": 1.0})
    with open(tmp_path / "accumulated_logs_dict.pkl", "rb") as file:
        assert pickle.load(file)["loss"] == {0: 2.0, 1: 1.5, 2: 1.0}


def _tiny_model(classes):
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(classes, name="dense")(inputs))


def test_checkpoint_round_trip_and_mismatch_errors(tmp_path):
    from callbacks.checkpoint import load_model_weights, save_model_weights
    path = str(tmp_path / "training_model.h5")
    model = _tiny_model(3)
    metadata = {"backbone_model_name": "resnet50", "num_classes": 3}
    save_model_weights(model, path, metadata)
    other = _tiny_model(3)
    load_model_weights(other, path, metadata)
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="backbone_model_name"):
        load_model_weights(_tiny_model(3), path, dict(metadata, backbone_model_name="ResNet50"))
    with pytest.raises(ValueError, match="num_classes"):
        load_model_weights(_tiny_model(5), path, dict(metadata, num_classes=5))
    # A file without our metadata still fails clearly when the shapes differ.
    model.save_weights(str(tmp_path / "foreign.h5"))
    with pytest.raises(ValueError, match="do not fit this model"):
        load_model_weights(_tiny_model(5), str(tmp_path / "foreign.h5"), {})
    with pytest.raises(FileNotFoundError, match="pretrained_model_file_path"):
        load_model_weights(model, str(tmp_path / "missing.h5"), {})


def test_checkpoint_of_another_classifier_head_is_refused(tmp_path):
    # Cosine and softmax classifiers have kernels of the same shape, so only the metadata tells.
    from conftest import make_config
    from callbacks.checkpoint import load_model_weights, save_model_weights
    config = make_config(backbone_model_name="MobileNetV3Small", image_height=64, image_width=32,
                         classifier_head="cosface")
    metadata = dict(config.checkpoint_metadata_values, num_classes=3)
    assert metadata["classifier_head"] == "cosface" and metadata["region_num"] == 2
    path = str(tmp_path / "training_model.h5")
    save_model_weights(_tiny_model(3), path, metadata)
    with pytest.raises(ValueError, match="classifier_head"):
        load_model_weights(_tiny_model(3), path, dict(metadata, classifier_head="softmax"))


def test_model_selection_keeps_best_and_skips_nan(tmp_path):
    from callbacks.checkpoint import ModelSelectionCheckpoint, read_checkpoint_metadata
    path = str(tmp_path / "m.h5")
    callback = ModelSelectionCheckpoint(path, {"num_classes": 3}, monitor="valid_mAP")
    callback.set_model(_tiny_model(3))
    callback.on_epoch_end(0, {"loss": 1.0, "valid_mAP": 0.2})
    callback.on_epoch_end(1, {"loss": 1.0, "valid_mAP": 0.1})
    callback.on_epoch_end(2, {"loss": float("nan"), "valid_mAP": 0.9})
    assert read_checkpoint_metadata(path)["epoch"] == 1 and callback.best == 0.2


def test_nan_guard_stops_training():
    from callbacks.checkpoint import NaNGuard
    model = _tiny_model(1)
    model.compile(keras.optimizers.SGD(1e30), "mse")
    guard = NaNGuard()
    x = np.full((64, 4), 1e20, np.float32)
    history = model.fit(x, np.ones((64, 1)), batch_size=8, epochs=3, verbose=0,
                        callbacks=[guard])
    assert guard.failure is not None and "epoch 1" in guard.failure
    assert len(history.history["loss"]) == 1


def test_regularization_factor_log_survives_a_resumed_run(tmp_path):
    """A new callback on the same folder (--resume) continues the factors already written."""
    from callbacks.inspection import InspectRegularizationFactors

    class Term:  # stands in for applications.regularization.RegularizationTerm
        def __init__(self, value):
            self.value = value

    import applications.regularization as regularization
    original = regularization.regularization_factors
    regularization.regularization_factors = lambda terms: {"dense_kernel": terms[0].value}
    try:
        InspectRegularizationFactors([Term(0.5)], str(tmp_path)).on_epoch_end(0, {})
        InspectRegularizationFactors([Term(0.4)], str(tmp_path)).on_epoch_end(1, {})
    finally:
        regularization.regularization_factors = original
    with open(tmp_path / "regularization_factors.pkl", "rb") as file:
        assert pickle.load(file) == {"dense_kernel": {0: 0.5, 1: 0.4}}
    rows = list(csv.reader(open(tmp_path / "regularization_factors.csv")))
    assert rows == [["epoch", "dense_kernel"], ["1", "0.5"], ["2", "0.4"]]
