"""CMC / mAP / mINP under the Market-1501 (and CUHK03 single-shot) protocols.

Protocol (deep-person-reid's ``rank_cy.pyx``, which both originals use):

* For each query, gallery entries with the same identity AND the same camera are removed;
  everything else (other identities, distractors with pid 0, junk -1 if present) is kept.
* Queries without any remaining true match are skipped (not averaged); if no query is
  valid a ValueError is raised.
* Rows are ranked by ascending distance; ties are broken by gallery index, i.e. the
  ranking equals a *stable* sort of the row (the original used an unstable quicksort, so
  its tie order was arbitrary).
* CMC[k] = fraction of valid queries whose first true match is at position <= k
  (cumulative, clipped to 1); ``max_rank`` is clipped to the gallery size (with a note).
* AP = mean over true matches of the precision at that match; mAP = mean AP.
* INP = num_true_matches / (1-based position of the last true match) (fast-reid's mINP).
* CUHK03 mode: CMC averaged over 10 repeats of sampling one gallery image per identity
  (reproducible: counter-based hashing of (seed, query index, repeat, identity)); AP and
  INP on the full filtered list.

Speed: no full argsort. Per query only the m true matches are sorted and the row is
scanned to count the entries ranked before each of them (O(G log m) or a vectorised
O(G m), see ``metrics/rank_cy.pyx``), in the compiled ``metrics.rank_cy`` when built
(``python setup.py build_ext --inplace``), else in NumPy (``metrics.rank_numpy``).
"""
import numbers

import numpy as np

from metrics import distances as _distances
from metrics import rank_numpy

try:
    from metrics import rank_cy
except ImportError:  # not built; metrics/__init__.py warns once
    rank_cy = None

CUHK03_NUM_REPEATS = 10
DEFAULT_MEMORY_BUDGET = 256 * 1024 ** 2  # bytes for one chunk of the distance matrix
BACKENDS = ("auto", "cython", "numpy")


def _kernel(backend):
    if backend in (None, "auto"):
        return rank_cy if rank_cy is not None else rank_numpy
    if backend == "cython":
        if rank_cy is None:
            raise ValueError("backend='cython' requested but metrics.rank_cy is not built; run "
                             "`python setup.py build_ext --inplace` in the repository root")
        return rank_cy
    if backend == "numpy":
        return rank_numpy
    raise ValueError(f"unknown backend {backend!r}; use one of {BACKENDS}")


def _labels(x, name, length=None):
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {x.shape}")
    if x.dtype.kind not in "iub":
        if x.dtype.kind == "f" and np.all(np.isfinite(x)) and np.all(x == np.round(x)):
            x = x.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integer ids, got dtype {x.dtype}")
    if length is not None and len(x) != length:
        raise ValueError(f"{name} has {len(x)} entries but {length} were expected")
    return x.astype(np.int64, copy=False)


def _check_labels(num_q, num_g, q_pids, g_pids, q_camids, g_camids):
    if num_g == 0:
        raise ValueError("the gallery is empty")
    return (_labels(q_pids, "q_pids", num_q), _labels(g_pids, "g_pids", num_g),
            _labels(q_camids, "q_camids", num_q), _labels(g_camids, "g_camids", num_g))


def _clip_max_rank(max_rank, num_g):
    if int(max_rank) < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    max_rank = int(max_rank)
    if num_g < max_rank:
        print(f"Note: number of gallery samples is quite small, got {num_g}; "
              f"max_rank is reduced to {num_g}")
        max_rank = num_g
    return max_rank


def group_gallery(g_pids):
    """Gallery grouped by identity: (unique pids, starts, members ascending within a group)."""
    members = np.argsort(g_pids, kind="stable")
    unique, first = np.unique(g_pids[members], return_index=True)
    starts = np.append(first, len(g_pids)).astype(np.int64)
    return unique, starts, members.astype(np.int64)


def query_groups(q_pids, unique_g_pids):
    """Index of each query's identity among the gallery identities, -1 if absent."""
    pos = np.searchsorted(unique_g_pids, q_pids)
    pos = np.minimum(pos, max(len(unique_g_pids) - 1, 0))
    found = len(unique_g_pids) > 0
    ok = (unique_g_pids[pos] == q_pids) if found else np.zeros(len(q_pids), bool)
    return np.where(ok, pos, -1).astype(np.int64)


class _Accumulator:
    """Collects per-query statistics (possibly chunk by chunk) and reduces them."""

    def __init__(self, max_rank, num_repeats):
        self.max_rank, self.num_repeats = max_rank, num_repeats
        self.parts = []

    def add(self, stats):
        self.parts.append(stats)

    def result(self):
        num_valid = 0
        if self.parts:
            num_rel, ap, inp, ranks = (np.concatenate(p) for p in zip(*self.parts))
            valid = num_rel > 0
            num_valid = int(valid.sum())
        if num_valid == 0:
            raise ValueError("no valid query: no query identity has a true match in the gallery "
                             "under a different camera (check q_pids/g_pids and camera ids)")
        r = np.minimum(ranks[valid].ravel(), self.max_rank)
        hist = np.bincount(r, minlength=self.max_rank + 1)[:self.max_rank]
        cmc = (np.cumsum(hist) / float(r.size)).astype(np.float32)
        return dict(cmc=cmc, mAP=float(np.mean(ap[valid])), mINP=float(np.mean(inp[valid])),
                    num_valid_queries=num_valid)


def _rank_rows(kernel, distmat, q_grp, q_camids, g_camids, starts, members, num_repeats, seed,
               q_offset, num_threads):
    return kernel.rank_queries(distmat, q_grp, q_camids, g_camids, starts, members,
                               num_repeats=num_repeats, seed=int(seed) % 2 ** 64,
                               q_offset=int(q_offset), num_threads=int(num_threads))


def evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20,
                  use_metric_cuhk03=False, *, cuhk03_seed=0, backend="auto", num_threads=0):
    """CMC, mAP, mINP from a (Q, G) distance matrix; see the module docstring for the protocol.

    Returns ``dict(cmc=float32[max_rank], mAP=float, mINP=float, num_valid_queries=int)``.
    ``backend``: "auto" (compiled if built), "cython" or "numpy" (identical numbers).
    ``num_threads``: OpenMP threads of the compiled kernel (0 = OpenMP default).
    Raises ValueError for inconsistent shapes, NaN distances or when no query is valid.
    """
    distmat = np.asarray(distmat)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be 2-D (num_query, num_gallery), got shape {distmat.shape}")
    if distmat.dtype.kind not in "iuf":
        raise ValueError(f"distmat must hold real numbers, got dtype {distmat.dtype}")
    num_q, num_g = distmat.shape
    q_pids, g_pids, q_camids, g_camids = _check_labels(num_q, num_g, q_pids, g_pids, q_camids,
                                                       g_camids)
    max_rank = _clip_max_rank(max_rank, num_g)
    kernel = _kernel(backend)
    unique, starts, members = group_gallery(g_pids)
    num_repeats = CUHK03_NUM_REPEATS if use_metric_cuhk03 else 0
    acc = _Accumulator(max_rank, num_repeats)
    acc.add(_rank_rows(kernel, distmat, query_groups(q_pids, unique), q_camids, g_camids,
                       starts, members, num_repeats, cuhk03_seed, 0, num_threads))
    return acc.result()


def compute_CMC_mAP(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20,
                    use_metric_cuhk03=False, **kwargs):
    """``(cmc float32[max_rank], mAP float)`` — the originals' ``compute_CMC_mAP`` API.

    Same protocol as :func:`evaluate_rank` (keyword options are passed through).
    """
    result = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank,
                           use_metric_cuhk03=use_metric_cuhk03, **kwargs)
    return result["cmc"], result["mAP"]


def auto_chunk_size(num_gallery, memory_budget=DEFAULT_MEMORY_BUDGET, bytes_per_entry=4):
    """Query rows per chunk so that one (chunk, G) float32 block fits the budget.

    Rounded down to a multiple of ``distances.ROW_BLOCK`` (at least one block), which
    keeps chunked distances bitwise equal to the dense matrix.
    """
    rows = int(memory_budget // max(1, num_gallery * bytes_per_entry))
    block = _distances.ROW_BLOCK
    return max(block, rows // block * block)


RE_RANKING_DEFAULTS = dict(k1=20, k2=6, lambda_value=0.3)


def check_options(metric="cosine", use_centroids=False, query_expansion_k=0,
                  query_expansion_alpha=3.0, query_expansion_times=1, k1=20, k2=6,
                  lambda_value=0.3):
    """Raise ValueError for an evaluation option outside its domain (see ``evaluate_features``).

    Callers that evaluate later (the Keras evaluator) use it to fail before training starts.
    """
    if metric not in _distances.METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {_distances.METRICS}")
    if not isinstance(use_centroids, (bool, np.bool_)):
        raise ValueError(f"use_centroids must be True or False, got {use_centroids!r}")
    if isinstance(query_expansion_k, bool) or not isinstance(query_expansion_k, numbers.Integral) \
            or query_expansion_k < 0:
        raise ValueError(f"query_expansion_k must be an integer >= 0 (0 = no query expansion), "
                         f"got {query_expansion_k!r}")
    from metrics import query_expansion
    from metrics.re_ranking_from_features import validate_parameters

    query_expansion.check_parameters(max(int(query_expansion_k), 1), query_expansion_alpha,
                                     query_expansion_times)
    validate_parameters(k1, k2, lambda_value)


def evaluate_features(query_features, gallery_features, q_pids, g_pids, q_camids, g_camids,
                      metric="cosine", max_rank=20, use_re_ranking=False, re_ranking_kwargs=None,
                      chunk_size=None, *, use_metric_cuhk03=False, cuhk03_seed=0,
                      memory_budget=DEFAULT_MEMORY_BUDGET, backend="auto", num_threads=0,
                      use_centroids=False, query_expansion_k=0, query_expansion_alpha=3.0,
                      query_expansion_times=1, k1=20, k2=6, lambda_value=0.3):
    """Evaluate features without ever holding the full (Q, G) distance matrix.

    Query rows are processed in chunks: distances of the chunk to the whole gallery, then
    per-query ranks; only per-query statistics are kept. Metrics are identical to
    ``evaluate_rank(compute_distance_matrix(q, g, metric), ...)``.

    Steps, each optional: (1) gallery centroids, (2) query expansion, (3) re-ranking, then
    the ranking of the queries against the (possibly transformed) gallery.

    Args:
        metric: "cosine" or "euclidean" (see :func:`metrics.compute_distance_matrix`).
        chunk_size: query rows per chunk; None picks it from ``memory_budget`` (bytes,
            default 256 MiB for one float32 chunk). Rounded up to a multiple of
            ``metrics.distances.ROW_BLOCK`` (128).
        use_centroids: rank the queries against per-(identity, camera) gallery centroids
            (``metrics.centroids.compute_centroids``: junk dropped, each distractor its own
            centroid; the centroid of the query's identity and camera is excluded). With the
            cosine metric the queries are L2-normalised too, so that query expansion mixes
            queries and unit-length centroids on one scale (the ranking itself does not
            change). ``cmc`` is then clipped to the number of centroids.
        query_expansion_k: 0 = off; k > 0 = alpha-weighted average query expansion with k
            neighbours (``metrics.query_expansion.average_query_expansion``, fast-reid's
            rule) applied to the queries and the gallery (the centroids, with
            ``use_centroids``), ``query_expansion_times`` rounds with exponent
            ``query_expansion_alpha``.
        use_re_ranking: rank with k-reciprocal re-ranked distances from
            ``metrics.re_ranking.re_ranking_features`` of the (expanded) queries and the
            (expanded) gallery or centroids, with ``k1``, ``k2``, ``lambda_value``.
            ``re_ranking_kwargs`` (older spelling) is forwarded too and may set any of them
            unless the explicit argument is also changed from its default (ValueError); an
            explicit ``chunk_size`` is forwarded too, otherwise re-ranking picks its own
            memory-bounded chunks.
    Returns ``dict(cmc, mAP, mINP, num_valid_queries)`` as :func:`evaluate_rank`.
    """
    check_options(metric, use_centroids, query_expansion_k, query_expansion_alpha,
                  query_expansion_times, k1, k2, lambda_value)
    qf, gf = _distances.check_features(query_features, gallery_features, metric)
    num_q, num_g = len(qf), len(gf)
    q_pids, g_pids, q_camids, g_camids = _check_labels(num_q, num_g, q_pids, g_pids, q_camids,
                                                       g_camids)
    re_ranking_kwargs = _re_ranking_arguments(re_ranking_kwargs, k1=k1, k2=k2,
                                              lambda_value=lambda_value)
    if use_centroids:
        from metrics.centroids import compute_centroids

        gf, g_pids, g_camids, _ = compute_centroids(gf, g_pids, g_camids, metric)
        num_g = len(gf)
        if metric == "cosine":
            qf = qf * _distances.row_statistics(qf, "cosine")[:, None]
    if query_expansion_k:
        from metrics.query_expansion import average_query_expansion

        qf, gf = average_query_expansion(qf, gf, qe_k=int(query_expansion_k),
                                         alpha=query_expansion_alpha,
                                         qe_times=query_expansion_times)
    max_rank = _clip_max_rank(max_rank, num_g)
    kernel = _kernel(backend)
    block = _distances.ROW_BLOCK
    user_chunk_size = None if chunk_size is None else int(chunk_size)
    if chunk_size is None:
        chunk_size = auto_chunk_size(num_g, memory_budget)
    elif user_chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of query rows, got {chunk_size}")
    chunk_size = -(-int(chunk_size) // block) * block
    unique, starts, members = group_gallery(g_pids)
    q_grp = query_groups(q_pids, unique)
    num_repeats = CUHK03_NUM_REPEATS if use_metric_cuhk03 else 0
    acc = _Accumulator(max_rank, num_repeats)

    def rank(rows, dist):
        acc.add(_rank_rows(kernel, dist, q_grp[rows], q_camids[rows], g_camids, starts, members,
                           num_repeats, cuhk03_seed, rows.start, num_threads))

    if use_re_ranking:
        for rows, dist in _re_ranked_chunks(qf, gf, metric, user_chunk_size, re_ranking_kwargs):
            rank(rows, dist)
        return acc.result()

    q_stat = _distances.row_statistics(qf, metric)
    g_stat = _distances.row_statistics(gf, metric)
    buffer = np.empty((min(chunk_size, num_q), num_g), dtype=np.float32)
    for start in range(0, num_q, chunk_size):
        stop = min(start + chunk_size, num_q)
        dist = _distances.distance_rows(qf, gf, q_stat, g_stat, metric, start, stop,
                                        out=buffer[:stop - start])
        rank(slice(start, stop), dist)
    return acc.result()


def _re_ranking_arguments(re_ranking_kwargs, **explicit):
    """re_ranking_kwargs completed with the explicit k1, k2, lambda_value."""
    kwargs = dict(re_ranking_kwargs or {})
    for name, value in explicit.items():
        if name not in kwargs:
            kwargs[name] = value
        elif value != RE_RANKING_DEFAULTS[name]:
            raise ValueError(f"{name} is given twice, as an argument ({value!r}) and in "
                             f"re_ranking_kwargs ({kwargs[name]!r}); pass it only as the "
                             f"argument")
    return kwargs


def _re_ranked_chunks(qf, gf, metric, chunk_size, re_ranking_kwargs):
    """(row slice, float32 distance rows) from helper R's chunked re-ranking."""
    from metrics import re_ranking  # imported lazily: only needed with use_re_ranking

    kwargs = dict(re_ranking_kwargs or {})
    kwargs.setdefault("metric", metric)
    if chunk_size is not None:  # otherwise re-ranking picks its own (memory-bounded) chunks
        kwargs.setdefault("chunk_size", chunk_size)
    out = re_ranking.re_ranking_features(qf, gf, **kwargs)
    if isinstance(out, np.ndarray):  # a dense (Q, G) result is one big chunk
        out = [(slice(0, len(qf)), out)]
    for rows, dist in out:
        yield rows, dist
