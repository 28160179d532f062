"""Callbacks that log model parameters worth watching: GeM powers and adaptive L2 factors."""
import os
import pickle
import time
from collections import OrderedDict

import numpy as np

from callbacks.history_logger import load_history, write_epoch_csv
from utils.files import atomic_write
from utils.tf_env import keras


class InspectGeMPoolingParameters(keras.callbacks.Callback):
    """Logs `<gem layer name>_power` for every GeM layer."""

    def __init__(self, gem_layers):
        super().__init__()
        self.gem_layers = list(gem_layers)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            for layer in self.gem_layers:
                logs["{}_power".format(layer.name)] = float(layer.power.numpy())


class InspectRegularizationFactors(keras.callbacks.Callback):
    """Tracks each adaptive L2 term's effective factor amplitude*clip(0.2*theta+0.5, 0, 1).

    Every factor (keyed as the originals: `<layer>_<param>_regularizer_l2_regularization_factor`)
    goes to `regularization_factors.csv` and `.pkl` in `output_folder_path`, with one PNG of all
    curves; only their min / mean / max enter the Keras logs, since hundreds of keys would
    flood the progress line.
    """

    def __init__(self, regularization_terms, output_folder_path=None):
        super().__init__()
        self.regularization_terms = regularization_terms
        self.output_folder_path = output_folder_path
        self.history = load_history(os.path.join(
            output_folder_path, "regularization_factors.pkl")) if output_folder_path \
            else OrderedDict()

    def on_epoch_end(self, epoch, logs=None):
        from applications.regularization import regularization_factors
        factors = regularization_factors(self.regularization_terms)
        if not factors:
            return
        values = np.array(list(factors.values()))
        if logs is not None:
            logs.update(regularization_factor_min=values.min(),
                        regularization_factor_mean=values.mean(),
                        regularization_factor_max=values.max())
        for key, value in factors.items():
            self.history.setdefault(key, OrderedDict())[epoch] = float(value)
        if self.output_folder_path:
            self._write()

    def _write(self):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        base = os.path.join(self.output_folder_path, "regularization_factors")
        with atomic_write(base + ".pkl", "wb") as file:
            pickle.dump(self.history, file, protocol=pickle.HIGHEST_PROTOCOL)
        write_epoch_csv(base + ".csv", self.history)
        figure, axis = plt.subplots(figsize=(6, 4))
        for values in self.history.values():
            axis.plot(np.array(list(values)) + 1, list(values.values()), alpha=0.3, linewidth=0.8)
        axis.set_xlabel("epoch")
        axis.set_ylabel("effective L2 factor")
        axis.set_title("{} adaptive L2 factors".format(len(self.history)), fontsize=8)
        figure.tight_layout()
        with atomic_write(base + ".png", "wb") as file:
            figure.savefig(file, format="png")
        plt.close(figure)


class ThroughputLogger(keras.callbacks.Callback):
    """Logs `train_images_per_second` of each epoch (train steps only, no evaluation)."""

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = batch_size

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._steps = time.perf_counter(), 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        self._end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._steps:
            logs["train_images_per_second"] = self._steps * self.batch_size / max(
                self._end - self._start, 1e-9)
