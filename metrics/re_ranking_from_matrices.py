"""``re_ranking_sparse``: drop-in replacement of the reference ``metrics.re_ranking.re_ranking``
(same three distance matrices in, same (Q, G) float32 out) without its dense (Q+G)^2 arrays.

The input matrices are only read; the reference's normalised matrix is materialised 256 rows at
a time (as column blocks of the inputs, no big transposes) to keep each image's
max(k1+1, k2)+1 nearest neighbours (threshold from per-group minima, then only the few
candidate groups are sorted; rows with equal values across a cut that matters take the
reference's own ``np.argsort`` order). Sets, weights, query expansion and Jaccard are the
sparse code of ``metrics.re_ranking_from_features``. Memory: the inputs plus O(N·k + Q·G).
"""
import numpy as np

from metrics.re_ranking_from_features import (LAST_RUN_STATS, _PhaseClock, _jaccard_numerator,
                                       _row_work, _steps, _weights, validate_parameters)

_MATRIX_ROWS = 256  # rows of the normalised (N, N) matrix materialised at a time


class _MatrixNeighbours:
    """Neighbour lists and normalised distances read from the (Q, G), (Q, Q), (G, G) matrices.

    The reference builds ``M = [[q_q, q_g], [q_g^T, g_g]]``, squares it (``P``, float32), divides
    each column by its max and transposes: ``od[i, j] = P[j, i] / max_r P[r, i]``. Row i of
    ``od`` is column i of ``M``; ``od`` is materialised ``_MATRIX_ROWS`` rows at a time (as
    column blocks of M, i.e. transposed) only to keep each row's nearest ``size`` + 1 entries
    (``_smallest``: sorted by value, then index). Rows whose values are equal across a cut
    that matters take the reference's ``np.argsort`` order of the whole row instead.
    """

    def __init__(self, q_g, q_q, g_g, size, cuts, clock):
        self.q_g, self.q_q, self.g_g = q_g, q_q, g_g
        self.num_query = nq = q_g.shape[0]
        self.n = n = nq + q_g.shape[1]
        self.dtype = np.result_type(q_g.dtype, q_q.dtype, g_g.dtype)
        with clock("column maxima"):
            # the squares are monotone in |x|: max of squares = square of the largest |x|
            amax_q = np.maximum(self._abs_max(q_q, axis=0), self._abs_max(q_g, axis=1))
            amax_g = np.maximum(self._abs_max(q_g, axis=0), self._abs_max(g_g, axis=0))
            self.max_sq = self._square(np.concatenate([amax_q, amax_g]))
        if np.any(self.max_sq <= 0):
            raise ValueError("an image is at distance 0 from every image (identical features?): "
                             "re-ranking normalises by the largest distance and needs it > 0")
        with clock("neighbour lists"):
            # one entry past the last cut, to see ties across it
            width = min(size + 1, n)
            cuts = [c for c in cuts if c < width]
            self.idx = np.empty((n, width), dtype=np.int64)
            self.tied_rows = 0
            for s in range(0, n, _MATRIX_ROWS):
                rows = slice(s, min(s + _MATRIX_ROWS, n))
                od_t = self.rows_t(rows.start, rows.stop)
                part, vals = _smallest(od_t, width)
                # equal values across a cut that matters: np.argsort orders them arbitrarily,
                # so such rows take the reference's own np.argsort order
                tied = np.zeros(len(part), dtype=bool)
                for c in cuts:
                    tied |= vals[:, c - 1] == vals[:, c]
                for r in np.flatnonzero(tied):
                    part[r] = np.argsort(od_t[:, r])[:width]
                self.tied_rows += int(tied.sum())
                self.idx[rows] = part
        self.rescored, self.recomputed = 0, 0

    def _square(self, x):
        """float32 of the square computed in the inputs' common dtype, as the reference."""
        return np.power(np.asarray(x, dtype=self.dtype), 2).astype(np.float32)

    def _abs_max(self, m, axis):
        out = None
        step = max(1, (1 << 22) // max(1, m.shape[1]))
        for s in range(0, m.shape[0], step):
            part = np.abs(m[s:s + step]).max(axis=axis)
            if axis == 1:
                out = part if out is None else np.concatenate([out, part])
            else:
                out = part if out is None else np.maximum(out, part)
        return out

    def columns(self, start, stop):
        """Columns [start, stop) of M: (N, stop - start) in the inputs' dtype (one transposed
        copy: the query columns' gallery part, rows of q_g)."""
        nq = self.num_query
        out = np.empty((self.n, stop - start), dtype=self.dtype)
        q0, q1 = min(start, nq), min(stop, nq)            # query columns
        g0, g1 = max(start, nq) - nq, max(stop, nq) - nq  # gallery columns
        nqc = q1 - q0
        if nqc:
            out[:nq, :nqc] = self.q_q[:, q0:q1]
            out[nq:, :nqc] = self.q_g[q0:q1].T
        if g1 > g0:
            out[:nq, nqc:] = self.q_g[:, g0:g1]
            out[nq:, nqc:] = self.g_g[:, g0:g1]
        return out

    def rows_t(self, start, stop):
        """Rows [start, stop) of the reference's normalised matrix, transposed: (N, b)."""
        od_t = self.columns(start, stop)
        if od_t.dtype == np.float32:
            np.multiply(od_t, od_t, out=od_t)  # == np.power(od_t, 2), in place
        else:
            od_t = self._square(od_t)
        od_t /= self.max_sq[None, start:stop]
        return od_t

    def entries(self, r, c):
        """M[r, c] for index arrays r, c."""
        nq = self.num_query
        out = np.empty(len(r), dtype=self.dtype)
        rq, cq = r < nq, c < nq
        for mask, mat, a, b in ((rq & cq, self.q_q, r, c), (rq & ~cq, self.q_g, r, c - nq),
                                (~rq & cq, self.q_g, c, r - nq),
                                (~rq & ~cq, self.g_g, r - nq, c - nq)):
            if mask.any():
                out[mask] = mat[a[mask], b[mask]]
        return out

    def normalised(self, i, j):
        """The reference's ``od[i, j] = float32(M[j, i]^2) / max_sq[i]``."""
        return self._square(self.entries(j, i)) / self.max_sq[i]

    def query_rows_to_gallery(self, start, stop):
        """``od[start:stop, Q:]`` (float32)."""
        od = self._square(self.q_g[start:stop])
        od /= self.max_sq[start:stop, None]
        return od


_GROUP = 32  # rows (neighbours) per group of the threshold prefilter of ``_smallest``


def _smallest(od_t, width):
    """Per column j of ``od_t`` (N, b), the ``width`` smallest entries sorted by (value, row
    index): (indices, values), each (b, width).

    The width-th smallest of the minima of groups of _GROUP consecutive rows is an entry of
    the column with at least ``width`` entries <= it, so only the groups whose minimum is <=
    it are read and sorted.
    """
    n, cols = od_t.shape
    if width >= n:
        part = np.tile(np.arange(n), (cols, 1))
    elif n < 4 * width * _GROUP:
        part = np.argpartition(od_t.T, width - 1, axis=1)[:, :width]
    else:
        full = n - n % _GROUP
        minima = od_t[:full].reshape(full // _GROUP, _GROUP, cols).min(axis=1)
        if full < n:
            minima = np.concatenate([minima, od_t[full:].min(axis=0, keepdims=True)])
        thr = np.partition(minima, width - 1, axis=0)[width - 1]
        gi, ci = np.nonzero(minima <= thr[None, :])
        r = gi[:, None] * _GROUP + np.arange(_GROUP)
        valid = r < n
        np.minimum(r, n - 1, out=r)
        v = od_t[r, ci[:, None]]
        keep = valid & (v <= thr[ci][:, None])
        c = np.broadcast_to(ci[:, None], r.shape)[keep]
        r, v = r[keep], v[keep]
        order = np.lexsort((r, v, c))
        c, r, v = c[order], r[order], v[order]
        starts = np.searchsorted(c, np.arange(cols))
        pos = np.arange(len(c)) - starts[c]
        keep = pos < width
        part = np.empty((cols, width), dtype=np.int64)
        vals = np.empty((cols, width), dtype=od_t.dtype)
        part[c[keep], pos[keep]] = r[keep]
        vals[c[keep], pos[keep]] = v[keep]
        return part, vals
    vals = np.take_along_axis(od_t.T, part, axis=1)
    order = np.lexsort((part, vals), axis=1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def check_distance_matrices(q_g_dist, q_q_dist, g_g_dist):
    """The three matrices as arrays, after checking shapes, dtype and finiteness (in row
    blocks: no full-size temporary)."""
    mats = []
    for name, m in (("q_g_dist", q_g_dist), ("q_q_dist", q_q_dist), ("g_g_dist", g_g_dist)):
        m = np.asarray(m)
        if m.ndim != 2 or not np.issubdtype(m.dtype, np.number) \
                or np.issubdtype(m.dtype, np.complexfloating):
            raise ValueError(f"{name} must be a 2-D numeric distance matrix, got shape {m.shape} "
                             f"and dtype {m.dtype}")
        step = max(1, (1 << 22) // max(1, m.shape[1]))
        if not all(np.isfinite(m[s:s + step]).all() for s in range(0, m.shape[0], step)):
            raise ValueError(f"{name} contains NaN or inf; check the features it was computed from")
        mats.append(m)
    q_g, q_q, g_g = mats
    num_query, num_gallery = q_g.shape
    if num_query == 0 or num_gallery == 0:
        raise ValueError(f"q_g_dist must be non-empty, got shape {q_g.shape}")
    if q_q.shape != (num_query, num_query) or g_g.shape != (num_gallery, num_gallery):
        raise ValueError(f"expected q_q_dist {(num_query, num_query)} and g_g_dist "
                         f"{(num_gallery, num_gallery)} for q_g_dist {q_g.shape}, got {q_q.shape} "
                         f"and {g_g.shape}")
    return q_g, q_q, g_g


def re_ranking_sparse(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3):
    """Drop-in replacement of the reference ``re_ranking``: same inputs, same (Q, G) float32
    output, without its dense (Q+G)^2 arrays.

    The inputs are only read (no (Q+G)^2 copy): the normalised matrix is materialised in row
    blocks to keep each image's max(k1+1, k2) nearest neighbours; k-reciprocal sets, weights
    V (CSR), query expansion and Jaccard numerators are the same sparse code as
    ``re_ranking_features`` (same float32 arithmetic and summation order as the reference).
    Only images at exactly equal normalised distance may be ordered differently (np.argsort
    orders ties arbitrarily; here by index).
    """
    validate_parameters(k1, k2, lambda_value)
    q_g, q_q, g_g = check_distance_matrices(q_g_dist, q_q_dist, g_g_dist)
    k1, k2, lambda_value = int(k1), int(k2), float(lambda_value)
    clock = _PhaseClock()
    n = q_g.shape[0] + q_g.shape[1]
    # prefixes of the neighbour order that matter: R(., k1), R(., round(k1/2)) and the first
    # 1..k2 (query expansion sums them in rank order)
    cuts = sorted({min(int(np.around(k1 / 2.0)) + 1, n), min(k1 + 1, n)}
                  | set(range(1, min(k2, n) + 1)))
    nb = _MatrixNeighbours(q_g, q_q, g_g, max(cuts), cuts, clock)
    num_query, num_gallery = nb.num_query, n - nb.num_query
    with clock("sets and weights"):
        v = _weights(nb, k1, k2)
        v_query = v[:num_query]
        v_gallery = v[num_query:].tocsc()
        work = _row_work(v_query, np.diff(v_gallery.indptr))
    LAST_RUN_STATS.clear()
    LAST_RUN_STATS.update(images=n, tied_rows=nb.tied_rows, weights_nnz=v.nnz,
                          seconds=clock.seconds)
    del v
    out = np.empty((num_query, num_gallery), dtype=np.float32)
    with clock("jaccard and blend"):
        for step in _steps(slice(0, num_query), work, num_gallery):
            part = nb.query_rows_to_gallery(step.start, step.stop)
            jaccard = _jaccard_numerator(v_query[step], v_gallery, num_gallery)
            jaccard = 1 - jaccard / (2.0 - jaccard)
            out[step] = jaccard * (1 - lambda_value) + part * lambda_value
    return out
