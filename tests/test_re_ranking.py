"""k-reciprocal re-ranking: reference vs a plain-Python transcription of the published
algorithm, and the sparse versions (from distance matrices, from features) vs the reference."""
import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

import metrics.re_ranking_from_features as sparse
import metrics.re_ranking_from_matrices as sparse_matrices
from metrics.re_ranking import (exact_distance_matrix, re_ranking, re_ranking_features,
                                re_ranking_features_dense)
from metrics.re_ranking_from_matrices import re_ranking_sparse


def clustered(num_query, num_gallery, dim, num_ids, seed, offset=0.0, spread=0.5):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids, dim))
    labels = rng.integers(0, num_ids, num_query + num_gallery)
    x = offset + centres[labels] + spread * rng.standard_normal((num_query + num_gallery, dim))
    x = x.astype(np.float32)
    return x[:num_query], x[num_query:]


def reference_on_features(qf, gf, metric, k1, k2, lam):
    return re_ranking(exact_distance_matrix(qf, gf, metric), exact_distance_matrix(qf, qf, metric),
                      exact_distance_matrix(gf, gf, metric), k1=k1, k2=k2, lambda_value=lam)


def brute_force(q_g, q_q, g_g, k1, k2, lam):
    """Zhong et al. (CVPR'17) with Python sets and loops, in float64."""
    num_query = len(q_g)
    full = [list(q_q[i]) + list(q_g[i]) for i in range(num_query)]
    full += [[q_g[i][j] for i in range(num_query)] + list(g_g[j]) for j in range(len(g_g))]
    n = len(full)
    # squared distances, each column divided by its maximum, then transposed: d[i][j]
    col_max = [max(full[r][c] ** 2 for r in range(n)) for c in range(n)]
    d = [[full[j][i] ** 2 / col_max[i] for j in range(n)] for i in range(n)]
    rank = [sorted(range(n), key=lambda j: d[i][j]) for i in range(n)]

    def reciprocal(i, k):  # R(i, k): the k+1 nearest of i that also have i among their k+1
        return {j for j in rank[i][:k + 1] if i in rank[j][:k + 1]}

    half = int(round(k1 / 2))  # Python rounds half to even, as np.around
    weights = []
    for i in range(n):
        core = reciprocal(i, k1)
        expanded = set(core)
        for c in core:
            cand = reciprocal(c, half)
            if len(cand & core) > 2 / 3 * len(cand):
                expanded |= cand
        total = sum(math.exp(-d[i][j]) for j in expanded)
        weights.append({j: math.exp(-d[i][j]) / total for j in expanded})
    if k2 != 1:
        expanded_weights = []
        for i in range(n):
            row = {}
            for r in rank[i][:k2]:
                for j, w in weights[r].items():
                    row[j] = row.get(j, 0.0) + w / k2
            expanded_weights.append(row)
        weights = expanded_weights
    out = np.empty((num_query, len(g_g)))
    for i in range(num_query):
        for g in range(len(g_g)):
            j = num_query + g
            keys = set(weights[i]) | set(weights[j])
            mins = sum(min(weights[i].get(k, 0.0), weights[j].get(k, 0.0)) for k in keys)
            maxs = sum(max(weights[i].get(k, 0.0), weights[j].get(k, 0.0)) for k in keys)
            out[i, g] = (1 - lam) * (1 - mins / maxs) + lam * d[i][j]
    return out


@pytest.mark.parametrize("k1,k2,lam", [(3, 1, 0.3), (5, 3, 0.3), (4, 2, 0.0), (6, 4, 1.0)])
def test_reference_matches_brute_force(k1, k2, lam):
    qf, gf = clustered(5, 12, 3, 4, seed=k1 * 10 + k2)
    q_g, q_q, g_g = cdist(qf, gf), cdist(qf, qf), cdist(gf, gf)
    got = re_ranking(q_g.astype(np.float32), q_q.astype(np.float32), g_g.astype(np.float32),
                     k1=k1, k2=k2, lambda_value=lam)
    assert got.dtype == np.float32 and got.shape == (5, 12)
    np.testing.assert_allclose(got, brute_force(q_g, q_q, g_g, k1, k2, lam), atol=1e-5)


def test_exact_distance_matrix_is_rounded_float64():
    qf, gf = clustered(7, 11, 9, 3, seed=1)
    np.testing.assert_array_equal(exact_distance_matrix(qf, gf, "euclidean"),
                                  cdist(qf.astype(float), gf.astype(float)).astype(np.float32))
    cos = exact_distance_matrix(qf, gf, "cosine")
    np.testing.assert_allclose(cos, cdist(qf.astype(float), gf.astype(float), "cosine"), atol=1e-7)
    assert np.all(np.diag(exact_distance_matrix(qf, qf)) == 0)


PROBLEMS = [  # num_query, num_gallery, dim, ids, k1, k2, lambda, metric, offset
    (30, 80, 16, 10, 20, 6, 0.3, "cosine", 0.0),
    (50, 200, 32, 20, 5, 1, 0.0, "euclidean", 0.0),
    (40, 120, 8, 12, 7, 3, 1.0, "cosine", 0.0),
    (5, 7, 4, 3, 20, 6, 0.3, "cosine", 0.0),          # k1 + 1 > number of images
    (60, 150, 16, 15, 20, 6, 0.3, "euclidean", 30.0),  # float32 cancellation: near ties
    (100, 300, 64, 30, 20, 6, 0.3, "cosine", 3.0),     # concentrated cosine distances
    (80, 240, 24, 25, 10, 1, 0.6, "cosine", 0.0),
]


@pytest.mark.parametrize("problem", PROBLEMS)
def test_fast_matches_reference(problem):
    num_query, num_gallery, dim, ids, k1, k2, lam, metric, offset = problem
    qf, gf = clustered(num_query, num_gallery, dim, ids, seed=num_query, offset=offset)
    expected = reference_on_features(qf, gf, metric, k1, k2, lam)
    got = re_ranking_features_dense(qf, gf, k1=k1, k2=k2, lambda_value=lam, metric=metric)
    assert got.dtype == np.float32 and got.shape == (num_query, num_gallery)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("block,margin,tol_scale,cache", [
    (16, 8, 1.0, 1 << 30),     # many blocks: running thresholds and merges
    (7, 0, 1.0, 0),            # no margin past the last cut, no float64 cache
    (16, 2, 300.0, 1 << 30),   # wide error bound: many keys re-scored in float64
    (33, 8, 1e6, 0),           # every row recomputed in float64
])
def test_fast_paths_match_reference(monkeypatch, block, margin, tol_scale, cache):
    monkeypatch.setattr(sparse, "_BLOCK", block)
    monkeypatch.setattr(sparse, "_MARGIN", margin)
    monkeypatch.setattr(sparse, "_CACHE_BYTES", cache)
    tolerance = sparse._Features.tolerance
    monkeypatch.setattr(sparse._Features, "tolerance",
                        lambda self, rows: tolerance(self, rows) * tol_scale)
    for problem in PROBLEMS[:3] + PROBLEMS[4:5]:
        num_query, num_gallery, dim, ids, k1, k2, lam, metric, offset = problem
        qf, gf = clustered(num_query, num_gallery, dim, ids, seed=block, offset=offset)
        expected = reference_on_features(qf, gf, metric, k1, k2, lam)
        got = re_ranking_features_dense(qf, gf, k1=k1, k2=k2, lambda_value=lam, metric=metric)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_chunks_equal_dense_output():
    qf, gf = clustered(70, 150, 12, 14, seed=3)
    dense = re_ranking_features_dense(qf, gf)
    for chunk_size in (1, 7, 64, 1000):
        chunks = list(re_ranking_features(qf, gf, chunk_size=chunk_size))
        starts = [rows.start for rows, _ in chunks]
        assert starts == list(range(0, 70, chunk_size))
        assert all(c.dtype == np.float32 and c.shape == (rows.stop - rows.start, 150)
                   for rows, c in chunks)
        assert chunks[-1][0].stop == 70
        np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), dense)


def test_bad_arguments_raise_value_error():
    qf, gf = clustered(4, 6, 3, 2, seed=0)
    with pytest.raises(ValueError, match="k1"):
        re_ranking_features(qf, gf, k1=0)
    with pytest.raises(ValueError, match="lambda_value"):
        re_ranking_features(qf, gf, lambda_value=1.5)
    with pytest.raises(ValueError, match="metric"):
        re_ranking_features(qf, gf, metric="manhattan")
    with pytest.raises(ValueError, match="dimensions"):
        re_ranking_features(qf, gf[:, :2])
    with pytest.raises(ValueError, match="NaN"):
        re_ranking_features(np.full_like(qf, np.nan), gf)
    with pytest.raises(ValueError, match="chunk_size"):
        re_ranking_features(qf, gf, chunk_size=0)
    with pytest.raises(ValueError, match="g_g_dist"):
        re_ranking(np.ones((4, 6)), np.ones((4, 4)), np.ones((5, 5)))
    with pytest.raises(ValueError, match="distance 0 from every image"):
        re_ranking_features_dense(np.ones((2, 3)), np.ones((3, 3)))


MATRIX_PROBLEMS = [  # num_query, num_gallery, dim, k1, k2, lambda, dtype, ties, metric
    (30, 80, 16, 20, 6, 0.3, np.float32, False, "cosine"),
    (50, 200, 8, 5, 1, 0.0, np.float32, False, "euclidean"),
    (40, 120, 4, 7, 3, 1.0, np.float64, False, "euclidean"),
    (5, 7, 4, 20, 6, 0.3, np.float32, False, "cosine"),     # k1 + 1 > number of images
    (1, 1, 3, 1, 1, 0.3, np.float32, False, "euclidean"),   # one query, one gallery image
    (20, 60, 5, 1, 1, 0.3, np.float32, False, "euclidean"),  # smallest k1, k2
    (20, 60, 5, 2, 8, 0.5, np.float32, False, "euclidean"),  # k2 > k1 + 1
    (35, 110, 6, 9, 4, 0.3, np.float32, True, "euclidean"),  # many exactly equal distances
    (25, 90, 3, 20, 6, 0.3, np.float64, True, "euclidean"),
    (30, 100, 4, 6, 2, 0.3, np.float32, True, "cosine"),
]


def matrices(problem, seed):
    num_query, num_gallery, dim, k1, k2, lam, dtype, ties, metric = problem
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_query + num_gallery, dim)).astype(np.float32)
    if ties:  # integer coordinates: many equal distances, also across the cuts
        x = np.round(x * 1.5)
        x[np.all(x == 0, axis=1)] = 1.0
    qf, gf = x[:num_query], x[num_query:]
    return [exact_distance_matrix(a, b, metric).astype(dtype)
            for a, b in ((qf, gf), (qf, qf), (gf, gf))]


@pytest.mark.parametrize("group,block", [(32, 256), (1, 7), (2, 16)])
@pytest.mark.parametrize("problem", MATRIX_PROBLEMS)
def test_sparse_matches_reference(monkeypatch, problem, group, block):
    """Same distance matrices in, same (Q, G) float32 out; small ``group`` exercises the
    prefiltered neighbour selection, small ``block`` blocks that straddle queries/gallery."""
    monkeypatch.setattr(sparse_matrices, "_GROUP", group)
    monkeypatch.setattr(sparse_matrices, "_MATRIX_ROWS", block)
    num_query, num_gallery, dim, k1, k2, lam, dtype, ties, metric = problem
    mats = matrices(problem, seed=num_query + dim)
    expected = re_ranking(*mats, k1=k1, k2=k2, lambda_value=lam)
    got = re_ranking_sparse(*mats, k1=k1, k2=k2, lambda_value=lam)
    assert got.dtype == np.float32 and got.shape == (num_query, num_gallery)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_sparse_matches_reference_on_asymmetric_float32_matrices():
    """Arbitrary (non-symmetric, float32-rounded) matrices: the reference's transposition."""
    rng = np.random.default_rng(7)
    q_g = rng.random((40, 150), dtype=np.float32)
    q_q, g_g = rng.random((40, 40), dtype=np.float32), rng.random((150, 150), dtype=np.float32)
    for k1, k2 in ((20, 6), (3, 1), (6, 10)):
        np.testing.assert_allclose(re_ranking_sparse(q_g, q_q, g_g, k1, k2, 0.3),
                                   re_ranking(q_g, q_q, g_g, k1, k2, 0.3), rtol=0, atol=1e-5)


def test_sparse_bad_arguments_raise_value_error():
    mats = matrices(MATRIX_PROBLEMS[0], seed=0)
    with pytest.raises(ValueError, match="k2"):
        re_ranking_sparse(*mats, k2=0)
    with pytest.raises(ValueError, match="g_g_dist"):
        re_ranking_sparse(np.ones((4, 6)), np.ones((4, 4)), np.ones((5, 5)))
    bad = mats[2].copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        re_ranking_sparse(mats[0], mats[1], bad)
    with pytest.raises(ValueError, match="distance 0 from every image"):
        re_ranking_sparse(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((3, 3)))
