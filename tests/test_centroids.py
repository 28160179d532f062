"""Centroid retrieval (metrics.centroids + evaluate_features(use_centroids=True)) against
plain Python loops."""
import math

import numpy as np
import pytest

import metrics
from metrics import compute_centroids, evaluate_features

BACKENDS = ["numpy", pytest.param("cython", marks=pytest.mark.skipif(
    not metrics.CYTHON_AVAILABLE, reason="run `python setup.py build_ext --inplace` first"))]


def centroid_problem(seed, num_q=60, num_g=400, dim=12, num_ids=25, num_cams=4):
    """Gallery with identities 1.., distractors (0) and junk (-1); a few odd queries."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((num_ids, dim))
    g_pids = rng.integers(-1, num_ids, num_g)
    g_cams = rng.integers(0, num_cams, num_g)
    q_pids = rng.integers(1, num_ids, num_q)
    q_cams = rng.integers(0, num_cams, num_q)
    q_pids[:2] = 0      # distractor queries: their matches are other-camera distractors
    q_pids[2] = 999     # identity absent from the gallery: skipped
    gf = centres[np.abs(g_pids)] + rng.standard_normal((num_g, dim))
    qf = centres[q_pids % num_ids] + rng.standard_normal((num_q, dim))
    gf[5] = 0.0  # a zero feature stays zero (cosine distance 1 to everything)
    return (qf.astype(np.float32), gf.astype(np.float32), q_pids, g_pids, q_cams, g_cams)


def loop_centroids(gf, g_pids, g_cams, metric):
    """Centroids with a dict: junk dropped, each distractor alone, groups by first image."""
    groups = {}
    for j in range(len(gf)):
        pid, cam = int(g_pids[j]), int(g_cams[j])
        if pid == -1:
            continue
        key = (pid, cam, j) if pid == 0 else (pid, cam)
        groups.setdefault(key, []).append(j)
    features, pids, cams = [], [], []
    for key, members in groups.items():
        vectors = []
        for j in members:
            v = gf[j].astype(np.float64)
            if metric == "cosine":
                norm = math.sqrt(sum(x * x for x in v))
                v = v / norm if norm > 0 else v
            vectors.append(v)
        c = sum(vectors) / len(vectors)
        if metric == "cosine":
            norm = math.sqrt(sum(x * x for x in c))
            c = c / norm if norm > 0 else c
        features.append(c)
        pids.append(key[0])
        cams.append(key[1])
    return np.array(features), np.array(pids), np.array(cams), list(groups.values())


def loop_distance(a, b, metric):
    a, b = a.astype(np.float64), b.astype(np.float64)
    if metric == "euclidean":
        return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
    na, nb = math.sqrt(a @ a), math.sqrt(b @ b)
    return 1.0 - (a @ b / (na * nb) if na > 0 and nb > 0 else 0.0)


def loop_metrics(qf, q_pids, q_cams, gf, g_pids, g_cams, metric, max_rank):
    """CMC / mAP / mINP with a per-query loop: same identity AND camera removed."""
    max_rank = min(max_rank, len(gf))
    cmcs, aps, inps = [], [], []
    for q in range(len(qf)):
        dist = [loop_distance(qf[q], gf[j], metric) for j in range(len(gf))]
        order = sorted(range(len(gf)), key=lambda j: (dist[j], j))
        order = [j for j in order if not (g_pids[j] == q_pids[q] and g_cams[j] == q_cams[q])]
        hits = [p for p, j in enumerate(order) if g_pids[j] == q_pids[q]]
        if not hits:
            continue
        aps.append(sum((n + 1) / (p + 1) for n, p in enumerate(hits)) / len(hits))
        inps.append(len(hits) / (hits[-1] + 1))
        cmcs.append([1.0 if hits[0] <= r else 0.0 for r in range(max_rank)])
    return np.mean(cmcs, axis=0), float(np.mean(aps)), float(np.mean(inps)), len(aps)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_centroids_match_python_loops(metric):
    _, gf, _, g_pids, _, g_cams = centroid_problem(0)
    result = compute_centroids(gf, g_pids, g_cams, metric)
    features, pids, cams, members = loop_centroids(gf, g_pids, g_cams, metric)
    assert result.features.dtype == np.float32 and result.features.shape == features.shape
    np.testing.assert_allclose(result.features, features, atol=2e-6)
    np.testing.assert_array_equal(result.pids, pids)
    np.testing.assert_array_equal(result.camids, cams)
    expected_assignment = np.full(len(gf), -1)
    for c, group in enumerate(members):
        expected_assignment[group] = c
    np.testing.assert_array_equal(result.assignment, expected_assignment)
    assert np.sum(g_pids == 0) == np.sum(pids == 0)  # one centroid per distractor image
    assert -1 not in pids


def test_hand_computed_centroids_and_same_camera_exclusion():
    #                    0     1    2    3    4     5
    g_pids = np.array([7, 7, 7, 0, 0, -1])
    g_cams = np.array([1, 1, 2, 1, 1, 2])
    gf = np.array([[2, 0], [0, 1], [1, 1], [1, 0], [0, 1], [5, 5]], dtype=np.float32)
    euclidean = compute_centroids(gf, g_pids, g_cams, "euclidean")
    np.testing.assert_allclose(euclidean.features, [[1, 0.5], [1, 1], [1, 0], [0, 1]])
    np.testing.assert_array_equal(euclidean.pids, [7, 7, 0, 0])
    np.testing.assert_array_equal(euclidean.camids, [1, 2, 1, 1])
    np.testing.assert_array_equal(euclidean.assignment, [0, 0, 1, 2, 3, -1])
    cosine = compute_centroids(gf, g_pids, g_cams, "cosine")  # n(mean(n(g))): (1, 1)/sqrt 2
    np.testing.assert_allclose(cosine.features[0], [2 ** -0.5, 2 ** -0.5], atol=1e-7)
    # query 7 in camera 1: its own-camera centroid (index 0, nearest) is excluded, the
    # camera-2 centroid is the only true match and is ranked after the distractor (1, 0).
    result = evaluate_features([[1.0, 0.1]], gf, [7], g_pids, [1], g_cams,
                               metric="euclidean", use_centroids=True, max_rank=3)
    np.testing.assert_allclose(result["cmc"], [0, 1, 1])
    assert result["mAP"] == pytest.approx(0.5) and result["num_valid_queries"] == 1


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("seed", [1, 2])
def test_centroid_evaluation_matches_brute_force(backend, metric, seed):
    qf, gf, q_pids, g_pids, q_cams, g_cams = centroid_problem(seed)
    result = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, metric=metric,
                               max_rank=10, use_centroids=True, backend=backend,
                               chunk_size=1)  # 1 -> 128-row chunks
    features, pids, cams, _ = loop_centroids(gf, g_pids, g_cams, metric)
    cmc, mAP, mINP, num_valid = loop_metrics(qf, q_pids, q_cams, features, pids, cams, metric,
                                             max_rank=10)
    np.testing.assert_allclose(result["cmc"], cmc, atol=1e-6)
    assert result["mAP"] == pytest.approx(mAP, abs=1e-6)
    assert result["mINP"] == pytest.approx(mINP, abs=1e-6)
    assert result["num_valid_queries"] == num_valid < len(qf)  # identity 999 is skipped


def test_centroid_errors_name_the_argument():
    _, gf, _, g_pids, _, g_cams = centroid_problem(3, num_g=20)
    with pytest.raises(ValueError, match="no image after dropping junk"):
        compute_centroids(gf, np.full(20, -1), g_cams)
    with pytest.raises(ValueError, match="g_camids"):
        compute_centroids(gf, g_pids, g_cams[:5])
    with pytest.raises(ValueError, match="unknown metric"):
        compute_centroids(gf, g_pids, g_cams, "manhattan")
    with pytest.raises(ValueError, match="use_centroids"):
        evaluate_features(gf, gf, g_pids, g_pids, g_cams, g_cams, use_centroids="yes")
