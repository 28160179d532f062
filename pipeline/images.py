"""Image reading and the threaded batch producer shared by the training and inference inputs.

Images are decoded and resized with OpenCV (``cv2.imread`` BGR -> ``cv2.resize(img, (width,
height))`` bilinear -> RGB uint8, as the originals) in a thread pool: OpenCV releases the GIL,
and tf-keras 2.21's ``fit`` no longer takes ``workers`` / ``use_multiprocessing``, so batches are
produced by Python threads. Decoded training images can be cached in memory (Market-1501 train
at 128x64 is 318 MB uint8).
"""
import collections
import os
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from datasets.image_check import (BadImagesError, find_bad_images, format_bad_images,
                                  image_file_problem)

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

    Caching is lazy (an image is decoded on first use, or all at once by ``fill``) and bounded by
    ``cache_max_bytes``: when the whole set does not fit, only the first indices that fit are
    cached and the rest are re-read every time. Safe to use from several threads (a race only
    decodes an image twice).
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

    def fill(self, workers=2, progress=False):
        """Decode every cacheable image into the cache now and check the rest, so a bad file
        stops the run before training instead of when the sampler first draws it.

        Images beyond the cache capacity get the cheap header check of
        ``datasets.image_check``. Raises ``BadImagesError`` naming every bad file at once.
        ``progress`` prints the count of decoded images to stderr about every 10%.
        """
        start = time.perf_counter()
        pending = np.flatnonzero(~self._cached)
        step = max(1, len(pending) // 10)

        def decode(index):
            path = self.image_paths[index]
            try:
                self._cache[index] = read_image(path, self.image_height, self.image_width)
            except (OSError, ValueError, cv2.error):
                # read_image's message is for a single file; the cheap check gives a short reason.
                return path, (image_file_problem(path) or
                              "the header is valid but the image data cannot be decoded")
            self._cached[index] = True
            return None

        bad = []
        with ThreadPoolExecutor(max(1, int(workers)), thread_name_prefix="image-fill") as pool:
            for done, failure in enumerate(pool.map(decode, pending), 1):
                if failure is not None:
                    bad.append(failure)
                if progress and (done % step == 0 or done == len(pending)):
                    print(f"Decoded {done}/{len(pending)} training images into the cache "
                          f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
        bad += find_bad_images(self.image_paths[self.capacity:], workers)
        if bad:
            raise BadImagesError(format_bad_images(bad, "training", len(self.image_paths)), bad)


class OrderedBatchProducer:
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


def check_workers(workers):
    if int(workers) != workers or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}.")
    return int(workers)
