"""Embeddings of any images from a trained run, as its evaluation computes them.

    extractor = FeatureExtractor.from_run("results/Market1501_resnet50")
    features = extractor.extract(["a.jpg", "b.jpg"])     # or a folder's paths, or uint8 arrays
    paths, features = extractor.extract_folder("my_images/")

Features are float32 (N, D), each row L2-normalised; images are read and resized like the
evaluator's (OpenCV, bilinear) and flip-averaged when the run's evaluation was.
"""
import os

import cv2
import numpy as np

from datasets.common import IMAGE_EXTENSIONS, is_image_file_name
from datasets.image_check import check_image_files
from pipeline.feature_extraction import extract_features, predict_function


def l2_normalize(features):
    """Rows scaled to unit length (an all-zero row stays zero)."""
    features = np.asarray(features, np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, np.float32(1e-12))


def list_images(folder, recursive=False):
    """Sorted image files of ``folder`` (with ``recursive``, of its sub-folders too)."""
    folder = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(folder):
        raise FileNotFoundError("image folder {} does not exist.".format(folder))
    if recursive:
        paths = [os.path.join(root, name) for root, _, names in os.walk(folder)
                 for name in names if is_image_file_name(name)]
    else:
        paths = [entry.path for entry in os.scandir(folder)
                 if entry.is_file() and is_image_file_name(entry.name)]
    if not paths:
        raise ValueError("folder {} holds no image ({}){}.".format(
            folder, "/".join(IMAGE_EXTENSIONS), "" if recursive else
            " directly inside it; pass recursive=True (--recursive) to search sub-folders"))
    return sorted(paths)


class FeatureExtractor:
    """Wraps an inference model: images in, L2-normalised float32 embeddings out."""

    def __init__(self, inference_model, image_height, image_width,
                 use_horizontal_flipping=False, batch_size=64, workers=2, fingerprint=None,
                 config=None):
        self.inference_model = inference_model
        self.image_height, self.image_width = int(image_height), int(image_width)
        self.use_horizontal_flipping = bool(use_horizontal_flipping)
        self.batch_size, self.workers = int(batch_size), int(workers)
        self.fingerprint, self.config = fingerprint, config

    @classmethod
    def from_run(cls, path, batch_size=None, workers=None):
        """From a run folder or its ``training_model.h5`` (``config.json`` beside it)."""
        from inference.run_loading import load_run
        run = load_run(path)
        config = run.config
        return cls(run.models.inference_model, config.data.image_height,
                   config.data.image_width,
                   config.evaluation.use_horizontal_flipping_in_evaluation,
                   batch_size=batch_size or config.batch_size,
                   workers=workers or config.data.workers, fingerprint=run.fingerprint,
                   config=config)

    @property
    def input_shape(self):
        return (self.image_height, self.image_width, 3)

    def extract(self, images, progress=True):
        """Embeddings of ``images``: image file paths, or uint8 RGB arrays (one (N, H, W, 3)
        array or a list of (H, W, 3) arrays of any size, resized to the model's)."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)
        images = list(images)
        if not images:
            raise ValueError("No image given: nothing to extract features from.")
        if all(isinstance(image, (str, os.PathLike)) for image in images):
            check_image_files(images, "input", workers=self.workers)
            features = extract_features(
                self.inference_model, images, self.image_height, self.image_width,
                batch_size=self.batch_size, use_horizontal_flipping=self.use_horizontal_flipping,
                progress=progress, workers=self.workers)
        elif all(isinstance(image, np.ndarray) for image in images):
            features = self._extract_arrays(images)
        else:
            raise TypeError("Pass image file paths or uint8 RGB arrays, not a mixture "
                            "(got {}).".format(sorted({type(image).__name__ for image in images})))
        return l2_normalize(features)

    def extract_folder(self, folder, recursive=False, progress=True):
        """``(paths, features)`` of every image in ``folder``, paths sorted."""
        paths = list_images(folder, recursive)
        return paths, self.extract(paths, progress=progress)

    def _extract_arrays(self, images):
        predict = predict_function(self.inference_model, self.image_height, self.image_width,
                                   self.use_horizontal_flipping)
        chunks = []
        for start in range(0, len(images), self.batch_size):
            batch = np.stack([self._resized(image, start + offset) for offset, image in
                              enumerate(images[start:start + self.batch_size])])
            chunks.append(predict(batch).numpy())
        return np.concatenate(chunks)

    def _resized(self, image, index):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError("Image {} must be a uint8 RGB array of shape (H, W, 3), got {} "
                             "{}.".format(index, image.dtype, image.shape))
        if image.shape[:2] != (self.image_height, self.image_width):
            image = cv2.resize(image, (self.image_width, self.image_height),
                               interpolation=cv2.INTER_LINEAR)
        return image
