"""Average query expansion (metrics.query_expansion) against a per-image Python loop."""
import math

import numpy as np
import pytest

import metrics.query_expansion as query_expansion
from metrics import average_query_expansion


def clustered(seed, num_q=40, num_g=150, dim=10, num_ids=12):
    rng = np.random.default_rng(seed)
    centres = 3.0 * rng.standard_normal((num_ids, dim))
    q = centres[rng.integers(0, num_ids, num_q)] + rng.standard_normal((num_q, dim))
    g = centres[rng.integers(0, num_ids, num_g)] + rng.standard_normal((num_g, dim))
    return q.astype(np.float32), g.astype(np.float32)


def loop_aqe(qf, gf, qe_k, alpha, qe_times):
    """fast-reid's rule, one image at a time: mean of sim**alpha-weighted k nearest features
    (itself included) of all queries and gallery images; ties to the lower index."""
    feats = [list(map(float, row)) for row in np.concatenate([qf, gf])]
    n, k = len(feats), min(qe_k, len(feats))
    for _ in range(qe_times):
        units = []
        for f in feats:
            norm = math.sqrt(sum(x * x for x in f))
            units.append([x / norm if norm > 0 else 0.0 for x in f])
        expanded = []
        for i in range(n):
            sims = [sum(a * b for a, b in zip(units[i], units[j])) for j in range(n)]
            nearest = sorted(range(n), key=lambda j: (-sims[j], j))[:k]
            new = [0.0] * len(feats[i])
            for j in nearest:
                w = sims[j] ** alpha if alpha != int(alpha) else math.pow(sims[j], alpha)
                new = [a + w * b for a, b in zip(new, feats[j])]
            expanded.append([a / k for a in new])
        feats = expanded
    out = np.array(feats)
    return out[:len(qf)], out[len(qf):]


# at most 2 rounds: each round pulls neighbours together, until float32 similarities can no
# longer order them the way the float64 loop does
@pytest.mark.parametrize("qe_k, alpha, qe_times", [(5, 3.0, 1), (1, 3.0, 1), (10, 0.0, 1),
                                                    (4, 2.5, 2), (3, 3, 2)])
def test_expansion_matches_python_loop(qe_k, alpha, qe_times):
    qf, gf = clustered(qe_k + qe_times)
    eq, eg = average_query_expansion(qf, gf, qe_k=qe_k, alpha=alpha, qe_times=qe_times)
    lq, lg = loop_aqe(qf, gf, qe_k, alpha, qe_times)
    assert eq.dtype == eg.dtype == np.float32
    assert eq.shape == qf.shape and eg.shape == gf.shape
    scale = np.abs(lg).max()
    np.testing.assert_allclose(eq, lq, atol=2e-5 * scale, rtol=1e-5)
    np.testing.assert_allclose(eg, lg, atol=2e-5 * scale, rtol=1e-5)


def test_k_1_keeps_features_and_k_above_n_uses_every_image():
    qf, gf = clustered(7, num_q=5, num_g=9)
    eq, eg = average_query_expansion(qf, gf, qe_k=1)  # itself, with weight 1 ** alpha
    np.testing.assert_allclose(eq, qf, rtol=1e-6)
    np.testing.assert_allclose(eg, gf, rtol=1e-6)
    eq, eg = average_query_expansion(qf, gf, qe_k=100, alpha=3.0)  # k = min(100, 14)
    lq, lg = loop_aqe(qf, gf, 100, 3.0, 1)
    np.testing.assert_allclose(np.concatenate([eq, eg]), np.concatenate([lq, lg]),
                               atol=1e-4, rtol=1e-5)


def test_ties_go_to_the_lower_index_and_odd_alpha_keeps_the_sign():
    # exact similarities: rows 0, 1 and 3 are the same direction
    qf = np.array([[1, 0], [2, 0]], dtype=np.float32)
    gf = np.array([[0, 1], [3, 0], [-1, 0]], dtype=np.float32)
    eq, eg = average_query_expansion(qf, gf, qe_k=2, alpha=3.0)
    np.testing.assert_allclose(eq[0], [1.5, 0])      # (f0 + f1) / 2: index 3 loses the tie
    np.testing.assert_allclose(eg[0], [0, 0.5])      # (f2 + 0 ** 3 * f0) / 2
    eq, eg = average_query_expansion(qf, gf, qe_k=5, alpha=3.0)
    # image 4 = (-1, 0): similarity -1 to 0, 1, 3 -> weight (-1) ** 3 = -1 each
    np.testing.assert_allclose(eg[2], ([-1, 0] - np.array([6, 0])) / 5)


def test_chunked_blocks_give_identical_results(monkeypatch):
    qf, gf = clustered(11, num_q=300, num_g=200)
    full = average_query_expansion(qf, gf, qe_k=6)
    monkeypatch.setattr(query_expansion, "_BLOCK_ENTRIES", 1)  # 128 rows per step
    chunked = average_query_expansion(qf, gf, qe_k=6)
    np.testing.assert_array_equal(full[0], chunked[0])
    np.testing.assert_array_equal(full[1], chunked[1])


def test_bad_arguments_raise_value_error():
    qf, gf = clustered(12, num_q=4, num_g=6)
    for kwargs, name in ((dict(qe_k=0), "qe_k"), (dict(qe_k=True), "qe_k"),
                         (dict(qe_k=2.0), "qe_k"), (dict(qe_times=0), "qe_times"),
                         (dict(alpha=-1.0), "alpha"), (dict(alpha=float("nan")), "alpha"),
                         (dict(alpha="3"), "alpha")):
        with pytest.raises(ValueError, match=name):
            average_query_expansion(qf, gf, **kwargs)
    with pytest.raises(ValueError, match="feature dimensions differ"):
        average_query_expansion(qf, gf[:, :3])
    bad = qf.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        average_query_expansion(bad, gf)
    opposite = np.array([[1, 0], [-1, 0]], dtype=np.float32)
    with pytest.raises(ValueError, match="non-integer alpha"):
        average_query_expansion(opposite[:1], opposite[1:], qe_k=2, alpha=2.5)
