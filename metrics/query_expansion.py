"""Average query expansion (alpha-weighted AQE) with fast-reid's rule.

One round, over all N = Q + G images (queries first, then the gallery), with ``f_i`` the
current features (not normalised) and ``u_i = f_i / ||f_i||`` (a zero vector stays zero):

    s_ij  = u_i . u_j                                   (cosine similarity)
    N_k(i) = the k = min(qe_k, N) images j with the largest s_ij, i itself included
             (it is its own nearest neighbour); ties go to the lower index
    f_i' = (1/k) * sum_{j in N_k(i)} s_ij ** alpha * f_j

Queries and gallery images are both expanded, and both with queries and gallery images as
neighbours. ``qe_times`` rounds are applied, each on the previous round's output. The result
is not normalised: with the cosine metric the distance normalises it, with the Euclidean one
the expanded features are compared as they are. The neighbour choice always uses the cosine
similarity, whatever metric ranks the expanded features afterwards.

``s ** alpha`` is NumPy's power: an odd integer ``alpha`` keeps the sign of a negative
similarity (a negative weight), an even one drops it. A negative similarity under a
non-integer ``alpha`` has no real power (fast-reid produces NaN features there); it raises a
ValueError here instead. A neighbour among the k nearest has a negative similarity only when
fewer than k images point anywhere near the same direction.

Memory: one (rows, N) float32 similarity block at a time (about 64 MB), never (N, N).
"""
import numbers

import numpy as np

from metrics import distances as _distances

_BLOCK_ENTRIES = 1 << 24  # similarities per block of rows (64 MB of float32)


def check_parameters(qe_k, alpha, qe_times=1):
    """Raise ValueError for AQE parameters outside their domain."""
    for name, value in (("qe_k", qe_k), ("qe_times", qe_times)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) \
            or not np.isfinite(float(alpha)) or float(alpha) < 0:
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")


def average_query_expansion(query_features, gallery_features, qe_k=10, alpha=3.0, qe_times=1):
    """Expanded ``(query_features, gallery_features)`` (float32, same shapes as the inputs).

    The rule is in the module docstring; the defaults are fast-reid's ``aqe`` defaults.
    """
    check_parameters(qe_k, alpha, qe_times)
    qf, gf = _distances.check_features(query_features, gallery_features, "cosine")
    for name, x in (("query features", qf), ("gallery features", gf)):
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} contain NaN or inf; check the feature extractor")
    features = np.concatenate([qf, gf])
    for _ in range(int(qe_times)):
        features = _expand_once(features, min(int(qe_k), len(features)), float(alpha))
    return features[:len(qf)], features[len(qf):]


def _expand_once(features, k, alpha):
    n = len(features)
    inv_norm = _distances.row_statistics(features, "cosine")
    features_t = features.T
    integer_alpha = float(alpha).is_integer()
    block = _distances.ROW_BLOCK
    rows_per_step = max(block, _BLOCK_ENTRIES // max(n, 1) // block * block)
    out = np.empty_like(features)
    sims = np.empty((min(rows_per_step, n), n), dtype=np.float32)
    for start in range(0, n, rows_per_step):
        stop = min(start + rows_per_step, n)
        s = sims[:stop - start]
        # fixed 128-row GEMMs, so the similarities do not depend on rows_per_step; scaling
        # the product instead of normalising the features saves a copy of all features
        for b in range(start, stop, block):
            e = min(b + block, stop)
            o = s[b - start:e - start]
            np.matmul(features[b:e], features_t, out=o)
            o *= inv_norm[b:e, None]
            o *= inv_norm[None, :]
        neighbours = _top_k(s, k)
        weights = np.take_along_axis(s, neighbours, axis=1).astype(np.float64)
        if not integer_alpha and np.any(weights < 0):
            row = start + int(np.nonzero((weights < 0).any(axis=1))[0][0])
            raise ValueError(f"image {row} (queries first, then gallery) has a negative cosine "
                             f"similarity to one of its {k} nearest neighbours, whose power to "
                             f"the non-integer alpha={alpha} is undefined; use an integer alpha "
                             f"or a smaller qe_k")
        weights = np.power(weights, alpha)
        acc = np.zeros((stop - start, features.shape[1]), dtype=np.float64)
        for j in range(k):
            acc += weights[:, j:j + 1] * features[neighbours[:, j]]
        out[start:stop] = acc / k
    return out


def _top_k(sims, k):
    """Column indices (rows, k) of the k largest entries per row, ties to the lower index."""
    n = sims.shape[1]
    if k == n:
        return np.broadcast_to(np.arange(n), sims.shape).copy()
    top = np.argpartition(sims, n - k, axis=1)[:, n - k:]
    kth = np.take_along_axis(sims, top, axis=1).min(axis=1)
    # argpartition picks arbitrarily among values equal to the k-th largest: redo those rows
    above = (sims > kth[:, None]).sum(axis=1)
    tied = (sims == kth[:, None]).sum(axis=1)
    for r in np.nonzero(above + tied > k)[0]:
        row = sims[r]
        top[r] = np.concatenate([np.nonzero(row > kth[r])[0],
                                 np.nonzero(row == kth[r])[0][:k - above[r]]])
    return top
