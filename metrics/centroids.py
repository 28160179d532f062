"""Gallery centroids per (identity, camera) for centroid retrieval (Wieczorek et al., 2021).

Rule (``compute_centroids``):

* Junk gallery images (identity ``JUNK_ID`` = -1) are dropped, as the Market-1501 protocol
  ignores them (the dataset loaders already remove them).
* Every distractor image (identity ``DISTRACTOR_ID`` = 0) stays its own single-image
  centroid: distractors are unrelated people, so averaging them would invent a person.
* Every other (identity, camera) pair becomes one centroid, the mean of its images:
  ``"euclidean"``: ``c = mean_j g_j``; ``"cosine"``: ``c = n(mean_j n(g_j))`` with
  ``n(x) = x / ||x||`` (a zero vector stays zero, i.e. at cosine distance 1 from everything).
* Centroids are ordered by the first gallery image of their group, so ties in the ranking
  are broken as for the images themselves.

Each centroid carries its identity and camera, so the usual protocol applies unchanged: the
centroid with the query's identity AND camera is excluded, the other-camera centroids of the
query's identity are its true matches. Queries stay single images.

This is the per-camera variant of the paper's camera-aware centroids: the centroids-reid code
builds, per query camera, one centroid of all other-camera images of the identity instead, so
there every query has exactly one true match; here a query has one per other camera.
"""
from collections import namedtuple

import numpy as np
import scipy.sparse as sp

from metrics import distances as _distances
from metrics.evaluation import _labels

JUNK_ID = -1
DISTRACTOR_ID = 0

GalleryCentroids = namedtuple("GalleryCentroids", ["features", "pids", "camids", "assignment"])
GalleryCentroids.__doc__ = """Centroid features (float32 (C, d)), their identities and cameras
(int64 (C,)) and ``assignment`` (int64 (G,)): the centroid of each gallery image, -1 for junk."""


def compute_centroids(gallery_features, g_pids, g_camids, metric="cosine"):
    """Gallery centroids under the rule of the module docstring.

    ``metric`` is the metric the centroids will be compared with ("cosine" or "euclidean");
    it decides whether images and centroids are L2-normalised. Raises ValueError for bad
    shapes or when only junk images are left.
    """
    if metric not in _distances.METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {_distances.METRICS}")
    gf = _distances._as_features(gallery_features, "gallery features")
    g_pids = _labels(g_pids, "g_pids", len(gf))
    g_camids = _labels(g_camids, "g_camids", len(gf))

    kept = np.flatnonzero(g_pids != JUNK_ID)
    if len(kept) == 0:
        raise ValueError(f"the gallery holds no image after dropping junk (identity {JUNK_ID}); "
                         "centroid retrieval needs at least one non-junk gallery image")
    # a distractor's group key includes its own index, so it is never merged with another
    own = np.where(g_pids[kept] == DISTRACTOR_ID, kept, -1)
    keys = np.stack([g_pids[kept], g_camids[kept], own], axis=1)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    by_first = np.argsort(first, kind="stable")
    rename = np.empty_like(by_first)
    rename[by_first] = np.arange(len(by_first))
    group = rename[inverse]
    num_centroids = len(first)

    counts = np.bincount(group, minlength=num_centroids)
    if metric == "cosine":  # average unit vectors; the 1/count factor cancels after n()
        scale = _distances.row_statistics(gf, "cosine")[kept]
    else:
        scale = (1.0 / counts[group]).astype(np.float32)
    # a float32 sparse (C, G) averaging operator: a float64 one would make scipy copy the
    # whole gallery to float64
    averaging = sp.csr_matrix((scale, (group, kept)), shape=(num_centroids, len(gf)),
                              dtype=np.float32)
    features = np.asarray(averaging @ gf, dtype=np.float64)
    if metric == "cosine":
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        np.divide(features, norms, out=features, where=norms > 0)

    assignment = np.full(len(gf), -1, dtype=np.int64)
    assignment[kept] = group
    order = kept[np.sort(first)]  # first gallery image of each centroid, in centroid order
    return GalleryCentroids(features.astype(np.float32), g_pids[order], g_camids[order],
                            assignment)
