"""Per-epoch log history: one PNG per key, a pickle, a CSV and TensorBoard events."""
import csv
import os
import pickle
import re
from collections import OrderedDict

import numpy as np

from utils.files import atomic_write
from utils.tf_env import tf, keras

# Keras' progress bar cannot average dict-valued logs, so evaluators log ranks as flat scalars
# ("..._rank-1_accuracy"); the logger regroups them into the original "..._rank_to_accuracy_dict".
_RANK_KEY = re.compile(r"^(?P<prefix>.+)_(?P<rank>rank-\d+ accuracy)$")


def group_rank_keys(logs):
    """Turn flat "<prefix>_rank-k accuracy" keys into "<prefix>_rank_to_accuracy_dict" dicts."""
    grouped = OrderedDict()
    for key, value in logs.items():
        match = _RANK_KEY.match(key)
        if match is None:
            grouped[key] = value
        else:
            grouped.setdefault(match["prefix"] + "_rank_to_accuracy_dict",
                               OrderedDict())[match["rank"]] = value
    return grouped


def write_epoch_csv(path, columns):
    """Atomically writes {column: {epoch: value}} as a CSV with one row per (1-based) epoch."""
    epochs = sorted({epoch for values in columns.values() for epoch in values})
    with atomic_write(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["epoch"] + list(columns))
        for epoch in epochs:
            writer.writerow([epoch + 1] + [values.get(epoch, "") for values in columns.values()])


def load_history(path):
    """The {key: {epoch: value}} pickle at `path`, or an empty one (a resumed run continues it)."""
    if os.path.isfile(path):
        with open(path, "rb") as file:
            return pickle.load(file)
    return OrderedDict()


def _to_python(value):
    if isinstance(value, dict):
        return OrderedDict((k, _to_python(v)) for k, v in value.items())
    return float(np.asarray(value))


class HistoryLogger(keras.callbacks.Callback):
    """Writes `<folder>/<key>.png`, `accumulated_logs_dict.pkl` ({key: {epoch: value}}),
    `history.csv` and TensorBoard logs, rewritten every epoch.

    `epoch_offset` lets a resumed run continue the same curves.
    """

    def __init__(self, output_folder_path, accumulated_logs_dict=None):
        super().__init__()
        self.output_folder_path = output_folder_path
        os.makedirs(output_folder_path, exist_ok=True)
        if accumulated_logs_dict is None:
            accumulated_logs_dict = load_history(
                os.path.join(output_folder_path, "accumulated_logs_dict.pkl"))
        self.accumulated_logs_dict = accumulated_logs_dict
        self._summary_writer = tf.summary.create_file_writer(
            os.path.join(output_folder_path, "tensorboard"))

    def on_epoch_end(self, epoch, logs=None):
        logs = group_rank_keys(logs or {})
        for key, value in logs.items():
            self.accumulated_logs_dict.setdefault(key, OrderedDict())[epoch] = _to_python(value)
        for key, value in logs.items():
            value = _to_python(value)
            if isinstance(value, dict):
                print("{} {}".format(key, " ".join(
                    "{} {:.6f}".format(k, v) for k, v in value.items())))
            else:
                print("{} {:.6f}".format(key, value))
        self._write_pickle()
        self._write_csv()
        self._write_tensorboard(epoch, logs)
        for key in logs:
            self._plot(key)

    def _write_pickle(self):
        path = os.path.join(self.output_folder_path, "accumulated_logs_dict.pkl")
        with atomic_write(path, "wb") as file:
            pickle.dump(self.accumulated_logs_dict, file, protocol=pickle.HIGHEST_PROTOCOL)

    def _flat_columns(self):
        columns = OrderedDict()
        for key, epoch_to_value in self.accumulated_logs_dict.items():
            for epoch, value in epoch_to_value.items():
                if isinstance(value, dict):
                    for sub_key, sub_value in value.items():
                        columns.setdefault("{}/{}".format(key, sub_key), {})[epoch] = sub_value
                else:
                    columns.setdefault(key, {})[epoch] = value
        return columns

    def _write_csv(self):
        write_epoch_csv(os.path.join(self.output_folder_path, "history.csv"),
                        self._flat_columns())

    def _write_tensorboard(self, epoch, logs):
        with self._summary_writer.as_default():
            for key, value in logs.items():
                value = _to_python(value)
                items = value.items() if isinstance(value, dict) else [(None, value)]
                for sub_key, sub_value in items:
                    name = key if sub_key is None else "{}/{}".format(key, sub_key)
                    tf.summary.scalar(name, sub_value, step=epoch + 1)
        self._summary_writer.flush()

    def _plot(self, key):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epoch_to_value = self.accumulated_logs_dict[key]
        epochs = np.array(sorted(epoch_to_value)) + 1
        figure, axis = plt.subplots(figsize=(6, 4))
        first = epoch_to_value[epochs[0] - 1]
        if isinstance(first, dict):
            for sub_key in first:
                axis.plot(epochs, [epoch_to_value[e - 1].get(sub_key, np.nan) for e in epochs],
                          marker="o", label=sub_key)
            axis.legend()
        else:
            axis.plot(epochs, [epoch_to_value[e - 1] for e in epochs], marker="o")
        axis.set_xlabel("epoch")
        axis.set_title(key, fontsize=8)
        axis.grid(True, alpha=0.3)
        figure.tight_layout()
        path = os.path.join(self.output_folder_path, key.replace(os.sep, "_") + ".png")
        with atomic_write(path, "wb") as file:
            figure.savefig(file, format="png")
        plt.close(figure)
