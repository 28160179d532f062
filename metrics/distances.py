"""Query-gallery distance matrices (float32), computed in fixed row blocks.

Rows are always computed in blocks of ``ROW_BLOCK`` rows aligned to absolute row
indices, so a chunk of rows computed on its own (chunked evaluation) is bitwise equal to
the same rows of the full matrix: BLAS results can depend on the matrix shape.
"""
import numpy as np

METRICS = ("cosine", "euclidean")
ROW_BLOCK = 128


def _as_features(x, name):
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (num_samples, feature_dim) array, "
                         f"got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


def check_features(a, b, metric):
    """Validated float32 C-contiguous copies (or views) of both feature arrays."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {METRICS}")
    a = _as_features(a, "query features")
    b = _as_features(b, "gallery features")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: query {a.shape[1]} vs gallery {b.shape[1]}")
    return a, b


def row_statistics(x, metric):
    """Per-row quantity the metric needs: 1/||x|| (0 for zero rows) or ||x||^2 (float32)."""
    sq = np.empty(len(x), dtype=np.float32)
    for s in range(0, len(x), 4096):  # blocks keep temporaries small for big galleries
        blk = x[s:s + 4096]
        sq[s:s + 4096] = np.einsum("ij,ij->i", blk, blk)
    if metric == "euclidean":
        return sq
    norm = np.sqrt(sq)
    inv = np.zeros_like(norm)
    np.divide(1.0, norm, out=inv, where=norm > 0)  # zero vector -> similarity 0 (as sklearn)
    return inv


def distance_rows(a, b, a_stat, b_stat, metric, start, stop, out=None, same_input=False):
    """Distances of rows ``a[start:stop]`` to all of ``b`` into ``out`` ((stop-start), len(b)).

    ``start`` must be a multiple of ROW_BLOCK for results to equal the full matrix.
    """
    if out is None:
        out = np.empty((stop - start, len(b)), dtype=np.float32)
    bt = b.T
    for s in range(start, stop, ROW_BLOCK):
        e = min(s + ROW_BLOCK, stop)
        o = out[s - start:e - start]
        np.matmul(a[s:e], bt, out=o)
        if metric == "cosine":
            o *= a_stat[s:e, None]
            o *= b_stat[None, :]
            np.subtract(np.float32(1.0), o, out=o)
            np.clip(o, 0.0, 2.0, out=o)
        else:
            o *= np.float32(-2.0)
            o += a_stat[s:e, None]
            o += b_stat[None, :]
            np.maximum(o, 0.0, out=o)
            np.sqrt(o, out=o)
        if same_input:  # a vs itself: exact zeros on the diagonal, as sklearn
            idx = np.arange(s, e)
            o[idx - s, idx] = 0.0
    return out


def compute_distance_matrix(a, b, metric="cosine"):
    """Pairwise distances, float32 of shape (len(a), len(b)).

    ``"cosine"``: 1 - cosine similarity, clipped to [0, 2]; a zero vector has similarity
    0 to everything (distance 1), as ``sklearn.metrics.pairwise_distances``.
    ``"euclidean"``: sqrt(max(|a|^2 + |b|^2 - 2 a.b, 0)); computed in float32, so
    near-duplicate pairs can show ~1e-3 (relative to the norms) instead of 0.
    When ``b is a`` the diagonal is exactly 0.
    """
    same = b is a
    a, b = check_features(a, b, metric)
    a_stat = row_statistics(a, metric)
    b_stat = a_stat if same else row_statistics(b, metric)
    return distance_rows(a, b, a_stat, b_stat, metric, 0, len(a), same_input=same)
