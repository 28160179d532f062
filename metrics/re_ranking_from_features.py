"""Fast k-reciprocal re-ranking without the reference's dense (Q+G)^2 work arrays.

``re_ranking_features(query, gallery, ...)`` works from features, for sizes whose distance
matrices do not fit in memory (MSMT17); ``metrics.re_ranking_from_matrices.re_ranking_sparse`` is the
drop-in for the reference's three distance matrices and reuses the sparse steps here.

``re_ranking_features`` reproduces the reference ``metrics.re_ranking.re_ranking`` fed with the
exact distance matrices of the features (``exact_distance_matrix``: float64 arithmetic rounded
to float32), float32 operation for float32 operation, but:

1. one blocked float32 GEMM pass over the upper triangle of the (Q+G)^2 similarities (each
   block serves its rows and, transposed, its columns) keeps, per image, the L = max(k1+1, k2)
   + margin nearest candidates under a running threshold and the 4 farthest;
2. float32 keys fix the neighbour order except where keys around a cut that matters are
   closer than the float32 error bound: only those are re-scored in float64 (and, if doubt
   remains about images outside the list, the whole row; rare); the largest distance is made
   exact the same way;
3. k-reciprocal sets and their expansion are computed on the neighbour lists; the weights V
   (CSR), the query expansion and the Jaccard numerators (inverted index = CSC columns of the
   gallery rows) repeat the reference's float32 arithmetic on the sparse entries only, in the
   reference's summation order (``np.add.at`` adds sequentially);
4. the final ``(1-λ)·jaccard + λ·original`` is produced in query chunks, the original distances
   by float64 GEMMs rounded to float32 as the reference's input.

The output then equals the reference's bit for bit, except (i) images at exactly equal float32
distance, which ``np.argsort`` orders arbitrarily (here: by exact distance, then index), and
(ii) the rare pair whose float64 dot product rounds to a neighbouring float32 when summed in a
different order (a 1-ulp change).

Memory is O((Q+G)·(d + set sizes)) plus one query chunk; time is dominated by the
(Q+G)^2·d/2 float32 multiply-adds of step 1 and the Q·G·d float64 ones of step 4.
"""
import contextlib
import time

import numpy as np
import scipy.sparse as sp

METRICS = ("cosine", "euclidean")
_BLOCK = 2048              # rows/columns per block of the neighbour pass
_MARGIN = 8                # extra float32 candidates per image past the last cut
_FAR = 4                   # farthest candidates kept per image (exact largest distance)
_UNIT = 2.0 ** -24         # float32 unit roundoff
_PAIR_CHUNK = 2048         # pairs per float64 re-scoring step
_ROW_BLOCK = 512           # float64 GEMM rows of the final blend, aligned to query indices
_COL_BLOCK = 4096          # float64 GEMM gallery columns
_CACHE_BYTES = 1 << 30     # keep float64 copies of the features when they fit in this
_OUTPUT_ENTRIES = 1 << 24  # distances per yielded chunk by default (64 MB of float32)
_STEP_ENTRIES = 1 << 21    # distances per internal Jaccard step
_WORK_BUDGET = 1 << 21     # (query, image, gallery) Jaccard terms per internal step

# Diagnostics of the latest run, for benchmarks: float64 re-scored keys, rows recomputed in
# float64, non-zeros of V, (wall, CPU) seconds per phase.
LAST_RUN_STATS = {}


class _PhaseClock:
    """Wall and CPU seconds per phase (``with clock("name"): ...``), accumulated."""

    def __init__(self):
        self.seconds = {}

    @contextlib.contextmanager
    def __call__(self, phase):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            total_wall, total_cpu = self.seconds.get(phase, (0.0, 0.0))
            self.seconds[phase] = (total_wall + time.perf_counter() - wall,
                                   total_cpu + time.process_time() - cpu)


def validate_parameters(k1, k2, lambda_value):
    """Raise ValueError for re-ranking parameters outside their domain."""
    for name, k in (("k1", k1), ("k2", k2)):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {k!r}")
    if isinstance(lambda_value, bool) or not isinstance(lambda_value, (int, float, np.number)) \
            or not 0.0 <= float(lambda_value) <= 1.0:
        raise ValueError(f"lambda_value must be a number in [0, 1], got {lambda_value!r}")


def _as_features(x, name):
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (num_samples, feature_dim) array, "
                         f"got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contain NaN or inf; check the feature extractor")
    return x


class _Features:
    """Query+gallery rows (queries first) with float32 and float64 distance arithmetic.

    A "key" orders distances: the distance itself (cosine) or its square (euclidean).
    """

    def __init__(self, query, gallery, metric):
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; use one of {METRICS}")
        query = _as_features(query, "query features")
        gallery = _as_features(gallery, "gallery features")
        if query.shape[1] != gallery.shape[1]:
            raise ValueError(f"feature dimensions differ: query {query.shape[1]} vs gallery "
                             f"{gallery.shape[1]}")
        self.metric = metric
        self.num_query = len(query)
        self.raw = np.concatenate([query, gallery])
        n = len(self.raw)
        cache = self.raw.size * 8 <= _CACHE_BYTES  # float64 rows: faster exact re-scoring
        self._x64 = np.empty(self.raw.shape) if cache else None
        self._last_block = None  # (first row, float32 distances) of the last blend block
        self.sq64 = np.empty(n)
        for s in range(0, n, 4096):
            blk = self.raw[s:s + 4096].astype(np.float64)
            self.sq64[s:s + 4096] = np.einsum("ij,ij->i", blk, blk)
            if cache:
                self._x64[s:s + 4096] = blk
        if metric == "cosine":
            norm = np.sqrt(self.sq64)
            self.inv64 = np.zeros(n)
            np.divide(1.0, norm, out=self.inv64, where=norm > 0)  # zero vector: distance 1
            self.sq32 = None
            if cache:  # unit rows; the float32 GEMMs use them rounded
                self._x64 *= self.inv64[:, None]
                self.x32 = self._x64.astype(np.float32)
                self.raw = None  # rows64 reads the float64 copy
            else:
                self.x32 = self.raw * self.inv64.astype(np.float32)[:, None]
        else:
            self.x32 = self.raw
            self.sq32 = self.sq64.astype(np.float32)

    def __len__(self):
        return len(self.x32)

    def rows64(self, idx):
        """Float64 rows used for exact distances (unit-normalised for cosine)."""
        if self._x64 is not None:
            return self._x64[idx]
        rows = self.raw[idx].astype(np.float64)
        if self.metric == "cosine":
            rows *= self.inv64[idx][..., None]
        return rows

    def key_from_dot(self, dot, i, j):
        """Exact key from float64 dot products."""
        if self.metric == "cosine":
            key = np.clip(1.0 - dot, 0.0, 2.0)
        else:
            key = np.maximum(self.sq64[i] + self.sq64[j] - 2.0 * dot, 0.0)
        return np.where(i == j, 0.0, key)  # self-distance is exactly 0, as sklearn

    def distance_from_key(self, key):
        return key if self.metric == "cosine" else np.sqrt(key)

    def pair_keys(self, i, j):
        """Exact float64 keys of the pairs (i[p], j[p]), ``i`` sorted (non-decreasing).

        Pairs sharing ``i`` are scored together, so row i is gathered once per group.
        """
        out = np.empty(len(i))
        if len(i) == 0:
            return out
        heads = np.flatnonzero(np.r_[True, i[1:] != i[:-1]])
        sizes = np.diff(np.r_[heads, len(i)])
        g = 0
        while g < len(heads):  # groups of similar total size, padded to the widest
            width = sizes[g]
            h = g + 1
            while h < len(heads) and (h + 1 - g) * max(width, sizes[h]) <= _PAIR_CHUNK:
                width = max(width, sizes[h])
                h += 1
            rows = i[heads[g:h]]
            slot = np.repeat(np.arange(h - g), sizes[g:h])
            first, last = heads[g], heads[h - 1] + sizes[h - 1]
            offset = np.arange(first, last) - np.repeat(heads[g:h], sizes[g:h])
            lists = np.repeat(rows[:, None], width, axis=1)  # padding: the row itself
            lists[slot, offset] = j[first:last]
            out[first:last] = self.list_keys(rows, lists)[slot, offset]
            g = h
        return out

    def list_keys(self, rows, lists):
        """Exact float64 keys of rows[r] against each of lists[r] (a (len(rows), L) array)."""
        out = np.empty(lists.shape)
        step = max(1, _PAIR_CHUNK // lists.shape[1])
        for s in range(0, len(rows), step):
            r, c = rows[s:s + step], lists[s:s + step]
            dot = np.einsum("cd,cld->cl", self.rows64(r), self.rows64(c))
            out[s:s + step] = self.key_from_dot(dot, r[:, None], c)
        return out

    def exact_block(self, rows, c0, c1):
        """Exact float64 keys of ``rows`` (index array) x columns [c0, c1) by one GEMM."""
        if self._x64 is not None:
            right = self._x64[c0:c1]
        else:
            right = self.rows64(np.arange(c0, c1))
        return self.key_from_dot(self.rows64(rows) @ right.T, rows[:, None],
                                 np.arange(c0, c1)[None, :])

    def exact_rows_to_gallery(self, start, stop, out):
        """float32(exact distance) of queries [start, stop) to the gallery, into ``out``.

        Blocks are aligned to absolute indices, so every chunking gives the same bits; the
        last block is kept so that consecutive unaligned chunks do not recompute it.
        """
        n, nq = len(self), self.num_query
        for b0 in range(start - start % _ROW_BLOCK, stop, _ROW_BLOCK):
            b1 = min(b0 + _ROW_BLOCK, nq)
            if self._last_block is None or self._last_block[0] != b0:
                rows = np.arange(b0, b1)
                dist = np.empty((b1 - b0, n - nq), dtype=np.float32)
                for c0 in range(nq, n, _COL_BLOCK):
                    c1 = min(c0 + _COL_BLOCK, n)
                    key = self.exact_block(rows, c0, c1)
                    dist[:, c0 - nq:c1 - nq] = self.distance_from_key(key)
                self._last_block = (b0, dist)
            lo, hi = max(b0, start), min(b1, stop)
            out[lo - start:hi - start] = self._last_block[1][lo - b0:hi - b0]

    def approx_keys(self, a0, a1, b0, b1):
        """Float32 keys of rows [a0, a1) against rows [b0, b1) (one GEMM)."""
        key = self.x32[a0:a1] @ self.x32[b0:b1].T
        if self.metric == "cosine":
            np.subtract(np.float32(1.0), key, out=key)
        else:
            key *= np.float32(-2.0)
            key += self.sq32[a0:a1, None]
            key += self.sq32[None, b0:b1]
        return key

    def tolerance(self, rows):
        """First-order bound of |float32 key - exact key| for the given rows.

        A float32 dot product of length d errs by at most d·u·|x||y| (u = 2^-24); rounding
        the unit rows (cosine) or the squared norms and sums (euclidean) adds a few u.
        """
        dim = self.x32.shape[1]
        if self.metric == "cosine":
            return np.full(len(rows), (dim + 10) * _UNIT)
        return (dim + 8) * _UNIT * (self.sq64[rows] + self.sq64.max())


def exact_distance_matrix(a, b, metric="cosine", same_input=None):
    """Distances computed in float64 and rounded to float32, shape (len(a), len(b)).

    ``re_ranking`` fed with ``exact_distance_matrix`` of (q, g), (q, q) and (g, g) is the
    reference of ``re_ranking_features``. ``same_input`` (default: ``b is a``) sets the
    diagonal to exactly 0, as sklearn does.
    """
    if same_input is None:
        same_input = b is a
    feats = _Features(a, b, metric)
    out = np.empty((feats.num_query, len(feats) - feats.num_query), dtype=np.float32)
    feats.exact_rows_to_gallery(0, feats.num_query, out)
    if same_input:
        np.fill_diagonal(out, 0.0)
    return out


class _TopLists:
    """Per-row lists of the ``size`` smallest float32 values offered so far."""

    def __init__(self, n, size):
        self.val = np.full((n, size), np.inf, dtype=np.float32)
        self.idx = np.zeros((n, size), dtype=np.int64)
        self.thr = np.full(n, np.inf, dtype=np.float32)  # largest value kept per row

    def seed(self, key, t0, c0, transposed):
        """Fill the lists of targets t0, t0+1, ... from ``key`` (>= size columns)."""
        size = self.val.shape[1]
        if transposed:
            targets = np.arange(t0, t0 + key.shape[1])
            part = np.argpartition(key, size - 1, axis=0)[:size].T
            vals = key[part, targets[:, None] - t0]
        else:
            targets = np.arange(t0, t0 + key.shape[0])
            part = np.argpartition(key, size - 1, axis=1)[:, :size]
            vals = np.take_along_axis(key, part, axis=1)
        self.val[targets] = vals
        self.idx[targets] = part + c0
        self.thr[targets] = vals.max(axis=1)

    def merge(self, tgt, col, vals):
        """Keep the ``size`` smallest of each target's list plus its new candidates."""
        if len(tgt) == 0:
            return
        size = self.val.shape[1]
        order = np.argsort(tgt, kind="stable")
        tgt, col, vals = tgt[order], col[order], vals[order]
        uniq, starts, counts = np.unique(tgt, return_index=True, return_counts=True)
        group = np.repeat(np.arange(len(uniq)), counts)
        width = size + int(counts.max())
        pad_val = np.full((len(uniq), width), np.inf, dtype=np.float32)
        pad_idx = np.zeros((len(uniq), width), dtype=np.int64)
        pad_val[:, :size], pad_idx[:, :size] = self.val[uniq], self.idx[uniq]
        slot = size + np.arange(len(tgt)) - starts[group]
        pad_val[group, slot], pad_idx[group, slot] = vals, col
        keep = np.argpartition(pad_val, size - 1, axis=1)[:, :size]
        self.val[uniq] = np.take_along_axis(pad_val, keep, axis=1)
        self.idx[uniq] = np.take_along_axis(pad_idx, keep, axis=1)
        self.thr[uniq] = self.val[uniq].max(axis=1)


class _Extremes:
    """Per-row running lists of the nearest (smallest keys) and farthest (largest) columns.

    A block is offered through one mask per direction: below the row's near threshold or
    above its far threshold; both thresholds only tighten.
    """

    def __init__(self, n, size, far_size):
        self.near = _TopLists(n, size)
        self.far = _TopLists(n, far_size)  # holds negated keys

    def absorb(self, key, t0, c0, transposed):
        """Offer ``key`` (targets x columns, or columns x targets if transposed) to the lists
        of targets t0, t0+1, ...; the columns are c0, c0+1, ..."""
        cols = key.shape[0] if transposed else key.shape[1]
        start = 0
        if np.isinf(self.near.thr[t0]):  # first block these targets see (>= size columns):
            # seed the lists from a few columns, then offer the rest in doubling slices so
            # that the thresholds tighten before many candidates pile up
            start = min(max(2 * self.near.val.shape[1], 64), cols)
            head = key[:start] if transposed else key[:, :start]
            self.near.seed(head, t0, c0, transposed)
            self.far.seed(-head, t0, c0, transposed)
        while start < cols:
            stop = cols if start == 0 else min(2 * start, cols)
            self._offer(key[start:stop] if transposed else key[:, start:stop], t0, c0 + start,
                        transposed)
            start = stop

    def _offer(self, key, t0, c0, transposed):
        num_t = key.shape[1] if transposed else key.shape[0]
        low, high = self.near.thr[t0:t0 + num_t], -self.far.thr[t0:t0 + num_t]
        if transposed:
            mask = key < low[None, :]
            mask |= key > high[None, :]
            col, tgt = np.nonzero(mask)
            vals = key[col, tgt]
        else:
            mask = key < low[:, None]
            mask |= key > high[:, None]
            tgt, col = np.nonzero(mask)
            vals = key[tgt, col]
        is_near, is_far = vals < low[tgt], vals > high[tgt]
        tgt += t0
        col += c0
        self.near.merge(tgt[is_near], col[is_near], vals[is_near])
        self.far.merge(tgt[is_far], col[is_far], -vals[is_far])


def _neighbour_pass(feats, size, far_size):
    """Float32 nearest and farthest lists over the upper block triangle of the (N, N) keys."""
    n = len(feats)
    lists = _Extremes(n, size, far_size)
    block = max(_BLOCK, size)
    for a0 in range(0, n, block):
        a1 = min(a0 + block, n)
        for b0 in range(a0, n, block):
            b1 = min(b0 + block, n)
            key = feats.approx_keys(a0, a1, b0, b1)
            lists.absorb(key, a0, b0, transposed=False)
            if b0 != a0:
                lists.absorb(key, b0, a0, transposed=True)
    return lists.near, lists.far


def _exact_rows(feats, rows, size):
    """Exact (float64) nearest ``size`` keys and the largest key of whole rows."""
    n = len(feats)
    near_idx = np.empty((len(rows), size), dtype=np.int64)
    near_key = np.empty((len(rows), size))
    far_key = np.empty(len(rows))
    for s in range(0, len(rows), 64):
        r = rows[s:s + 64]
        keys = np.empty((len(r), n))
        for t in range(0, n, _COL_BLOCK):
            keys[:, t:t + _COL_BLOCK] = feats.exact_block(r, t, min(t + _COL_BLOCK, n))
        part = np.argpartition(keys, size - 1, axis=1)[:, :size] if size < n else \
            np.tile(np.arange(n), (len(r), 1))
        near_idx[s:s + 64] = part
        near_key[s:s + 64] = np.take_along_axis(keys, part, axis=1)
        far_key[s:s + 64] = keys.max(axis=1)
    return near_idx, near_key, far_key


class _Neighbours:
    """Neighbour lists in the reference's order and the reference's normalisation.

    Keys are re-scored in float64 only where neighbours around a cut that matters (round(k1/2)+1,
    k1+1, and 1..k2 as the query expansion sums the k2 nearest in rank order) are closer than
    twice the float32 error bound; if doubt then remains about images outside the candidate
    list, the whole row is recomputed in float64.
    """

    def __init__(self, feats, size, cuts, clock):
        n = len(feats)
        with clock("neighbour pass (float32 GEMM)"):
            near, far = _neighbour_pass(feats, size, min(_FAR, n))
        with clock("exact order and largest distance"):
            self._refine(feats, size, cuts, near, far)

    def _refine(self, feats, size, cuts, near, far):
        n = len(feats)
        rows = np.arange(n)
        order = np.lexsort((near.idx.ravel(), near.val.ravel(), np.repeat(rows, size)))
        idx = near.idx.ravel()[order].reshape(n, size)
        key = near.val.ravel()[order].reshape(n, size).astype(np.float64)
        np.maximum(key, 0.0, out=key)
        key[idx == rows[:, None]] = 0.0  # self-distance is exactly 0, as in the exact keys
        tol = feats.tolerance(rows)
        # Runs of keys closer than 2*tol can be in any exact order; only the runs that
        # straddle a cut change a set. Keys left (right) of such a run are more than tol below
        # (above) every exact key in it, so re-scoring just the run keeps the order exact.
        close = key[:, 1:] - key[:, :-1] <= 2 * tol[:, None]
        run = np.zeros((n, size), dtype=np.int32)
        np.cumsum(~close, axis=1, out=run[:, 1:])
        doubt = np.zeros((n, size), dtype=bool)
        for c in cuts:
            if c < size:
                doubt |= close[:, c - 1, None] & (run == run[:, c, None])
            elif c < n:  # no float32 margin past the cut (only with _MARGIN = 0)
                doubt[:] = True
        # a run reaching the list end may continue outside it: re-score the whole list, and
        # recompute the row if an image outside the list could still beat the last cut
        whole = np.nonzero(doubt[:, -1])[0] if size < n else np.zeros(0, dtype=np.int64)
        doubt[whole] = False
        part_r, part_c = np.nonzero(doubt)
        key[part_r, part_c] = feats.pair_keys(part_r, idx[part_r, part_c])
        redo = np.zeros(0, dtype=np.int64)
        if len(whole):
            key[whole] = feats.list_keys(whole, idx[whole])
            last = max(cuts) - 1
            kth = np.partition(key[whole], last, axis=1)[:, last]
            redo = whole[kth >= near.thr[whole].astype(np.float64) - tol[whole]]
        # exact largest key: the best of the farthest candidates within 2*tol of the float32
        # largest, unless an image outside them could still be larger (row recomputed)
        far_approx = -far.val.astype(np.float64)
        near_top = far_approx >= far_approx.max(axis=1)[:, None] - 2 * tol[:, None]
        top_r, top_c = np.nonzero(near_top)
        far_exact = np.full(far.val.shape, -np.inf)
        far_exact[top_r, top_c] = feats.pair_keys(top_r, far.idx[top_r, top_c])
        far_key = far_exact.max(axis=1)
        far_doubt = far_key <= -far.thr.astype(np.float64) + tol if n > far.val.shape[1] else \
            np.zeros(n, dtype=bool)
        redo = np.union1d(redo, np.nonzero(far_doubt)[0])
        if len(redo):
            idx[redo], key[redo], far_key[redo] = _exact_rows(feats, redo, size)
        self.rescored = len(part_r) + len(whole) * size
        self.recomputed = len(redo)
        far32 = feats.distance_from_key(far_key).astype(np.float32)
        self.max_sq = far32 * far32  # float32: column max of the reference's squared matrix
        if np.any(self.max_sq <= 0):
            raise ValueError("an image is at distance 0 from every image (identical features?): "
                             "re-ranking normalises by the largest distance and needs it > 0")
        dist32 = feats.distance_from_key(key).astype(np.float32)
        nd = (dist32 * dist32) / self.max_sq[:, None]
        # the reference's order: argsort of the normalised float32 values (ties: finer key)
        order = np.lexsort((idx.ravel(), key.ravel(), nd.ravel(), np.repeat(rows, size)))
        self.idx = idx.ravel()[order].reshape(n, size)
        self.feats = feats

    def normalised(self, i, j):
        """The reference's float32 ``float32(d(i, j))^2 / max_k float32(d(k, i))^2``.

        Each unordered pair's exact distance is computed once.
        """
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        codes, inverse = np.unique(lo * len(self.feats) + hi, return_inverse=True)
        a, b = np.divmod(codes, len(self.feats))
        d32 = self.feats.distance_from_key(self.feats.pair_keys(a, b)).astype(np.float32)
        d32 = d32[inverse]
        return (d32 * d32) / self.max_sq[i]


def _reciprocal_mask(ranks):
    """mask[i, r]: i is among the first ranks.shape[1] neighbours of ranks[i, r]."""
    n, k = ranks.shape
    mask = np.empty((n, k), dtype=bool)
    step = max(1, (1 << 22) // (k * k))
    for s in range(0, n, step):
        back = ranks[ranks[s:s + step]]  # (rows, k, k)
        mask[s:s + step] = (back == np.arange(s, s + len(back))[:, None, None]).any(axis=2)
    return mask


def _expanded_sets(ranks_all, k1):
    """Sorted (row, column) pairs of every image's expanded k-reciprocal set."""
    n = len(ranks_all)
    k_full = min(k1 + 1, n)
    k_half = min(int(np.around(k1 / 2.0)) + 1, n)  # round half to even, as the reference
    ranks, half = ranks_all[:, :k_full], ranks_all[:, :k_half]
    rec, rec_half = _reciprocal_mask(ranks), _reciprocal_mask(half)
    half_size = rec_half.sum(axis=1)
    pieces = []
    step = max(1, (1 << 22) // (k_full * k_half * k_full))
    for s in range(0, n, step):
        rows = np.arange(s, min(s + step, n))
        r_set, r_mask = ranks[rows], rec[rows]                      # R(i, k1): (c, kf)
        cand_sets, cand_mask = half[r_set], rec_half[r_set]         # R(c, k1/2): (c, kf, kh)
        inside = ((cand_sets[..., None] == r_set[:, None, None, :])
                  & r_mask[:, None, None, :]).any(axis=3) & cand_mask
        accept = r_mask & (inside.sum(axis=2) > 2.0 / 3 * half_size[r_set])
        ri, rr = np.nonzero(r_mask)
        pieces.append(rows[ri] * n + r_set[ri, rr])
        ai, ar, ah = np.nonzero(accept[:, :, None] & cand_mask)
        pieces.append(rows[ai] * n + cand_sets[ai, ar, ah])
    return np.divmod(np.unique(np.concatenate(pieces)), n)


def _ranges(starts, counts):
    """Concatenation of arange(starts[e], starts[e] + counts[e]) over e."""
    total = int(counts.sum())
    offsets = np.repeat(starts - np.cumsum(counts) + counts, counts)
    return offsets + np.arange(total)


def _weights(nb, k1, k2):
    """The reference's V (after query expansion) as an (N, N) float32 CSR matrix."""
    n = len(nb.idx)
    rows, cols = _expanded_sets(nb.idx, k1)
    nd = nb.normalised(rows, cols)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
    data = np.empty(len(rows), dtype=np.float32)
    for i in range(n):  # per row, exactly the reference's float32 exp and (pairwise) sum
        a, b = indptr[i], indptr[i + 1]
        if b > a:
            weight = np.exp(-nd[a:b])
            data[a:b] = weight / np.sum(weight)
    if k2 == 1:
        return sp.csr_matrix((data, cols, indptr), shape=(n, n))
    k2 = min(k2, n)
    # mean of V over the k2 nearest rows: float32 sums in rank order, as np.mean(axis=0)
    counts = np.diff(indptr)
    target, column, value = [], [], []
    for p in range(k2):
        src = nb.idx[:, p]
        pos = _ranges(indptr[src], counts[src])
        target.append(np.repeat(np.arange(n), counts[src]))
        column.append(cols[pos])
        value.append(data[pos])
    codes = np.concatenate(target) * n + np.concatenate(column)
    uniq, inverse = np.unique(codes, return_inverse=True)
    acc = np.zeros(len(uniq), dtype=np.float32)
    np.add.at(acc, inverse, np.concatenate(value))
    acc /= np.float32(k2)
    qe_rows, qe_cols = np.divmod(uniq, n)
    qe_indptr = np.concatenate([[0], np.cumsum(np.bincount(qe_rows, minlength=n))])
    return sp.csr_matrix((acc, qe_cols, qe_indptr), shape=(n, n))


def _row_work(v_query, col_count):
    """Jaccard terms (query entry x gallery entry of the same column) of each query row."""
    entry_row = np.repeat(np.arange(v_query.shape[0]), np.diff(v_query.indptr))
    return np.bincount(entry_row, weights=col_count[v_query.indices], minlength=v_query.shape[0])


def _steps(rows, work, num_gallery):
    """Sub-slices of ``rows`` with at most _WORK_BUDGET Jaccard terms and _STEP_ENTRIES
    distances each (a single row may exceed the work budget)."""
    max_rows = max(1, _STEP_ENTRIES // num_gallery)
    steps, start, total = [], rows.start, 0
    for r in range(rows.start, rows.stop):
        if r > start and (r - start >= max_rows or total + work[r] > _WORK_BUDGET):
            steps.append(slice(start, r))
            start, total = r, 0
        total += work[r]
    steps.append(slice(start, rows.stop))
    return steps


def _jaccard_numerator(v_chunk, v_gallery_csc, num_gallery):
    """float32 ``sum_k min(V[i, k], V[j, k])`` for the chunk's queries i and all gallery j,
    summed over k in increasing order as the reference does."""
    rows = v_chunk.shape[0]
    out = np.zeros(rows * num_gallery, dtype=np.float32)
    counts = np.diff(v_gallery_csc.indptr)[v_chunk.indices]
    if counts.sum() == 0:
        return out.reshape(rows, num_gallery)
    q_local = np.repeat(np.repeat(np.arange(rows), np.diff(v_chunk.indptr)), counts)
    pos = _ranges(v_gallery_csc.indptr[v_chunk.indices], counts)
    overlap = np.minimum(np.repeat(v_chunk.data, counts), v_gallery_csc.data[pos])
    # entries are ordered by (query, k): np.add.at accumulates sequentially in that order
    np.add.at(out, q_local * num_gallery + v_gallery_csc.indices[pos], overlap)
    return out.reshape(rows, num_gallery)


def re_ranking_features(query_features, gallery_features, k1=20, k2=6, lambda_value=0.3,
                        metric="cosine", chunk_size=None):
    """k-reciprocal re-ranking from features, yielded in query chunks.

    Returns a generator of ``(query_row_slice, final_distance_chunk)``: the float32
    ``(rows, G)`` re-ranked distances of ``query_features[query_row_slice]`` to every gallery
    image; the chunks cover all queries in order. Arguments are checked immediately; the
    neighbour computation runs when iteration starts.
    ``metric``: "cosine" (1 - cosine similarity) or "euclidean". ``chunk_size``: queries per
    chunk (default: about 16M distances, i.e. 64 MB, per chunk); the Jaccard work inside a
    chunk runs in bounded steps whatever the chunk size.
    The output equals ``re_ranking`` applied to ``exact_distance_matrix`` of (q, g), (q, q) and
    (g, g) (float32 rounding of exact distances).
    """
    validate_parameters(k1, k2, lambda_value)
    if chunk_size is not None and (isinstance(chunk_size, bool) or
                                   not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1):
        raise ValueError(f"chunk_size must be None or an integer >= 1, got {chunk_size!r}")
    feats = _Features(query_features, gallery_features, metric)
    return _iterate(feats, int(k1), int(k2), float(lambda_value), chunk_size)


def _iterate(feats, k1, k2, lambda_value, chunk_size):
    n, num_query = len(feats), feats.num_query
    num_gallery = n - num_query
    clock = _PhaseClock()
    # prefixes whose membership matters; the first k2 are also summed in rank order (QE)
    cuts = sorted({min(int(np.around(k1 / 2.0)) + 1, n), min(k1 + 1, n)}
                  | set(range(1, min(k2, n) + 1)))
    nb = _Neighbours(feats, min(max(cuts) + _MARGIN, n), cuts, clock)
    with clock("sets and weights"):
        v = _weights(nb, k1, k2)
        v_query = v[:num_query]
        v_gallery = v[num_query:].tocsc()
        work = _row_work(v_query, np.diff(v_gallery.indptr))
    LAST_RUN_STATS.clear()
    LAST_RUN_STATS.update(images=n, rescored_keys=nb.rescored, recomputed_rows=nb.recomputed,
                          weights_nnz=v.nnz, seconds=clock.seconds)
    max_sq = nb.max_sq[:num_query]
    del v, nb
    if chunk_size is None:
        chunk_size = max(1, _OUTPUT_ENTRIES // num_gallery)
        if chunk_size > _ROW_BLOCK:
            chunk_size -= chunk_size % _ROW_BLOCK
    for start in range(0, num_query, chunk_size):
        rows = slice(start, min(start + chunk_size, num_query))
        final = np.empty((rows.stop - start, num_gallery), dtype=np.float32)
        with clock("original distances (float64 GEMM)"):
            feats.exact_rows_to_gallery(start, rows.stop, final)
        with clock("jaccard and blend"):
            final *= final  # the reference squares the float32 distance, divides by the max
            final /= max_sq[rows, None]
            for step in _steps(rows, work, num_gallery):
                jaccard = _jaccard_numerator(v_query[step], v_gallery, num_gallery)
                jaccard = 1 - jaccard / (2.0 - jaccard)
                part = final[step.start - start:step.stop - start]
                part[...] = jaccard * (1 - lambda_value) + part * lambda_value
        yield rows, final


def re_ranking_features_dense(query_features, gallery_features, k1=20, k2=6, lambda_value=0.3,
                              metric="cosine", chunk_size=None):
    """All chunks of ``re_ranking_features`` concatenated: (Q, G) float32."""
    chunks = re_ranking_features(query_features, gallery_features, k1, k2, lambda_value, metric,
                                 chunk_size)
    return np.concatenate([c for _, c in chunks], axis=0)


# ---------------------------------------------------------------------------------------------
# Sparse re-ranking from the reference's own inputs (distance matrices)
# ---------------------------------------------------------------------------------------------
