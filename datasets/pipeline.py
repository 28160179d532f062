"""Image reading, the training/inference tf.data pipelines and feature extraction (spec §3.1, §7.1).

Images are decoded and resized with OpenCV (exactly as the original: ``cv2.imread`` BGR ->
``cv2.resize(img, (width, height))`` bilinear -> RGB uint8) in a thread pool: OpenCV releases the
GIL, and Keras 3 / TF 2.21 no longer accept ``workers``/``use_multiprocessing`` in ``fit`` (spec §8
item 16), so batches are produced by Python threads and handed to ``tf.data`` with prefetching.
Decoded training images can be cached in memory (Market-1501 train at 128x64 is 318 MB uint8).
"""
import collections
import copy
import os
import queue
import time
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

__all__ = ["read_image", "ImageStore", "make_training_dataset", "make_inference_dataset",
           "extract_features"]

DEFAULT_CACHE_MAX_BYTES = 2 * 1024 ** 3


def read_image(path, image_height, image_width):
    """Read an image file as uint8 RGB of shape (image_height, image_width, 3)."""
    path = os.fspath(path)
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Image file not found: {path!r}. Check the dataset root folder.")
        raise ValueError(f"Could not decode image file {path!r} (corrupt or not an image); "
                         f"remove or replace it.")
    if image.shape[:2] != (image_height, image_width):
        image = cv2.resize(image, (image_width, image_height), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class ImageStore:
    """Reads images by index, optionally caching decoded uint8 images in one preallocated array.

    Caching is lazy (an image is decoded on first use) and bounded by ``cache_max_bytes``: when the
    whole set does not fit, only the first indices that fit are cached and the rest are re-read
    every time. Safe to use from several threads (a race only decodes an image twice).
    """

    def __init__(self, image_paths, image_height, image_width, cache_images=True,
                 cache_max_bytes=DEFAULT_CACHE_MAX_BYTES):
        self.image_paths = [os.fspath(path) for path in image_paths]
        self.image_height = int(image_height)
        self.image_width = int(image_width)
        image_bytes = self.image_height * self.image_width * 3
        capacity = len(self.image_paths) if cache_images else 0
        if cache_images and cache_max_bytes is not None:
            capacity = min(capacity, int(cache_max_bytes) // image_bytes)
            if capacity < len(self.image_paths):
                warnings.warn(
                    f"Image cache limited to {capacity} of {len(self.image_paths)} images "
                    f"({cache_max_bytes / 2 ** 20:.0f} MiB); raise cache_max_bytes to cache all "
                    f"({len(self.image_paths) * image_bytes / 2 ** 20:.0f} MiB needed).")
        self.capacity = capacity
        # np.empty does not touch the pages, so memory is committed only as images get cached.
        self._cache = np.empty((capacity, self.image_height, self.image_width, 3), np.uint8)
        self._cached = np.zeros(capacity, bool)

    def __len__(self):
        return len(self.image_paths)

    def __getitem__(self, index):
        if index < self.capacity:
            if not self._cached[index]:
                self._cache[index] = read_image(self.image_paths[index], self.image_height,
                                                self.image_width)
                self._cached[index] = True
            return self._cache[index]
        return read_image(self.image_paths[index], self.image_height, self.image_width)


class _OrderedBatchProducer:
    """Runs ``make_batch(job)`` for a stream of jobs in a thread pool, yielding results in order.

    At most ``max_in_flight`` batches are computed ahead. Stops when ``jobs`` is exhausted.
    """

    def __init__(self, jobs, make_batch, workers, max_in_flight):
        self.jobs = jobs
        self.make_batch = make_batch
        self.workers = max(1, int(workers))
        self.max_in_flight = max(1, int(max_in_flight))

    def __iter__(self):
        in_flight = collections.deque()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="reid-input") as pool:
            try:
                for job in self.jobs:
                    in_flight.append(pool.submit(self.make_batch, job))
                    if len(in_flight) >= self.max_in_flight:
                        yield in_flight.popleft().result()
                while in_flight:
                    yield in_flight.popleft().result()
            finally:
                for future in in_flight:
                    future.cancel()


def _check_workers(workers):
    if int(workers) != workers or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}.")
    return int(workers)


def _inference_workers(workers, augmentor):
    """Checked worker count; one with an augmentor (not thread-safe)."""
    return 1 if augmentor is not None else _check_workers(workers)


def make_training_dataset(image_paths, labels, sampler, image_height, image_width, augmentor=None,
                          workers=4, cache_images=True, cache_max_bytes=DEFAULT_CACHE_MAX_BYTES,
                          prefetch_batches=None, seed=None, num_batches=None):
    """Training ``tf.data.Dataset`` of (float32 images (B,H,W,3) raw RGB 0..255, int32 labels (B,)).

    Batch order follows ``iter(sampler)`` (a ``PKSampler`` or any iterable of index arrays into
    ``image_paths``/``labels``). The dataset is infinite (pass ``steps_per_epoch`` to ``fit``)
    unless ``num_batches`` is given. Iterating the dataset again continues the sampler's stream.

    Args:
        augmentor: callable uint8 HxWx3 -> uint8 HxWx3 applied per image, or None. Augmentors with a
            ``reseed`` method (``datasets.augmentation``) are copied once per worker thread and, when
            ``seed`` is given, reseeded per batch from (seed, batch index), so the output does not
            depend on thread scheduling. Other callables are shared by all threads.
        workers: threads decoding/augmenting batches (one batch per thread at a time).
        cache_images: keep decoded (pre-augmentation) images in memory, bounded by cache_max_bytes.
        prefetch_batches: batches computed ahead (default 2 * workers).
        seed: makes augmentation reproducible (the sampler has its own seed).
    """
    from utils.tf_env import tf

    labels = np.asarray(labels)
    if len(labels) != len(image_paths):
        raise ValueError(f"labels ({len(labels)}) and image_paths ({len(image_paths)}) must have "
                         f"the same length.")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array (e.g. LabelEncoder-encoded identity "
                         f"IDs), got dtype {labels.dtype} shape {labels.shape}.")
    labels = labels.astype(np.int32)
    workers = _check_workers(workers)
    store = ImageStore(image_paths, image_height, image_width, cache_images, cache_max_bytes)
    height, width = store.image_height, store.image_width

    augmentor_pool = None
    if augmentor is not None and hasattr(augmentor, "reseed"):
        augmentor_pool = queue.SimpleQueue()
        for _ in range(workers):
            worker_augmentor = copy.deepcopy(augmentor)
            # Deep copies would replay the same stream: give each its own entropy (with a seed,
            # every batch is reseeded anyway).
            worker_augmentor.reseed(None)
            augmentor_pool.put(worker_augmentor)

    def make_batch(job):
        batch_index, indices = job
        images = np.empty((len(indices), height, width, 3), np.uint8)
        if augmentor_pool is not None:
            batch_augmentor = augmentor_pool.get()
            try:
                if seed is not None:
                    batch_augmentor.reseed([seed, batch_index])
                for row, index in enumerate(indices):
                    images[row] = batch_augmentor(store[index])
            finally:
                augmentor_pool.put(batch_augmentor)
        else:
            for row, index in enumerate(indices):
                images[row] = store[index] if augmentor is None else augmentor(store[index])
        return images, labels[indices]

    def jobs():
        for batch_index, indices in enumerate(sampler):
            if num_batches is not None and batch_index >= num_batches:
                return
            indices = np.asarray(indices, np.int64)
            if indices.ndim != 1 or (len(indices) and (indices.min() < 0 or
                                                       indices.max() >= len(labels))):
                raise ValueError(f"Sampler yielded invalid row indices for {len(labels)} images: "
                                 f"{indices!r}")
            yield batch_index, indices

    max_in_flight = 2 * workers if prefetch_batches is None else prefetch_batches

    def generator():
        yield from _OrderedBatchProducer(jobs(), make_batch, workers, max_in_flight)

    dataset = tf.data.Dataset.from_generator(generator, output_signature=(
        tf.TensorSpec((None, height, width, 3), tf.uint8), tf.TensorSpec((None,), tf.int32)))
    # uint8 crosses the Python boundary (4x fewer bytes); the cast runs in TF's thread pool.
    dataset = dataset.map(lambda images, batch_labels: (tf.cast(images, tf.float32), batch_labels),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


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

    return _OrderedBatchProducer(range(0, len(image_paths), batch_size), make_batch, workers,
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


def _predict_function(inference_model, image_height, image_width, use_horizontal_flipping):
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
    """Features of ``image_paths`` in order, float32 (N, D) (spec §7.1).

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

    predict = _predict_function(inference_model, image_height, image_width,
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

