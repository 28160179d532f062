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


# --------------------------------------------------------------- centroids, AQE, re-ranking
def _unit(x):
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norm > 0, norm, 1)).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_evaluation_options_compose_centroids_then_expansion(metric):
    from metrics import average_query_expansion, compute_centroids

    qf, gf, q_pids, g_pids, q_cams, g_cams = features_problem(7, num_q=150, num_g=300)
    g_pids[:20] = 0  # distractors: single-image centroids
    plain = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, metric=metric)
    off = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, metric=metric,
                            use_centroids=False, query_expansion_k=0, k1=20, k2=6,
                            lambda_value=0.3)
    assert off["mAP"] == plain["mAP"] and off["mINP"] == plain["mINP"]
    np.testing.assert_array_equal(off["cmc"], plain["cmc"])

    centroids = compute_centroids(gf, g_pids, g_cams, metric)
    queries = _unit(qf) if metric == "cosine" else qf  # centroid mode: one scale (cosine)
    for k, (eq, eg) in ((0, (queries, centroids.features)),
                        (4, average_query_expansion(queries, centroids.features, qe_k=4,
                                                    alpha=2.0, qe_times=2))):
        expected = evaluate_rank(compute_distance_matrix(eq, eg, metric), q_pids,
                                 centroids.pids, q_cams, centroids.camids)
        result = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, metric=metric,
                                   use_centroids=True, query_expansion_k=k,
                                   query_expansion_alpha=2.0, query_expansion_times=2)
        np.testing.assert_allclose(result["cmc"], expected["cmc"], atol=1e-6)
        assert result["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
        assert result["mINP"] == pytest.approx(expected["mINP"], abs=1e-6)
        assert result["mAP"] != plain["mAP"]

    eq, eg = average_query_expansion(qf, gf, qe_k=5)  # without centroids: raw features
    expected = evaluate_rank(compute_distance_matrix(eq, eg, metric), q_pids, g_pids, q_cams,
                             g_cams)
    result = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, metric=metric,
                               query_expansion_k=5)
    assert result["mAP"] == expected["mAP"]
    np.testing.assert_array_equal(result["cmc"], expected["cmc"])


def test_re_ranking_runs_on_expanded_centroids_with_explicit_parameters():
    from metrics import average_query_expansion, compute_centroids
    from metrics.re_ranking import re_ranking_features_dense

    qf, gf, q_pids, g_pids, q_cams, g_cams = features_problem(8, num_q=40, num_g=160)
    centroids = compute_centroids(gf, g_pids, g_cams, "cosine")
    eq, eg = average_query_expansion(_unit(qf), centroids.features, qe_k=3)
    dense = re_ranking_features_dense(eq, eg, k1=7, k2=2, lambda_value=0.5)
    expected = evaluate_rank(dense, q_pids, centroids.pids, q_cams, centroids.camids)
    result = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, use_re_ranking=True,
                               use_centroids=True, query_expansion_k=3, k1=7, k2=2,
                               lambda_value=0.5)
    np.testing.assert_allclose(result["cmc"], expected["cmc"], atol=1e-6)
    assert result["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)


def test_explicit_re_ranking_parameters_are_forwarded(monkeypatch):
    from metrics import re_ranking

    qf, gf, q_pids, g_pids, q_cams, g_cams = features_problem(9, num_q=30, num_g=50)
    calls = []

    def fake(query_features, gallery_features, k1=20, k2=6, lambda_value=0.3,
             metric="cosine", chunk_size=None):
        calls.append((k1, k2, lambda_value))
        yield slice(0, len(query_features)), compute_distance_matrix(query_features,
                                                                     gallery_features)

    monkeypatch.setattr(re_ranking, "re_ranking_features", fake, raising=False)
    evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, use_re_ranking=True)
    evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, use_re_ranking=True, k1=9,
                      k2=3, lambda_value=0.1)
    evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, use_re_ranking=True, k2=4,
                      re_ranking_kwargs=dict(k1=5))
    assert calls == [(20, 6, 0.3), (9, 3, 0.1), (5, 4, 0.3)]
    with pytest.raises(ValueError, match="k1 is given twice"):
        evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, use_re_ranking=True, k1=9,
                          re_ranking_kwargs=dict(k1=5))


def test_evaluation_option_errors_name_the_argument():
    qf, gf, q_pids, g_pids, q_cams, g_cams = features_problem(10, num_q=10, num_g=20)
    for kwargs, name in ((dict(query_expansion_k=-1), "query_expansion_k"),
                         (dict(query_expansion_k=1.5), "query_expansion_k"),
                         (dict(query_expansion_k=True), "query_expansion_k"),
                         (dict(query_expansion_k=3, query_expansion_alpha=-2), "alpha"),
                         (dict(query_expansion_times=0), "qe_times"),
                         (dict(use_centroids=1), "use_centroids"),
                         (dict(k1=0), "k1"), (dict(lambda_value=2.0), "lambda_value")):
        with pytest.raises(ValueError, match=name):
            evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, **kwargs)


def test_evaluator_callback_options_and_log_keys():
    import pandas as pd

    from callbacks.evaluator import (Evaluator, evaluation_logs, log_key_prefix,
                                     log_key_suffix)

    assert log_key_prefix("test", "cosine", False) == "test_cosine_False"
    assert log_key_suffix(None) == log_key_suffix(dict(use_centroids=False, k1=30)) == ""
    assert log_key_suffix(dict(use_centroids=True, query_expansion_k=10)) == \
        "_centroids_aqe10"
    assert log_key_suffix(dict(query_expansion_k=5, query_expansion_alpha=2.5,
                               query_expansion_times=2)) == "_aqe5_alpha2.5_times2"
    result = dict(cmc=np.linspace(0.5, 1, 20), mAP=0.4, mINP=0.2)
    assert set(evaluation_logs("test", "cosine", False, result)) == {
        "test_cosine_False_rank-1 accuracy", "test_cosine_False_rank-5 accuracy",
        "test_cosine_False_rank-10 accuracy", "test_cosine_False_rank-20 accuracy",
        "test_cosine_False_mAP_score", "test_cosine_False_mINP_score"}

    qf, gf, q_pids, g_pids, q_cams, g_cams = features_problem(11, num_q=40, num_g=80)
    query_df = pd.DataFrame(dict(identity_ID=q_pids, camera_ID=q_cams))
    gallery_df = pd.DataFrame(dict(identity_ID=g_pids, camera_ID=g_cams))
    for options, prefix in ((None, "test_cosine_False"),
                            (dict(use_centroids=True, query_expansion_k=3),
                             "test_cosine_False_centroids_aqe3")):
        evaluator = Evaluator(None, "test", query_df, gallery_df, 8, 4, every_N_epochs=1,
                              epoch_num=1, evaluation_options=options)
        evaluator.extract = lambda df: qf if df is query_df else gf
        logs = evaluator.evaluate()
        expected = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams,
                                     **(options or {}))
        assert logs[prefix + "_mAP_score"] == expected["mAP"]
        assert len(logs) == 6 and all(key.startswith(prefix + "_") for key in logs)
    for options, message in ((dict(use_centroid=True), "unknown evaluation option"),
                             (dict(query_expansion_k=-3), "query_expansion_k")):
        with pytest.raises(ValueError, match=message):
            Evaluator(None, "test", query_df, gallery_df, 8, 4, every_N_epochs=1, epoch_num=1,
                      evaluation_options=options)
