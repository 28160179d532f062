"""One PK training batch, augmented as the training input augments it, drawn as a PNG grid.

The batch is the one ``pipeline.training_input.make_training_dataset`` would produce as batch
``batch_index`` from the same sampler, augmentor and seed: the sampler (deep-copied, so the
caller's stream does not advance) supplies the indices, ``pipeline.images`` reads the images and
a copy of the augmentor reseeded from (seed, batch index) augments them, as the input's worker
threads do. TensorFlow-free.
"""
import copy
import os

import cv2
import numpy as np

from pipeline.images import ImageStore
from visualization.grid import CAPTION_FONT_SIZE, Row, Tile, render, text_width

MIN_DISPLAY_HEIGHT = 192  # smaller inputs (128x64) are enlarged, by whole pixels


def training_batch(image_paths, sampler, augmentor, image_height, image_width, seed=None,
                   batch_index=0):
    """``(indices int64 (B,), images uint8 (B, H, W, 3) RGB)`` of batch ``batch_index``."""
    if int(batch_index) < 0:
        raise ValueError(f"batch_index must be >= 0, got {batch_index}")
    sampler = copy.deepcopy(sampler)  # drawing must not shift the batches training will see
    for index, indices in enumerate(sampler):
        if index == batch_index:
            break
    else:
        raise ValueError(f"the sampler yielded fewer than {batch_index + 1} batches")
    indices = np.asarray(indices, np.int64)
    if indices.ndim != 1 or len(indices) == 0 or indices.min() < 0 or \
            indices.max() >= len(image_paths):
        raise ValueError(f"the sampler yielded invalid row indices for {len(image_paths)} "
                         f"images: {indices!r}")
    store = ImageStore(image_paths, image_height, image_width, cache_images=False)
    if augmentor is not None and hasattr(augmentor, "reseed"):
        # make_training_dataset's workers: a copy per thread, reseeded per batch when seeded
        augmentor = copy.deepcopy(augmentor)
        augmentor.reseed(None if seed is None else [seed, int(batch_index)])
    images = np.stack([store[index] if augmentor is None else augmentor(store[index])
                       for index in indices])
    return indices, images


def _batch_shape(sampler, labels):
    """(P, K): the sampler's, or read from the runs of equal labels of a plain index stream."""
    if hasattr(sampler, "identity_num_per_batch") and hasattr(sampler, "image_num_per_identity"):
        return int(sampler.identity_num_per_batch), int(sampler.image_num_per_identity)
    runs = np.flatnonzero(np.diff(labels)) + 1
    sizes = np.diff(np.concatenate([[0], runs, [len(labels)]]))
    if len(set(sizes.tolist())) != 1:
        raise ValueError("the batch is not P identities x K consecutive images; use a "
                         "pipeline.sampler.PKSampler")
    return len(sizes), int(sizes[0])


def _augmentor_name(augmentor):
    if augmentor is None:
        return "no augmentation"
    name = type(augmentor).__name__
    variant = getattr(augmentor, "name", None)
    return f"{name} ({variant})" if isinstance(variant, str) else name


def _fit(text, width):
    """``text``, or its end after an ellipsis, within ``width`` pixels."""
    if text_width(text, CAPTION_FONT_SIZE) <= width:
        return text
    while len(text) > 1 and text_width("…" + text, CAPTION_FONT_SIZE) > width:
        text = text[1:]
    return "…" + text


def write_training_batch(image_paths, labels, sampler, augmentor, output_path, image_height,
                         image_width, *, seed=None, batch_index=0, identities=None):
    """Write batch ``batch_index`` of the training input as a P x K grid (a row per identity,
    titled with its ``identities`` value when given, else its label) to ``output_path``.

    ``labels`` / ``identities`` are per image (as ``image_paths``); pass the trainer's
    ``seed`` to see exactly its batch. Returns ``output_path``.
    """
    labels = np.asarray(labels)
    if len(labels) != len(image_paths):
        raise ValueError(f"labels ({len(labels)}) and image_paths ({len(image_paths)}) must have "
                         f"the same length")
    indices, images = training_batch(image_paths, sampler, augmentor, image_height, image_width,
                                     seed=seed, batch_index=batch_index)
    P, K = _batch_shape(sampler, labels[indices])
    if P * K != len(indices):
        raise ValueError(f"the sampler's batch holds {len(indices)} images, not P*K = {P}*{K}")
    scale = max(1, int(round(MIN_DISPLAY_HEIGHT / image_height)))
    rows = []
    for p in range(P):
        members = indices[p * K:(p + 1) * K]
        first = members[0]
        title = (f"identity {np.asarray(identities)[first]} (label {labels[first]})"
                 if identities is not None else f"label {labels[first]}")
        tiles = []
        for column, index in enumerate(members):
            image = images[p * K + column]
            if scale > 1:
                image = cv2.resize(image, None, fx=scale, fy=scale,
                                   interpolation=cv2.INTER_NEAREST)
            stem = os.path.splitext(os.path.basename(os.fspath(image_paths[index])))[0]
            tiles.append(Tile(image, _fit(stem, image.shape[1] + 4)))
        rows.append(Row(title, tiles))
    seeded = f"seed {seed}" if seed is not None else "unseeded"
    header = (f"Training batch {batch_index} ({seeded}) as the training input draws it: "
              f"P={P} identities (one per row) x K={K} images, {_augmentor_name(augmentor)}, "
              f"{image_height}x{image_width} pixels"
              + (f" (shown x{scale})" if scale > 1 else "") + ".")
    return render(rows, output_path, header)
