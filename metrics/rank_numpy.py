"""Pure-NumPy per-query ranking kernel: fallback for the compiled ``metrics.rank_cy``.

Same algorithm, contract and numbers as the Cython version (``metrics/rank_cy.pyx``):
per query only the m true matches are sorted and every gallery entry is counted into the
gap between consecutive true matches (``np.searchsorted``), so no full argsort is needed.

Ordering rule (= a stable sort of the row): entry a ranks before entry b when
``d_a < d_b``, or ``d_a == d_b`` and ``a < b`` (gallery index); both are encoded in one
uint64 key (order-preserving float32 bits in the high word, the index in the low word).
"""
import numpy as np

_UINT64_MAX = np.uint64(np.iinfo(np.uint64).max)
_SIGN = np.uint32(0x80000000)
_ROWS_PER_BLOCK = 64  # rows whose uint64 keys are materialised at once (8 B per entry)


def sort_keys(rows, column_offset=0):
    """uint64 keys whose order is (distance, gallery index) — the tie rule of the metrics."""
    rows = np.asarray(rows, dtype=np.float32) + np.float32(0.0)  # fresh array; -0.0 -> +0.0
    u = rows.view(np.uint32)
    flip = np.negative(u >> np.uint32(31))  # all ones for negative floats, else 0
    flip |= _SIGN
    u ^= flip  # negative: ~u, non-negative: set the sign bit -> unsigned order = float order
    keys = u.astype(np.uint64)
    keys <<= np.uint64(32)
    keys |= np.arange(column_offset, column_offset + rows.shape[-1], dtype=np.uint64)
    return keys


def splitmix64(x):
    """SplitMix64 hash of a uint64 array (wrapping arithmetic), as in rank_cy.pyx."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def query_seed(seed, query_index):
    """Per-query stream seed for the CUHK03 sampling (independent of chunking/threads)."""
    base = splitmix64(np.array([seed], dtype=np.uint64))
    q = np.array([query_index], dtype=np.uint64)
    with np.errstate(over="ignore"):
        return splitmix64(base ^ q)[0]


def rank_queries(distmat, q_group, q_camids, g_camids, starts, members, num_repeats=0,
                 seed=0, q_offset=0, num_threads=0):
    """Per-query ranking statistics under the Market-1501 protocol.

    Args:
        distmat: (Q, G) float32 distances.
        q_group: (Q,) index of each query's identity among the gallery identity groups,
            -1 when the identity is absent from the gallery.
        q_camids, g_camids: camera ids.
        starts, members: gallery grouped by identity (CSR): group i holds gallery indices
            ``members[starts[i]:starts[i + 1]]`` in ascending order.
        num_repeats: 0 for the Market protocol; R > 0 for the CUHK03 single-shot CMC.
        seed, q_offset: the CUHK03 sampling of query q uses ``query_seed(seed, q_offset + q)``
            (seed in [0, 2**64), q_offset >= 0).
        num_threads: ignored (the compiled version uses it).

    Returns:
        num_rel int64[Q] (valid true matches; 0 = query skipped), ap float64[Q],
        inp float64[Q], ranks int64[Q, max(1, R)]: 0-based position of the first true match
        in the filtered list (Market) or of the sampled match per repeat (CUHK03); -1 when
        the query is skipped.
    """
    del num_threads
    distmat = np.ascontiguousarray(distmat, dtype=np.float32)
    q_group = np.asarray(q_group, dtype=np.int64)
    q_camids = np.asarray(q_camids, dtype=np.int64)
    g_camids = np.asarray(g_camids, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    members = np.asarray(members, dtype=np.int64)
    num_q, num_g = distmat.shape
    if num_g >= 2 ** 31:
        raise ValueError("rank_queries: galleries of 2**31 or more entries are not supported")
    num_groups = len(starts) - 1
    num_rel = np.zeros(num_q, dtype=np.int64)
    ap = np.zeros(num_q, dtype=np.float64)
    inp = np.zeros(num_q, dtype=np.float64)
    ranks = np.full((num_q, max(1, num_repeats)), -1, dtype=np.int64)
    sizes = np.diff(starts).astype(np.uint64)
    group_ids = np.arange(num_groups, dtype=np.uint64)

    for b0 in range(0, num_q, _ROWS_PER_BLOCK):
        block = distmat[b0:b0 + _ROWS_PER_BLOCK]
        if np.isnan(block).any():
            bad = b0 + int(np.flatnonzero(np.isnan(block).any(axis=1))[0]) + q_offset
            raise ValueError(f"distmat contains NaN (row {bad}); fix the features/distances first")
        keys = sort_keys(block)
        for i in range(block.shape[0]):
            q = b0 + i
            grp = q_group[q]
            if grp < 0:
                continue
            same_pid = members[starts[grp]:starts[grp + 1]]
            valid = same_pid[g_camids[same_pid] != q_camids[q]]  # ascending gallery index
            m = len(valid)
            if m == 0:
                continue
            row = keys[i]
            if num_repeats:
                row_keys = row.copy()  # unmasked, for the CUHK03 sampling below
            match_keys = np.sort(row[valid])
            kmax = match_keys[-1]
            row[same_pid] = _UINT64_MAX  # true matches are counted via k, junk not at all
            before = row[row < kmax]
            hist = np.bincount(np.searchsorted(match_keys, before, side="left"), minlength=m + 1)
            r = np.cumsum(hist[:m]) + np.arange(m)  # 0-based positions in the filtered list
            num_rel[q] = m
            ap[q] = np.cumsum(np.arange(1, m + 1) / (r + 1.0))[-1] / m
            inp[q] = m / (r[-1] + 1.0)
            if not num_repeats:
                ranks[q, 0] = r[0]
                continue
            seed_q = query_seed(seed, q_offset + q)
            with np.errstate(over="ignore"):
                counters = (np.arange(num_repeats, dtype=np.uint64)[:, None]
                            * np.uint64(num_groups) + group_ids[None, :])
                u = splitmix64(seed_q + counters)  # (R, num_groups)
            picks = members[(starts[:-1].astype(np.uint64) + u % sizes).astype(np.int64)]
            sampled = row_keys[picks]
            own = row_keys[valid[(u[:, grp] % np.uint64(m)).astype(np.int64)]]
            sampled[:, grp] = _UINT64_MAX
            ranks[q] = (sampled < own[:, None]).sum(axis=1)
    return num_rel, ap, inp, ranks
