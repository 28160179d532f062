"""CMC / mAP / mINP (metrics.evaluation + both ranking kernels) against brute-force loops."""
import os
import subprocess
import sys

import numpy as np
import pytest

import metrics
from metrics import compute_CMC_mAP, evaluate_rank
from metrics import rank_numpy

BACKENDS = ["numpy", pytest.param("cython", marks=pytest.mark.skipif(
    not metrics.CYTHON_AVAILABLE, reason="run `python setup.py build_ext --inplace` first"))]
MASK64 = (1 << 64) - 1


def brute_force(distmat, q_pids, g_pids, q_camids, g_camids, max_rank):
    """Definition-level reference: stable sort by (distance, gallery index) per query."""
    num_g = len(g_pids)
    max_rank = min(max_rank, num_g)
    cmcs, aps, inps = [], [], []
    for q in range(len(q_pids)):
        order = sorted(range(num_g), key=lambda j: (float(distmat[q, j]), j))
        order = [j for j in order if not (g_pids[j] == q_pids[q] and g_camids[j] == q_camids[q])]
        positions = [i for i, j in enumerate(order) if g_pids[j] == q_pids[q]]
        if not positions:
            continue
        aps.append(sum((k + 1) / (p + 1) for k, p in enumerate(positions)) / len(positions))
        inps.append(len(positions) / (positions[-1] + 1))
        cmcs.append([1.0 if positions[0] <= r else 0.0 for r in range(max_rank)])
    return np.mean(cmcs, axis=0), float(np.mean(aps)), float(np.mean(inps)), len(aps)


def random_problem(rng, num_q=25, num_g=120, num_ids=12, num_cams=3, integer_distances=False):
    # pid 0 = distractors, -1 = junk-like entries: both are just "other identities" here.
    q_pids = rng.integers(1, num_ids, num_q)
    g_pids = rng.integers(-1, num_ids, num_g)
    q_camids = rng.integers(0, num_cams, num_q)
    g_camids = rng.integers(0, num_cams, num_g)
    if integer_distances:  # many exact ties
        distmat = rng.integers(0, 4, (num_q, num_g)).astype(np.float32)
    else:
        distmat = rng.random((num_q, num_g), dtype=np.float32)
    return distmat, q_pids, g_pids, q_camids, g_camids


def assert_matches_reference(result, reference):
    cmc, mAP, mINP, num_valid = reference
    np.testing.assert_allclose(result["cmc"], cmc, atol=1e-6)
    assert result["cmc"].dtype == np.float32
    assert abs(result["mAP"] - mAP) < 1e-6
    assert abs(result["mINP"] - mINP) < 1e-6
    assert result["num_valid_queries"] == num_valid


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_market_protocol_matches_brute_force(backend, seed, ties):
    rng = np.random.default_rng(seed)
    problem = random_problem(rng, integer_distances=ties)
    # Some queries have no valid match (identity absent or only same-camera images).
    problem[1][:3] = 999
    result = evaluate_rank(*problem, max_rank=15, backend=backend)
    assert_matches_reference(result, brute_force(*problem, max_rank=15))
    cmc, mAP = compute_CMC_mAP(*problem, max_rank=15, backend=backend)
    np.testing.assert_array_equal(cmc, result["cmc"])
    assert mAP == result["mAP"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_computed_example_with_same_camera_filtering(backend):
    # gallery:    0     1     2     3     4     5
    g_pids = np.array([7, 7, 3, 0, 7, 3])
    g_camids = np.array([1, 2, 2, 1, 1, 2])
    distmat = np.array([[0.1, 0.4, 0.2, 0.3, 0.5, 0.05]], dtype=np.float32)
    # query pid 7 cam 1: gallery 0 and 4 are same pid + same cam -> removed.
    # filtered ranking: 5 (pid 3), 2 (pid 3), 3 (pid 0), 1 (pid 7)
    result = evaluate_rank(distmat, [7], g_pids, [1], g_camids, max_rank=5, backend=backend)
    np.testing.assert_allclose(result["cmc"], [0, 0, 0, 1, 1])
    assert result["mAP"] == pytest.approx(1 / 4)
    assert result["mINP"] == pytest.approx(1 / 4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tie_rule_is_stable_sort_by_gallery_index(backend):
    g_pids = np.array([5, 1, 1, 2, 1])
    g_camids = np.array([0, 0, 0, 0, 0])
    distmat = np.zeros((1, 5), dtype=np.float32)  # all tied
    distmat[0, 4] = -0.0  # -0.0 ties with +0.0
    result = evaluate_rank(distmat, [1], g_pids, [9], g_camids, max_rank=5, backend=backend)
    # order = 0 (pid5), 1 (match), 2 (match), 3 (pid2), 4 (match)
    np.testing.assert_allclose(result["cmc"], [0, 1, 1, 1, 1])
    assert result["mAP"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 5) / 3)
    assert result["mINP"] == pytest.approx(3 / 5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_rank_larger_than_gallery_is_clipped_with_note(backend, capsys):
    rng = np.random.default_rng(5)
    problem = random_problem(rng, num_q=6, num_g=8, num_ids=3)
    result = evaluate_rank(*problem, max_rank=50, backend=backend)
    assert len(result["cmc"]) == 8
    assert "Note" in capsys.readouterr().out
    assert_matches_reference(result, brute_force(*problem, max_rank=50))
    assert result["cmc"][-1] == pytest.approx(1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_errors_are_clear(backend):
    d = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="no valid query"):
        evaluate_rank(d, [1, 2], [3, 3, 3], [0, 0], [1, 1, 1], backend=backend)
    with pytest.raises(ValueError, match="no valid query"):  # only same-camera matches
        evaluate_rank(d, [1, 2], [1, 2, 2], [0, 0], [0, 0, 0], backend=backend)
    with pytest.raises(ValueError, match="g_pids"):
        evaluate_rank(d, [1, 2], [3, 3], [0, 0], [1, 1, 1], backend=backend)
    with pytest.raises(ValueError, match="NaN"):
        bad = d.copy()
        bad[1, 2] = np.nan
        evaluate_rank(bad, [1, 2], [1, 2, 2], [0, 0], [1, 1, 1], backend=backend)
    with pytest.raises(ValueError, match="2-D"):
        evaluate_rank(np.ones(3), [1], [1, 2, 2], [0], [1, 1, 1], backend=backend)
    with pytest.raises(ValueError, match="max_rank"):
        evaluate_rank(d, [1, 2], [1, 2, 2], [0, 0], [1, 1, 1], max_rank=0, backend=backend)


def test_cython_and_numpy_agree_exactly_on_a_larger_problem():
    if not metrics.CYTHON_AVAILABLE:
        pytest.skip("run `python setup.py build_ext --inplace` first")
    rng = np.random.default_rng(11)
    problem = random_problem(rng, num_q=300, num_g=2000, num_ids=80, num_cams=6)
    for cuhk03 in (False, True):
        a = evaluate_rank(*problem, use_metric_cuhk03=cuhk03, backend="cython")
        b = evaluate_rank(*problem, use_metric_cuhk03=cuhk03, backend="numpy")
        np.testing.assert_array_equal(a["cmc"], b["cmc"])
        assert abs(a["mAP"] - b["mAP"]) < 1e-12 and abs(a["mINP"] - b["mINP"]) < 1e-12


def _splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def cuhk03_brute_force_cmc(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, seed=0):
    """Documented sampling: repeat r picks member (h % size) of each identity's gallery list
    (ascending index; for the query identity only its other-camera images), with
    h = splitmix64(splitmix64(splitmix64(seed) ^ q) + r * num_ids + identity_rank)."""
    ids = sorted(set(g_pids.tolist()))
    cmcs = []
    for q in range(len(q_pids)):
        valid = [j for j in range(len(g_pids))
                 if g_pids[j] == q_pids[q] and g_camids[j] != q_camids[q]]
        if not valid:
            continue
        seed_q = _splitmix64(_splitmix64(seed) ^ q)
        cmc = np.zeros(max_rank)
        for r in range(10):
            picks = []
            for i, pid in enumerate(ids):
                pool = valid if pid == q_pids[q] else [
                    j for j in range(len(g_pids)) if g_pids[j] == pid]
                h = _splitmix64((seed_q + r * len(ids) + i) & MASK64)
                picks.append(pool[h % len(pool)])
            order = sorted(picks, key=lambda j: (float(distmat[q, j]), j))
            first = [g_pids[j] == q_pids[q] for j in order].index(True)
            cmc += np.arange(max_rank) >= first
        cmcs.append(cmc / 10)
    return np.mean(cmcs, axis=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuhk03_mode(backend):
    rng = np.random.default_rng(3)
    problem = random_problem(rng, num_q=15, num_g=90, num_ids=8)
    market = evaluate_rank(*problem, max_rank=6, backend=backend)
    cuhk = evaluate_rank(*problem, max_rank=6, use_metric_cuhk03=True, backend=backend)
    again = evaluate_rank(*problem, max_rank=6, use_metric_cuhk03=True, backend=backend)
    other_seed = evaluate_rank(*problem, max_rank=6, use_metric_cuhk03=True, cuhk03_seed=1,
                               backend=backend)
    np.testing.assert_array_equal(cuhk["cmc"], again["cmc"])  # reproducible
    assert not np.array_equal(cuhk["cmc"], other_seed["cmc"])
    assert np.all(np.diff(cuhk["cmc"]) >= 0) and 0 <= cuhk["cmc"][0] and cuhk["cmc"][-1] <= 1
    # single-shot gallery is smaller than the multi-shot one: CMC can only be at least as high
    assert np.all(cuhk["cmc"] >= market["cmc"] - 1e-6)
    assert cuhk["mAP"] == pytest.approx(market["mAP"], abs=1e-12)  # AP on the full list
    np.testing.assert_allclose(cuhk["cmc"], cuhk03_brute_force_cmc(*problem, max_rank=6),
                               atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuhk03_one_image_per_identity_equals_market(backend):
    rng = np.random.default_rng(4)
    num_g = 30
    g_pids = np.arange(num_g)  # one gallery image per identity: sampling is deterministic
    g_camids = np.ones(num_g, dtype=np.int64)
    q_pids = rng.integers(0, num_g, 20)
    q_camids = np.zeros(20, dtype=np.int64)
    distmat = rng.random((20, num_g), dtype=np.float32)
    a = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, 10, True, backend=backend)
    b = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, 10, False, backend=backend)
    np.testing.assert_allclose(a["cmc"], b["cmc"], atol=1e-7)


def test_sort_keys_follow_the_tie_rule():
    values = np.array([[0.5, -0.0, 0.0, -1.5, np.inf, 0.5, -np.inf, 1e-30]], dtype=np.float32)
    keys = rank_numpy.sort_keys(values)[0]
    expected = sorted(range(values.shape[1]), key=lambda j: (float(values[0, j]), j))
    assert np.argsort(keys, kind="stable").tolist() == expected


def test_warns_once_when_extension_missing():
    code = ("import sys, warnings; sys.modules['metrics.rank_cy'] = None\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    import metrics, metrics.evaluation\n"
            "    import importlib; importlib.import_module('metrics')\n"
            "msgs = [str(x.message) for x in w if 'build_ext --inplace' in str(x.message)]\n"
            "assert len(msgs) == 1, msgs\n"
            "assert not metrics.CYTHON_AVAILABLE\n"
            "assert metrics.evaluation._kernel('auto') is metrics.rank_numpy\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


@pytest.mark.skipif(not metrics.CYTHON_AVAILABLE,
                    reason="run `python setup.py build_ext --inplace` first")
@pytest.mark.parametrize("integer_distances", [False, True])
def test_both_cython_strategies_match_brute_force(integer_distances):
    from metrics import evaluation, rank_cy

    rng = np.random.default_rng(21)
    problem = random_problem(rng, num_q=30, num_g=150, num_ids=4,  # large groups: m up to ~40
                             integer_distances=integer_distances)
    distmat, q_pids, g_pids, q_camids, g_camids = problem
    unique, starts, members = evaluation.group_gallery(g_pids)
    groups = evaluation.query_groups(q_pids, unique)
    cmc, mAP, mINP, num_valid = brute_force(*problem, max_rank=150)
    for strategy in (0, 1, 2):  # auto, scan + binary search, vectorised counting
        num_rel, ap, inp, ranks = rank_cy.rank_queries(distmat, groups, q_camids, g_camids,
                                                       starts, members, strategy=strategy)
        valid = num_rel > 0
        assert valid.sum() == num_valid
        assert abs(ap[valid].mean() - mAP) < 1e-9 and abs(inp[valid].mean() - mINP) < 1e-9
        first = np.bincount(ranks[valid, 0], minlength=150)
        np.testing.assert_allclose(np.cumsum(first) / num_valid, cmc, atol=1e-12)
