"""Query / gallery features a run saved with ``--save_data_to_disk`` (``test.npz``, ``valid.npz``).

TensorFlow-free, so that metrics and re-ranking can be recomputed from the file alone.
"""
import os
import zipfile

import numpy as np

FEATURE_KEYS = ("query_image_features_array", "gallery_image_features_array")
LABEL_KEYS = ("query_identity_ID_array", "gallery_identity_ID_array",
              "query_camera_ID_array", "gallery_camera_ID_array")
REQUIRED_KEYS = FEATURE_KEYS + LABEL_KEYS
# written by newer runs only; evaluation does not need them
OPTIONAL_KEYS = ("query_image_file_path_array", "gallery_image_file_path_array")

_HOW_TO_SAVE = ("a run with --save_data_to_disk (training or --evaluation_only) writes test.npz, "
                "and valid.npz with --validation_size > 0, into its run folder")


def load_saved_features(path):
    """The arrays of a saved ``<split>.npz``, checked: dict keyed by ``REQUIRED_KEYS`` (and the
    ``OPTIONAL_KEYS`` present). Features are float32 (Q, D) / (G, D), ids int64.

    Raises FileNotFoundError / ValueError naming the file, the problem and the keys expected.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file; {_HOW_TO_SAVE}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a NumPy .npz archive ({error}); {_HOW_TO_SAVE}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single array, not an .npz archive with the keys "
                         f"{list(REQUIRED_KEYS)}")
    with archive:
        missing = [key for key in REQUIRED_KEYS if key not in archive.files]
        if missing:
            raise ValueError(f"{path} lacks the key(s) {missing}; expected {list(REQUIRED_KEYS)} "
                             f"(found {sorted(archive.files)}); {_HOW_TO_SAVE}")
        data = {}
        for key in REQUIRED_KEYS:
            try:
                data[key] = archive[key]
            except ValueError as error:  # object arrays need pickle, which we do not load
                raise ValueError(f"{path}: cannot read {key} ({error})") from None
        for key in OPTIONAL_KEYS:
            if key in archive.files:
                try:
                    data[key] = archive[key]
                except ValueError:
                    # object-dtype paths need pickle; they are not needed for evaluation
                    print(f"Note: {path}: {key} is skipped (an object array would need "
                          f"pickle; save file paths as np.str_).")
    return _checked(path, data)


def _checked(path, data):
    for key in FEATURE_KEYS:
        x = data[key]
        if x.ndim != 2 or x.shape[0] == 0 or x.dtype.kind not in "iuf":
            raise ValueError(f"{path}: {key} must be a non-empty 2-D array of real numbers "
                             f"(num_images, feature_dim), got shape {x.shape} dtype {x.dtype}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{path}: {key} contains NaN or inf; the model that extracted "
                             f"them diverged, re-extract the features from a sound checkpoint")
        data[key] = np.ascontiguousarray(x, dtype=np.float32)
    query, gallery = data["query_image_features_array"], data["gallery_image_features_array"]
    if query.shape[1] != gallery.shape[1]:
        raise ValueError(f"{path}: query features have dimension {query.shape[1]} but gallery "
                         f"features {gallery.shape[1]}")
    for key in LABEL_KEYS + OPTIONAL_KEYS:
        if key not in data:
            continue
        side = key.split("_", 1)[0]
        expected = len(data[f"{side}_image_features_array"])
        x = data[key]
        if x.ndim != 1 or len(x) != expected:
            raise ValueError(f"{path}: {key} must be 1-D with one entry per {side} image "
                             f"({expected}), got shape {x.shape}")
        if key in LABEL_KEYS:
            if x.dtype.kind == "f" and np.all(np.isfinite(x)) and np.all(x == np.round(x)):
                x = x.astype(np.int64)
            if x.dtype.kind not in "iub":
                raise ValueError(f"{path}: {key} must hold integer ids, got dtype {x.dtype}")
            data[key] = x.astype(np.int64, copy=False)
    return data


def evaluation_arguments(data):
    """The positional arguments of ``metrics.evaluate_features`` from ``load_saved_features``."""
    return tuple(data[key] for key in REQUIRED_KEYS)
