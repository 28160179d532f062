"""The training input: PK batches of raw RGB images (decoded, cached, augmented) as tf.data."""
import copy
import queue

import numpy as np

from datasets.image_check import check_image_files
from pipeline.images import DEFAULT_CACHE_MAX_BYTES, ImageStore, OrderedBatchProducer, check_workers


def make_training_dataset(image_paths, labels, sampler, image_height, image_width, augmentor=None,
                          workers=4, cache_images=True, cache_max_bytes=DEFAULT_CACHE_MAX_BYTES,
                          prefetch_batches=None, seed=None, num_batches=None, check_images=True,
                          batch_slices=None):
    """Training ``tf.data.Dataset`` of (float32 images (B,H,W,3) raw RGB 0..255, int32 labels (B,)).

    Batch order follows ``iter(sampler)`` (a ``PKSampler`` or any iterable of index arrays into
    ``image_paths``/``labels``). The dataset is infinite (pass ``steps_per_epoch`` to ``fit``)
    unless ``num_batches`` is given. Iterating the dataset again continues the sampler's stream.

    Args:
        augmentor: callable uint8 HxWx3 -> uint8 HxWx3 applied per image, or None. Augmentors with a
            ``reseed`` method (``pipeline.augmentation``) are copied once per worker thread and, when
            ``seed`` is given, reseeded per batch from (seed, batch index), so the output does not
            depend on thread scheduling. Other callables are shared by all threads.
        workers: threads decoding/augmenting batches (one batch per thread at a time).
        cache_images: keep decoded (pre-augmentation) images in memory, bounded by cache_max_bytes.
        prefetch_batches: batches computed ahead (default 2 * workers).
        seed: makes augmentation reproducible (the sampler has its own seed).
        check_images: before building the dataset, decode every cached image (``ImageStore.fill``)
            and header-check the others, raising ``BadImagesError`` that names all bad files.
        batch_slices: row slices of each sampled batch; each becomes an element of its own, in
            order (a worker's replicas' shares of the global batch). Their augmentation is seeded
            from (seed, batch index, slice start). Default: the whole batch is one element.
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
    workers = check_workers(workers)
    store = ImageStore(image_paths, image_height, image_width, cache_images, cache_max_bytes)
    height, width = store.image_height, store.image_width
    if check_images:
        if cache_images:
            store.fill(workers)
        else:
            check_image_files(image_paths, "training", workers)

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
        seed_key, indices = job
        images = np.empty((len(indices), height, width, 3), np.uint8)
        if augmentor_pool is not None:
            batch_augmentor = augmentor_pool.get()
            try:
                if seed is not None:
                    batch_augmentor.reseed([seed] + seed_key)
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
            if batch_slices is None:
                yield [batch_index], indices
                continue
            for rows in batch_slices:
                yield [batch_index, rows.start or 0], indices[rows]

    max_in_flight = 2 * workers if prefetch_batches is None else prefetch_batches

    def generator():
        yield from OrderedBatchProducer(jobs(), make_batch, workers, max_in_flight)

    dataset = tf.data.Dataset.from_generator(generator, output_signature=(
        tf.TensorSpec((None, height, width, 3), tf.uint8), tf.TensorSpec((None,), tf.int32)))
    # uint8 crosses the Python boundary (4x fewer bytes); the cast runs in TF's thread pool.
    dataset = dataset.map(lambda images, batch_labels: (tf.cast(images, tf.float32), batch_labels),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
