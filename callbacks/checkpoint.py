"""Checkpoints: the selected model (HDF5 weights, written atomically) and the resume state."""
import json
import math
import os

import h5py
import numpy as np

from utils.files import atomic_path
from utils.tf_env import tf, keras

METADATA_ATTRIBUTE = "reid_metadata"


def _finite_loss(logs):
    loss = (logs or {}).get("loss")
    return loss is None or math.isfinite(float(loss))


def save_model_weights(model, path, metadata):
    """Save `model`'s weights to HDF5 atomically, with `metadata` (backbone, classes, ...)
    stored as a JSON attribute so a mismatched checkpoint can be rejected clearly."""
    with atomic_path(path) as temporary_path:
        model.save_weights(temporary_path)
        with h5py.File(temporary_path, "a") as file:
            file.attrs[METADATA_ATTRIBUTE] = json.dumps(metadata, sort_keys=True)


def read_checkpoint_metadata(path):
    with h5py.File(path, "r") as file:
        text = file.attrs.get(METADATA_ATTRIBUTE)
    return None if text is None else json.loads(text)


def checkpoint_num_classes(path):
    """The class count a checkpoint records, or None (unreadable, or no metadata)."""
    try:
        metadata = read_checkpoint_metadata(path)
    except OSError:
        return None  # load_model_weights names the problem
    return None if not metadata or "num_classes" not in metadata else int(metadata["num_classes"])


def load_model_weights(model, path, expected_metadata, load=None):
    """Load weights saved by `save_model_weights`, checking they fit this model first.

    `load(path)` does the loading (default `model.load_weights`)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            "--pretrained_model_file_path {!r} does not exist. Pass the training_model.h5 "
            "written by a training run.".format(path))
    try:
        metadata = read_checkpoint_metadata(path)
    except OSError as error:
        raise ValueError("--pretrained_model_file_path {!r} is not an HDF5 weights file "
                         "({}).".format(path, error)) from error
    if metadata is not None:
        mismatches = ["{}: checkpoint has {!r}, this run has {!r}".format(
            key, metadata[key], value) for key, value in expected_metadata.items()
            if key in metadata and metadata[key] != value]
        if mismatches:
            raise ValueError(
                "The checkpoint {} was trained with a different model: {}. Pass the same "
                "flags as the training run (e.g. --backbone_model_name, --dataset_name).".format(
                    path, "; ".join(mismatches)))
    try:
        (load or model.load_weights)(path)
    except (ValueError, KeyError) as error:
        raise ValueError(
            "The weights in {} do not fit this model ({}). It was probably trained with another "
            "backbone, class count or head; pass the flags of its training run.".format(
                path, error)) from error
    return metadata


class ModelSelectionCheckpoint(keras.callbacks.Callback):
    """Saves the training model when `monitor` improves (mode max), or at every epoch when
    `monitor` is None (keep the last epoch). Must run after the evaluators. ``model``: the
    model to save, if not the one being fitted (a distributed run saves the chief's copy)."""

    def __init__(self, path, metadata, monitor=None, best=-np.inf, model=None):
        super().__init__()
        self.path, self.metadata, self.monitor = path, metadata, monitor
        self.best = best
        self.saved_model = model

    def _target(self):
        return self.model if self.saved_model is None else self.saved_model

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not _finite_loss(logs):
            return
        if self.monitor is None:
            save_model_weights(self._target(), self.path,
                               dict(self.metadata, epoch=epoch + 1))
            return
        value = logs.get(self.monitor)
        if value is None:
            return
        if value > self.best:
            print("Epoch {}: {} improved from {:.5f} to {:.5f}, saving model to {}".format(
                epoch + 1, self.monitor, self.best, value, self.path))
            self.best = float(value)
            save_model_weights(self._target(), self.path,
                               dict(self.metadata, epoch=epoch + 1, **{self.monitor: self.best}))


class ResumeState:
    """Weights, optimizer slots, stage, epoch and best monitored value, in one TF checkpoint
    (written with CheckpointManager: the index file is updated only after the data exists)."""

    def __init__(self, folder, model, optimizer, restore_folder=None, **extra):
        """``extra``: more trackable state to keep (e.g. center losses and their optimizer);
        None values are left out. ``restore_folder`` (default ``folder``) is where the state
        is read from: a multi-worker run's other workers read the chief's and write their own
        copy elsewhere (every worker must write, as distributed variables are read together)."""
        self.stage = tf.Variable(0, dtype=tf.int64, trainable=False, name="stage")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.best = tf.Variable(-np.inf, dtype=tf.float64, trainable=False, name="best")
        extra = {name: value for name, value in extra.items() if value not in (None, [], {})}
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, stage=self.stage,
                                              epoch=self.epoch, best=self.best, **extra)
        self.manager = tf.train.CheckpointManager(self.checkpoint, folder, max_to_keep=2)
        self.restore_manager = self.manager if restore_folder in (None, folder) else \
            tf.train.CheckpointManager(self.checkpoint, restore_folder, max_to_keep=None)

    @property
    def latest_checkpoint(self):
        return self.restore_manager.latest_checkpoint

    @property
    def exists(self):
        return self.latest_checkpoint is not None

    def restore(self):
        """Restores the latest state; returns (stage, next epoch, best)."""
        self.checkpoint.restore(self.latest_checkpoint).expect_partial()
        return int(self.stage.numpy()), int(self.epoch.numpy()), float(self.best.numpy())

    def save(self, stage, next_epoch, best):
        self.stage.assign(stage)
        self.epoch.assign(next_epoch)
        self.best.assign(best)
        self.manager.save()


class ResumeCheckpoint(keras.callbacks.Callback):
    """Writes the resume state at the end of every epoch of a stage."""

    def __init__(self, resume_state, stage, selection_checkpoint=None):
        super().__init__()
        self.resume_state, self.stage = resume_state, stage
        self.selection_checkpoint = selection_checkpoint

    def on_epoch_end(self, epoch, logs=None):
        if not _finite_loss(logs):
            return
        best = self.selection_checkpoint.best if self.selection_checkpoint else -np.inf
        self.resume_state.save(self.stage, epoch + 1, best)


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss; the last good checkpoints stay intact."""

    def __init__(self):
        super().__init__()
        self.failure = None

    def on_train_batch_end(self, batch, logs=None):
        if not _finite_loss(logs):
            self.failure = "loss became {} at batch {} of epoch {}".format(
                (logs or {}).get("loss"), batch + 1, self._epoch + 1)
            self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
