"""Inference input and feature extraction: images in file order -> features (N, D).

The features of an image are the model's outputs concatenated along the feature axis; with
flip averaging they are ``(f(x) + f(mirror(x))) / 2``, as the originals' evaluation computes.
"""
import os
import time
import weakref

import cv2
import numpy as np

from pipeline.images import OrderedBatchProducer, check_workers, read_image


def _inference_workers(workers, augmentor):
    """Checked worker count; one with an augmentor (not thread-safe)."""
    return 1 if augmentor is not None else check_workers(workers)


def _inference_batches(image_paths, image_height, image_width, batch_size, flip, workers,
                       augmentor=None):
    """Yields uint8 batches (B,H,W,3) in file order (augmented by `augmentor` if given)."""
    image_paths = [os.fspath(path) for path in image_paths]

    def make_batch(start):
        images = np.empty((min(batch_size, len(image_paths) - start), image_height, image_width, 3),
                          np.uint8)
        for row in range(len(images)):
            image = read_image(image_paths[start + row], image_height, image_width)
            if augmentor is not None:
                image = augmentor(image)
            images[row] = cv2.flip(image, 1) if flip else image
        return images

    return OrderedBatchProducer(range(0, len(image_paths), batch_size), make_batch, workers,
                                 2 * workers)


def _check_inference_args(image_paths, batch_size):
    if len(image_paths) == 0:
        raise ValueError("image_paths is empty: nothing to extract features from.")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")


def make_inference_dataset(image_paths, image_height, image_width, batch_size=64, flip=False,
                           workers=2, augmentor=None):
    """``tf.data.Dataset`` of float32 raw RGB batches (B,H,W,3) in ``image_paths`` order.

    ``flip=True`` mirrors every image horizontally (``cv2.flip(img, 1)``), as the original
    ``TestDataSequence`` does for flip-averaged evaluation. ``augmentor`` (ALR's augmented test
    passes) is applied to every image; it is not thread-safe, so it forces one worker.
    """
    from utils.tf_env import tf

    _check_inference_args(image_paths, batch_size)
    workers = _inference_workers(workers, augmentor)
    image_paths = list(image_paths)
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(_inference_batches(image_paths, image_height, image_width, int(batch_size),
                                        flip, workers, augmentor)),
        output_signature=tf.TensorSpec((None, image_height, image_width, 3), tf.uint8))
    dataset = dataset.map(lambda images: tf.cast(images, tf.float32),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


_PREDICT_FUNCTIONS = weakref.WeakKeyDictionary()


def predict_function(inference_model, image_height, image_width, use_horizontal_flipping):
    """The traced batch -> features function, kept per model: the evaluator extracts features
    every few epochs and retracing a backbone costs seconds each time."""
    from utils.tf_env import tf

    try:
        functions = _PREDICT_FUNCTIONS.setdefault(inference_model, {})
        model_reference = weakref.ref(inference_model)  # a strong one would keep the key alive
    except TypeError:  # not weakly referenceable: no cache
        functions, model_reference = {}, lambda: inference_model
    key = (image_height, image_width, bool(use_horizontal_flipping))
    if key in functions:
        return functions[key]

    def embed(images):
        outputs = model_reference()(images, training=False)
        if isinstance(outputs, dict):
            outputs = list(outputs.values())
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        outputs = [tf.reshape(tf.cast(output, tf.float32), (tf.shape(output)[0], -1))
                   for output in outputs]
        return tf.concat(outputs, axis=1) if len(outputs) > 1 else outputs[0]

    @tf.function(input_signature=[tf.TensorSpec((None, image_height, image_width, 3), tf.uint8)])
    def predict(images):
        images = tf.cast(images, tf.float32)
        features = embed(images)
        if use_horizontal_flipping:
            features = (features + embed(tf.reverse(images, axis=[2]))) / 2
        return features

    functions[key] = predict
    return predict


def extract_features(inference_model, image_paths, image_height, image_width, batch_size=64,
                     use_horizontal_flipping=False, progress=True, workers=2, return_speed=False,
                     augmentor=None, augmentation_num=1):
    """Features of ``image_paths`` in order, float32 (N, D).

    The model gets raw RGB float32 batches; a list of outputs is concatenated along the feature
    axis (``hstack``). With ``use_horizontal_flipping`` the result is (f(x) + f(flip(x))) / 2,
    where flip mirrors the width axis (same pixels as ``cv2.flip(img, 1)``); each image is read
    once and the mirrored copy is made on the batch. Prints
    ``Speed of feature extraction: X images per second.``; with ``return_speed`` returns
    ``(features, images_per_second)``. With an ``augmentor`` (ALR's
    ``--use_data_augmentation_in_evaluation``) the features are the mean over
    ``augmentation_num`` augmented passes.
    """
    from tqdm import tqdm

    _check_inference_args(image_paths, batch_size)
    workers = _inference_workers(workers, augmentor)
    if augmentor is None and augmentation_num != 1:
        raise ValueError("augmentation_num > 1 needs an augmentor (passes would be identical).")
    image_paths = list(image_paths)

    predict = predict_function(inference_model, image_height, image_width,
                                use_horizontal_flipping)
    start = time.perf_counter()
    features = None
    total = (len(image_paths) + batch_size - 1) // batch_size
    for _ in range(augmentation_num):
        # The threaded producer is iterated directly: behind tf.data's from_generator it stalled
        # at random (a third of the time at 200 instead of 320 images/s with the flip on).
        batches = _inference_batches(image_paths, image_height, image_width, int(batch_size),
                                     False, workers, augmentor)
        chunks = [predict(images).numpy() for images in tqdm(
            batches, total=total, disable=not progress, desc="Extracting features", unit="batch")]
        passed = np.concatenate(chunks).astype(np.float32, copy=False)
        features = passed if features is None else features + passed
    features = features / np.float32(augmentation_num) if augmentation_num > 1 else features
    speed = augmentation_num * len(image_paths) / max(time.perf_counter() - start, 1e-9)
    print("Speed of feature extraction: {:.2f} images per second.".format(speed))
    return (features, speed) if return_speed else features
