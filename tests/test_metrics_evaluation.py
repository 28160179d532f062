"""Distances (vs sklearn / brute force) and chunked feature evaluation (vs the dense path)."""
import numpy as np
import pytest
from sklearn.metrics import pairwise_distances

import metrics
from metrics import compute_distance_matrix, evaluate_features, evaluate_rank
from metrics import evaluation

BACKENDS = ["numpy", pytest.param("cython", marks=pytest.mark.skipif(
    not metrics.CYTHON_AVAILABLE, reason="run `python setup.py build_ext --inplace` first"))]


def features_problem(seed, num_q=300, num_g=420, dim=16, num_ids=30):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((num_ids, dim))
    q_pids = rng.integers(0, num_ids, num_q)
    g_pids = rng.integers(0, num_ids, num_g)
    qf = (centers[q_pids] + 0.8 * rng.standard_normal((num_q, dim))).astype(np.float32)
    gf = (centers[g_pids] + 0.8 * rng.standard_normal((num_g, dim))).astype(np.float32)
    return qf, gf, q_pids, g_pids, rng.integers(0, 4, num_q), rng.integers(0, 4, num_g)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_distances_match_sklearn_and_brute_force(metric):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((37, 24)).astype(np.float32)
    b = rng.standard_normal((300, 24)).astype(np.float32)
    a[3] = 0.0  # zero vectors: cosine similarity 0 -> distance 1, as sklearn
    b[7] = 0.0
    d = compute_distance_matrix(a, b, metric)
    assert d.dtype == np.float32 and d.shape == (37, 300)
    np.testing.assert_allclose(d, pairwise_distances(a, b, metric=metric), atol=2e-5, rtol=1e-5)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    brute = np.empty((37, 300))
    for i in range(37):
        for j in range(300):
            if metric == "euclidean":
                brute[i, j] = np.sqrt(np.sum((a64[i] - b64[j]) ** 2))
            else:
                na, nb = np.linalg.norm(a64[i]), np.linalg.norm(b64[j])
                brute[i, j] = 1.0 - (a64[i] @ b64[j] / (na * nb) if na > 0 and nb > 0 else 0.0)
    np.testing.assert_allclose(d, brute, atol=2e-5, rtol=1e-5)
    if metric == "cosine":
        assert d[3, 0] == pytest.approx(1.0) and d[0, 7] == pytest.approx(1.0)


def test_distance_of_a_set_to_itself_has_zero_diagonal_and_validates_input():
    x = np.random.default_rng(1).standard_normal((200, 8)).astype(np.float32)
    for metric in ("cosine", "euclidean"):
        d = compute_distance_matrix(x, x, metric)
        assert np.all(np.diag(d) == 0.0)
        np.testing.assert_allclose(d, pairwise_distances(x, metric=metric), atol=2e-5)
    with pytest.raises(ValueError, match="unknown metric"):
        compute_distance_matrix(x, x, "hamming")
    with pytest.raises(ValueError, match="feature dimensions differ"):
        compute_distance_matrix(x, x[:, :4])
    with pytest.raises(ValueError, match="2-D"):
        compute_distance_matrix(x[0], x)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_chunked_evaluation_equals_dense(backend, metric):
    qf, gf, q_pids, g_pids, q_cams, g_cams = features_problem(2)
    dense = evaluate_rank(compute_distance_matrix(qf, gf, metric), q_pids, g_pids, q_cams,
                          g_cams, max_rank=20, backend=backend)
    for chunk_size in (None, 1, 128, 256):  # 1 -> one 128-row block, i.e. 3 chunks
        chunked = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, metric=metric,
                                    chunk_size=chunk_size, backend=backend)
        np.testing.assert_array_equal(chunked["cmc"], dense["cmc"])
        assert chunked["mAP"] == dense["mAP"] and chunked["mINP"] == dense["mINP"]
        assert chunked["num_valid_queries"] == dense["num_valid_queries"]
    tiny_budget = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, metric=metric,
                                    memory_budget=1, backend=backend)
    assert tiny_budget["mAP"] == dense["mAP"]


def test_chunked_cuhk03_equals_dense():
    qf, gf, q_pids, g_pids, q_cams, g_cams = features_problem(3)
    dense = evaluate_rank(compute_distance_matrix(qf, gf), q_pids, g_pids, q_cams, g_cams,
                          use_metric_cuhk03=True)
    chunked = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, chunk_size=128,
                                use_metric_cuhk03=True)
    np.testing.assert_array_equal(chunked["cmc"], dense["cmc"])


def test_auto_chunk_size_respects_budget():
    assert evaluation.auto_chunk_size(82161) == 768  # MSMT17 gallery, 256 MiB of float32
    assert evaluation.auto_chunk_size(82161) * 82161 * 4 <= evaluation.DEFAULT_MEMORY_BUDGET
    assert evaluation.auto_chunk_size(10 ** 9) == 128  # never below one row block


def test_evaluate_features_input_errors():
    qf, gf, q_pids, g_pids, q_cams, g_cams = features_problem(4, num_q=10, num_g=20)
    with pytest.raises(ValueError, match="q_pids"):
        evaluate_features(qf, gf, q_pids[:5], g_pids, q_cams, g_cams)
    with pytest.raises(ValueError, match="chunk_size"):
        evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, chunk_size=0)
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, metric="l1")
    with pytest.raises(ValueError, match="backend"):
        evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, backend="gpu")


def test_re_ranking_is_delegated_chunk_by_chunk(monkeypatch):
    from metrics import re_ranking

    qf, gf, q_pids, g_pids, q_cams, g_cams = features_problem(5, num_q=200, num_g=150)
    fake = np.random.default_rng(0).random((200, 150), dtype=np.float32)
    calls = {}

    def fake_re_ranking_features(query_features, gallery_features, k1=20, k2=6,
                                 lambda_value=0.3, metric="cosine", chunk_size=None):
        calls.update(k1=k1, metric=metric, chunk_size=chunk_size)
        for start in range(0, len(query_features), 64):
            rows = slice(start, min(start + 64, len(query_features)))
            yield rows, fake[rows]

    monkeypatch.setattr(re_ranking, "re_ranking_features", fake_re_ranking_features,
                        raising=False)
    result = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, use_re_ranking=True,
                               re_ranking_kwargs=dict(k1=7), chunk_size=128)
    expected = evaluate_rank(fake, q_pids, g_pids, q_cams, g_cams)
    assert calls == dict(k1=7, metric="cosine", chunk_size=128)
    np.testing.assert_array_equal(result["cmc"], expected["cmc"])
    assert result["mAP"] == expected["mAP"] and result["mINP"] == expected["mINP"]


def test_re_ranking_matches_dense_reference():
    import metrics.re_ranking as re_ranking

    qf, gf, q_pids, g_pids, q_cams, g_cams = features_problem(6, num_q=40, num_g=130)
    dist = re_ranking.exact_distance_matrix
    dense = re_ranking.re_ranking(dist(qf, gf), dist(qf, qf), dist(gf, gf), k1=8, k2=3,
                                  lambda_value=0.3)
    expected = evaluate_rank(dense, q_pids, g_pids, q_cams, g_cams)
    for chunk_size in (None, 16):
        result = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, use_re_ranking=True,
                                   re_ranking_kwargs=dict(k1=8, k2=3, lambda_value=0.3),
                                   chunk_size=chunk_size)
        np.testing.assert_allclose(result["cmc"], expected["cmc"], atol=1e-6)
        assert abs(result["mAP"] - expected["mAP"]) < 1e-6
        assert abs(result["mINP"] - expected["mINP"]) < 1e-6
