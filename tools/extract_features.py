"""Extracts the embeddings of a folder of images with a trained run's model into an ``.npz``.

    python -m tools.extract_features --model_path results/Market1501_resnet50 \
        --image_folder my_images --output_path my_images.npz

The file holds ``features`` (float32 (N, D), L2-normalised), ``image_file_paths``,
``fingerprint`` (the model's; a gallery index refuses queries of another model) and, when every
file name parses with ``--file_name_pattern``, ``identity_ID`` and ``camera_ID``.
"""
import os
import sys

import numpy as np

from datasets.common import DEFAULT_FILE_NAME_PATTERN, compile_file_name_pattern, parse_file_names
from utils.files import atomic_write


def parse_identities(paths, pattern=DEFAULT_FILE_NAME_PATTERN):
    """``(identity_IDs, camera_IDs)`` int64 arrays when every file name matches ``pattern``
    (as the Folder dataset parses them), else None: the identities are then unknown."""
    pattern = compile_file_name_pattern(pattern)  # a bad pattern is an error, not "unknown"
    try:
        identities, cameras = parse_file_names(paths, pattern, "", "")
    except ValueError:
        return None
    return np.asarray(identities, np.int64), np.asarray(cameras, np.int64)


def save_features(path, features, image_file_paths, fingerprint=None, identities=None):
    """Writes the ``.npz`` atomically (an interrupted write leaves no half file)."""
    arrays = dict(features=np.asarray(features, np.float32),
                  image_file_paths=np.asarray([os.fspath(p) for p in image_file_paths], np.str_))
    if fingerprint is not None:
        arrays["fingerprint"] = np.asarray(fingerprint, np.str_)
    if identities is not None:
        arrays["identity_ID"], arrays["camera_ID"] = identities
    with atomic_write(path, "wb") as file:
        np.savez(file, **arrays)
    return path


def extract_folder(model_path, image_folder, output_path, recursive=False, batch_size=None,
                   file_name_pattern=DEFAULT_FILE_NAME_PATTERN):
    """Extracts ``image_folder`` with the run at ``model_path``; returns the ``.npz`` path."""
    from inference.feature_extractor import FeatureExtractor, list_images

    if not output_path.endswith(".npz"):
        raise ValueError("--output_path must end with .npz (got {}).".format(output_path))
    paths = list_images(image_folder, recursive)  # before the model loads: fail fast
    extractor = FeatureExtractor.from_run(model_path, batch_size=batch_size)
    features = extractor.extract(paths)
    identities = parse_identities(paths, file_name_pattern)
    save_features(output_path, features, paths, extractor.fingerprint, identities)
    print("Wrote {} features of dimension {} to {}{}.".format(
        len(features), features.shape[1], output_path,
        "" if identities is None else " (with identity and camera IDs from the file names)"))
    return output_path


def main(argv):
    from absl import flags
    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise SystemExit("Unexpected arguments: {}".format(" ".join(argv[1:])))
    extract_folder(FLAGS.model_path, FLAGS.image_folder, FLAGS.output_path, FLAGS.recursive,
                   FLAGS.batch_size, FLAGS.file_name_pattern)


def define_flags():
    from absl import flags
    flags.DEFINE_string("model_path", None, "Run folder, or its training_model.h5.",
                        required=True)
    flags.DEFINE_string("image_folder", None, "Folder of images to embed.", required=True)
    flags.DEFINE_string("output_path", None, "The .npz to write.", required=True)
    flags.DEFINE_boolean("recursive", False, "Also embed the images in sub-folders.")
    flags.DEFINE_integer("batch_size", None, "Images per batch (default: the run's P x K).")
    flags.DEFINE_string("file_name_pattern", DEFAULT_FILE_NAME_PATTERN,
                        "Regex with groups pid and camid; when every file name matches, the "
                        "identity and camera IDs are saved too.")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import utils.tf_env  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
    from absl import app
    define_flags()
    app.run(main)
