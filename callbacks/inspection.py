"""Callbacks that log model parameters worth watching: GeM powers and adaptive L2 factors."""
import time

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
    """Logs each adaptive L2 term's effective factor amplitude*clip(0.2*theta+0.5, 0, 1)."""

    def __init__(self, regularization_terms):
        super().__init__()
        self.regularization_terms = regularization_terms

    def on_epoch_end(self, epoch, logs=None):
        from applications.regularization import regularization_factors
        if logs is not None:
            logs.update(regularization_factors(self.regularization_terms))


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
