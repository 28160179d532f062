# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled per-query ranking kernel (build: ``python setup.py build_ext --inplace``).

Same contract and numbers as :func:`metrics.rank_numpy.rank_queries`; see
:mod:`metrics.evaluation` for the protocol. No full argsort: per query only the m true
matches are sorted, and their positions come from one of two O(G)-memory-free strategies,
picked per query from how many entries precede the last true match:

* scan: one pass over the row; entries ranked before the last true match are placed
  among the true matches by binary search (O(G + n_before log m)); fast for good features;
* count: one vectorised count of closer entries per true match (O(G m), branch-free);
  fast when true matches are spread over the row (poor features, random distances).

Queries run in parallel with OpenMP (``prange``, GIL released).

Ordering rule (= a stable sort of the row): entry a ranks before entry b when
``d_a < d_b``, or ``d_a == d_b`` and ``a < b`` (gallery index). Both are encoded in one
uint64 key: order-preserving bits of the float32 distance in the high word, the
gallery index in the low word.
"""
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, qsort
from libc.string cimport memcpy

import numpy as np

# Strategy choice: counting (O(G m), vectorised) is used when
# entries_before_last_match * _SCAN_COST > m * G, i.e. when the scan would spend too long
# placing entries by binary search. Measured on Market-size data (see benchmarks/).
cdef int64_t _SCAN_COST = 100


cdef inline uint64_t _key(float d, int64_t g) noexcept nogil:
    cdef float z = d + <float>0.0  # -0.0 -> +0.0 so both zeros compare equal, as in a sort
    cdef uint32_t u
    memcpy(&u, &z, 4)
    if u & <uint32_t>0x80000000u:
        u = ~u
    else:
        u = u | <uint32_t>0x80000000u
    return ((<uint64_t>u) << 32) | <uint64_t>g


cdef inline uint64_t _splitmix64(uint64_t x) noexcept nogil:
    x = x + <uint64_t>0x9E3779B97F4A7C15ULL
    x = (x ^ (x >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
    x = (x ^ (x >> 27)) * <uint64_t>0x94D049BB133111EBULL
    return x ^ (x >> 31)


cdef inline int64_t _count_less(const uint64_t* keys, int64_t m, uint64_t x) noexcept nogil:
    """Number of keys[0:m] (sorted, m >= 1) strictly below x; branch-free binary search."""
    cdef const uint64_t* base = keys
    cdef int64_t n = m, half
    while n > 1:
        half = n >> 1
        base = base + half if base[half] < x else base
        n -= half
    return (base - keys) + (base[0] < x)


cdef int _cmp_u64(const void* a, const void* b) noexcept nogil:
    cdef uint64_t x = (<const uint64_t*>a)[0], y = (<const uint64_t*>b)[0]
    return (x > y) - (x < y)


cdef inline void _sort_u64(uint64_t* a, int64_t n) noexcept nogil:
    cdef int64_t i, j
    cdef uint64_t v
    if n > 48:
        qsort(a, <size_t>n, sizeof(uint64_t), _cmp_u64)
        return
    for i in range(1, n):
        v = a[i]
        j = i - 1
        while j >= 0 and a[j] > v:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = v


cdef inline int64_t _count_le_nan(const float* row, int64_t n, float t,
                                  int64_t* nan_count) noexcept nogil:
    """#(row <= t) and #NaN; simple counting loops so the compiler vectorises them."""
    cdef int32_t c = 0, bad = 0
    cdef int64_t g
    for g in range(n):
        c += row[g] <= t
        bad += row[g] != row[g]
    nan_count[0] = bad
    return c


cdef inline int64_t _count_lt_eq(const float* row, int64_t n, float t,
                                 int64_t* eq_count) noexcept nogil:
    """#(row < t) and #(row == t) (vectorised)."""
    cdef int32_t c = 0, e = 0
    cdef int64_t g
    for g in range(n):
        c += row[g] < t
        e += row[g] == t
    eq_count[0] = e
    return c


cdef void _positions_by_scan(const float* row, int64_t num_g, const uint64_t* mk, int64_t m,
                             int64_t start, int64_t end, const int64_t* members,
                             int64_t* hist, int64_t* pos) noexcept nogil:
    """Positions via one pass: each entry ranked before the last true match is bucketed by
    how many true matches precede it (binary search). Cheap when few entries come before
    the last true match (good features)."""
    cdef int64_t g, i, k, below
    cdef uint64_t key, kmax = mk[m - 1]
    cdef float d, dmax = row[<int64_t>(kmax & <uint64_t>0xFFFFFFFFu)]
    for k in range(m + 1):
        hist[k] = 0
    for g in range(num_g):
        d = row[g]
        if d > dmax:
            continue
        key = _key(d, g)
        if key < kmax:
            hist[_count_less(mk, m, key)] += 1
    # Same-pid entries were counted above, but they are either true matches (counted via
    # k below) or same-camera images (excluded from the ranking): take them out again.
    for i in range(start, end):
        g = members[i]
        key = _key(row[g], g)
        if key < kmax:
            hist[_count_less(mk, m, key)] -= 1
    below = 0
    for k in range(m):
        below += hist[k]
        pos[k] = below + k


cdef void _positions_by_counting(const float* row, int64_t num_g, const uint64_t* mk,
                                 int64_t m, int64_t q_cam, const int64_t* g_camids,
                                 int64_t start, int64_t end, const int64_t* members,
                                 int64_t* pos) noexcept nogil:
    """Positions via one vectorised count per true match: O(G m) but branch-free; wins when
    many entries come before the last true match (poor features, random distances)."""
    cdef int64_t k, g, i, lt = 0, eq = 0, ahead, gk
    cdef float t, prev = 0.0
    cdef uint64_t key
    for k in range(m):
        gk = <int64_t>(mk[k] & <uint64_t>0xFFFFFFFFu)
        t = row[gk]
        if k == 0 or t != prev:
            lt = _count_lt_eq(row, num_g, t, &eq)
            prev = t
        ahead = lt
        if eq > 1:  # exact ties with other entries: earlier gallery index ranks first
            for g in range(gk):
                ahead += row[g] == t
        for i in range(start, end):  # same-camera images of the query identity are removed
            g = members[i]
            if g_camids[g] == q_cam:
                key = _key(row[g], g)
                ahead -= key < mk[k]
        pos[k] = ahead


cdef int _rank_one(const float* row, int64_t num_g, int64_t grp, int64_t q_cam,
                   const int64_t* g_camids, const int64_t* starts, const int64_t* members,
                   int64_t num_groups, int64_t num_repeats, uint64_t seed_q, int strategy,
                   double* ap_out, double* inp_out, int64_t* num_rel_out,
                   int64_t* ranks_out) noexcept nogil:
    """Rank one query; returns 1 if the row holds NaN, -1 on allocation failure, else 0."""
    cdef int64_t start, end, m = 0, i, g, k, r = 0, j, gi, size, cnt, num_before, nan_count
    cdef uint64_t* mk
    cdef int64_t* pos
    cdef int64_t* hist
    cdef int64_t* vidx
    cdef uint64_t smk, u
    cdef double ap = 0.0

    num_rel_out[0] = 0
    ap_out[0] = 0.0
    inp_out[0] = 0.0
    if grp < 0:
        return 0
    start = starts[grp]
    end = starts[grp + 1]
    for i in range(start, end):
        if g_camids[members[i]] != q_cam:
            m += 1
    if m == 0:
        return 0

    mk = <uint64_t*>malloc((m + 1) * sizeof(uint64_t))
    vidx = <int64_t*>malloc((m + 1) * sizeof(int64_t))
    pos = <int64_t*>malloc((m + 1) * sizeof(int64_t))
    hist = <int64_t*>malloc((m + 1) * sizeof(int64_t))
    if mk == NULL or vidx == NULL or pos == NULL or hist == NULL:
        free(mk)
        free(vidx)
        free(pos)
        free(hist)
        return -1
    j = 0
    for i in range(start, end):
        g = members[i]
        if g_camids[g] != q_cam:
            vidx[j] = g  # ascending gallery index (members are sorted)
            mk[j] = _key(row[g], g)
            j += 1
    _sort_u64(mk, m)

    # How many entries lie at or before the last true match decides the cheaper strategy.
    num_before = _count_le_nan(row, num_g, row[<int64_t>(mk[m - 1] & <uint64_t>0xFFFFFFFFu)],
                               &nan_count)
    if nan_count > 0:
        free(mk)
        free(vidx)
        free(pos)
        free(hist)
        return 1
    if strategy == 0:
        strategy = 2 if (m <= 64 and num_before * _SCAN_COST > m * num_g) else 1
    if strategy == 1:
        _positions_by_scan(row, num_g, mk, m, start, end, members, hist, pos)
    else:
        _positions_by_counting(row, num_g, mk, m, q_cam, g_camids, start, end, members, pos)

    for k in range(m):
        r = pos[k]  # 0-based position of the k-th true match in the filtered list
        ap += (k + 1.0) / (r + 1.0)
    if num_repeats == 0:
        ranks_out[0] = pos[0]
    num_rel_out[0] = m
    ap_out[0] = ap / m
    inp_out[0] = m / (r + 1.0)

    # CUHK03 single-shot CMC: per repeat, one random image per gallery identity (for the
    # query's identity: one of its valid matches); rank = sampled identities ranked before.
    for j in range(num_repeats):
        u = _splitmix64(seed_q + <uint64_t>(j * num_groups + grp))
        g = vidx[<int64_t>(u % <uint64_t>m)]
        smk = _key(row[g], g)
        cnt = 0
        for gi in range(num_groups):
            if gi == grp:
                continue
            size = starts[gi + 1] - starts[gi]
            u = _splitmix64(seed_q + <uint64_t>(j * num_groups + gi))
            g = members[starts[gi] + <int64_t>(u % <uint64_t>size)]
            if _key(row[g], g) < smk:
                cnt += 1
        ranks_out[j] = cnt

    free(mk)
    free(vidx)
    free(pos)
    free(hist)
    return 0


def rank_queries(distmat, q_group, q_camids, g_camids, starts, members,
                 int num_repeats=0, unsigned long long seed=0, long long q_offset=0,
                 int num_threads=0, int strategy=0):
    """Per-query statistics; see :func:`metrics.rank_numpy.rank_queries` for the contract.

    ``strategy`` (for tests/benchmarks): 0 = pick per query, 1 = scan with binary search,
    2 = one vectorised count per true match; all give identical results.

    Returns ``(num_rel int64[Q], ap float64[Q], inp float64[Q], ranks int64[Q, max(1, R)])``.
    Raises ValueError when distmat holds NaN.
    """
    cdef const float[:, ::1] D = np.ascontiguousarray(distmat, dtype=np.float32)
    cdef const int64_t[::1] qg = np.ascontiguousarray(q_group, dtype=np.int64)
    cdef const int64_t[::1] qc = np.ascontiguousarray(q_camids, dtype=np.int64)
    cdef const int64_t[::1] gc = np.ascontiguousarray(g_camids, dtype=np.int64)
    cdef const int64_t[::1] st = np.ascontiguousarray(starts, dtype=np.int64)
    cdef const int64_t[::1] mem = np.ascontiguousarray(members, dtype=np.int64)
    cdef int64_t num_q = D.shape[0], num_g = D.shape[1]
    cdef int64_t num_groups = st.shape[0] - 1
    cdef int64_t R = num_repeats
    if num_g == 0:
        raise ValueError("rank_queries: empty gallery")
    if qg.shape[0] != num_q or qc.shape[0] != num_q or gc.shape[0] != num_g:
        raise ValueError("rank_queries: inconsistent array lengths")
    if num_g >= (<int64_t>1 << 31):
        raise ValueError("rank_queries: galleries of 2**31 or more entries are not supported")
    num_rel_arr = np.zeros(num_q, dtype=np.int64)
    ap_arr = np.zeros(num_q, dtype=np.float64)
    inp_arr = np.zeros(num_q, dtype=np.float64)
    ranks_arr = np.full((num_q, max(1, num_repeats)), -1, dtype=np.int64)
    status_arr = np.zeros(num_q, dtype=np.int32)
    cdef int64_t[::1] nr = num_rel_arr
    cdef double[::1] apv = ap_arr
    cdef double[::1] inpv = inp_arr
    cdef int64_t[:, ::1] rk = ranks_arr
    cdef int[::1] status = status_arr
    cdef uint64_t seed_base = _splitmix64(<uint64_t>seed)
    cdef uint64_t off = <uint64_t>q_offset
    cdef int64_t q
    cdef int nt = num_threads
    if strategy not in (0, 1, 2):
        raise ValueError("strategy must be 0, 1 or 2")
    if num_q == 0:
        return num_rel_arr, ap_arr, inp_arr, ranks_arr
    if nt <= 0:
        for q in prange(num_q, nogil=True, schedule="dynamic", chunksize=4):
            status[q] = _rank_one(&D[q, 0], num_g, qg[q], qc[q], &gc[0], &st[0], &mem[0],
                                  num_groups, R, _splitmix64(seed_base ^ (off + <uint64_t>q)), strategy,
                                  &apv[q], &inpv[q], &nr[q], &rk[q, 0])
    else:
        for q in prange(num_q, nogil=True, schedule="dynamic", chunksize=4, num_threads=nt):
            status[q] = _rank_one(&D[q, 0], num_g, qg[q], qc[q], &gc[0], &st[0], &mem[0],
                                  num_groups, R, _splitmix64(seed_base ^ (off + <uint64_t>q)), strategy,
                                  &apv[q], &inpv[q], &nr[q], &rk[q, 0])
    if (status_arr < 0).any():
        raise MemoryError("rank_queries: out of memory")
    if (status_arr > 0).any():
        raise ValueError("distmat contains NaN (row %d); fix the features/distances first"
                         % (int(np.flatnonzero(status_arr > 0)[0]) + int(q_offset)))
    return num_rel_arr, ap_arr, inp_arr, ranks_arr
