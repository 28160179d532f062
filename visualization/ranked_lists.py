"""Ranked lists of the best and the worst queries by average precision, drawn as PNG grids.

Each row shows a query (blue frame) and its top-k gallery images in ranking order, framed green
when they show the query's identity and red otherwise, with the distance under each. The ranking
is the evaluation's (``metrics.evaluation``): gallery images of the query's identity taken by the
query's camera are left out, queries without a remaining true match are skipped, entries are
ranked by ascending distance with ties in gallery order, and AP is the mean over the true
matches of the precision at each; the AP and first-match position come from the same ranking
kernel as the metrics, so a row's AP is the one averaged into mAP. Distractors (identity 0) and
junk (-1) are wrong answers. Distances are computed in query chunks of bounded memory and only
each query's statistics and top-k are kept. TensorFlow-free.
"""
import os
from dataclasses import dataclass

import numpy as np

from metrics import distances as _distances
from metrics.evaluation import auto_chunk_size, group_gallery, query_groups
from visualization.grid import Row, Tile, read_images, render

try:
    from metrics import rank_cy as _kernel
except ImportError:  # not built; metrics/__init__.py has warned
    from metrics import rank_numpy as _kernel

RIGHT_COLOUR = (0, 170, 0)
WRONG_COLOUR = (220, 0, 0)
QUERY_COLOUR = (0, 90, 230)
DEFAULT_MEMORY_BUDGET = 64 * 1024 ** 2  # bytes of one float32 chunk of distance rows
FILE_NAMES = {"best": "ranked_lists_best.png", "worst": "ranked_lists_worst.png"}


@dataclass
class QueryRankings:
    """Per-query results: ``average_precision`` (NaN for skipped queries), ``first_match_rank``
    (0-based position of the first true match, -1 if skipped), ``num_true_matches``,
    ``top_indices`` (Q, k) gallery indices in ranking order (-1 past the end of a short list)
    and ``top_distances`` (Q, k) float32 (NaN past the end)."""
    average_precision: np.ndarray
    first_match_rank: np.ndarray
    num_true_matches: np.ndarray
    top_indices: np.ndarray
    top_distances: np.ndarray

    @property
    def valid(self):
        return self.num_true_matches > 0

    @property
    def mean_average_precision(self):
        return float(np.mean(self.average_precision[self.valid]))


def _ids(values, name, length):
    values = np.asarray(values)
    if values.ndim != 1 or len(values) != length:
        raise ValueError(f"{name} must be 1-D with {length} entries, got shape {values.shape}")
    if values.dtype.kind == "f" and np.all(values == np.round(values)):
        values = values.astype(np.int64)
    if values.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold integer ids, got dtype {values.dtype}")
    return values.astype(np.int64)


def _top_k(row, excluded, k):
    """Gallery indices of the k first entries of a stable ascending sort of the kept row."""
    kept = np.flatnonzero(~excluded)
    values = row[kept]
    if k < len(values):
        # Everything up to the k-th smallest value, then a stable sort of only those: the same
        # first k as a stable sort of the whole row (kept is ascending), without sorting it.
        threshold = np.partition(values, k - 1)[k - 1]
        candidates = np.flatnonzero(values <= threshold)
        order = candidates[np.argsort(values[candidates], kind="stable")[:k]]
    else:
        order = np.argsort(values, kind="stable")
    return kept[order]


def _distance_chunks(query_features, gallery_features, distances, metric, num_q, num_g,
                     memory_budget):
    chunk = auto_chunk_size(num_g, memory_budget)  # a multiple of ROW_BLOCK: exact rows
    if distances is not None:
        for start in range(0, num_q, chunk):
            yield start, np.ascontiguousarray(distances[start:start + chunk], dtype=np.float32)
        return
    qf, gf = _distances.check_features(query_features, gallery_features, metric)
    q_stat = _distances.row_statistics(qf, metric)
    g_stat = _distances.row_statistics(gf, metric)
    buffer = np.empty((min(chunk, num_q), num_g), np.float32)
    for start in range(0, num_q, chunk):
        stop = min(start + chunk, num_q)
        yield start, _distances.distance_rows(qf, gf, q_stat, g_stat, metric, start, stop,
                                              out=buffer[:stop - start])


def rank_queries(q_pids, g_pids, q_camids, g_camids, query_features=None, gallery_features=None,
                 *, distances=None, metric="cosine", top_k=10,
                 memory_budget=DEFAULT_MEMORY_BUDGET):
    """Each query's AP, first-match rank and top-k gallery entries (a ``QueryRankings``).

    Give either the features (distances by ``metric``, computed chunk by chunk) or a
    precomputed (Q, G) ``distances`` matrix (e.g. re-ranked).
    """
    if int(top_k) < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    top_k = int(top_k)
    if distances is not None:
        distances = np.asarray(distances)
        if distances.ndim != 2 or distances.dtype.kind not in "iuf":
            raise ValueError(f"distances must be a real (num_query, num_gallery) matrix, got "
                             f"shape {distances.shape} dtype {distances.dtype}")
        num_q, num_g = distances.shape
    elif query_features is None or gallery_features is None:
        raise ValueError("give query_features and gallery_features, or a distances matrix")
    else:
        num_q, num_g = len(query_features), len(gallery_features)
    if num_g == 0:
        raise ValueError("the gallery is empty")
    q_pids, q_camids = _ids(q_pids, "q_pids", num_q), _ids(q_camids, "q_camids", num_q)
    g_pids, g_camids = _ids(g_pids, "g_pids", num_g), _ids(g_camids, "g_camids", num_g)
    unique, starts, members = group_gallery(g_pids)
    q_groups = query_groups(q_pids, unique)

    average_precision = np.full(num_q, np.nan)
    first_match_rank = np.full(num_q, -1, np.int64)
    num_true_matches = np.zeros(num_q, np.int64)
    top_indices = np.full((num_q, top_k), -1, np.int64)
    top_distances = np.full((num_q, top_k), np.nan, np.float32)
    for start, rows in _distance_chunks(query_features, gallery_features, distances, metric,
                                        num_q, num_g, memory_budget):
        stop = start + len(rows)
        num_rel, ap, _, ranks = _kernel.rank_queries(
            rows, q_groups[start:stop], q_camids[start:stop], g_camids, starts, members,
            num_repeats=0, seed=0, q_offset=start)
        for offset in np.flatnonzero(num_rel > 0):
            query = start + offset
            excluded = (g_pids == q_pids[query]) & (g_camids == q_camids[query])
            top = _top_k(rows[offset], excluded, top_k)
            top_indices[query, :len(top)] = top
            top_distances[query, :len(top)] = rows[offset, top]
        valid = num_rel > 0
        average_precision[start:stop][valid] = ap[valid]
        first_match_rank[start:stop] = ranks[:, 0]
        num_true_matches[start:stop] = num_rel
    if not num_true_matches.any():
        raise ValueError("no valid query: no query identity has a true match in the gallery "
                         "under a different camera (check the identities and camera ids)")
    return QueryRankings(average_precision, first_match_rank, num_true_matches, top_indices,
                         top_distances)


def select_queries(rankings, num, which):
    """Indices of the ``num`` valid queries with the highest (``which="best"``, highest first)
    or lowest (``"worst"``, lowest first) AP; ties in query order."""
    if which not in FILE_NAMES:
        raise ValueError(f"which must be one of {tuple(FILE_NAMES)}, got {which!r}")
    valid = np.flatnonzero(rankings.valid)
    ap = rankings.average_precision[valid]
    order = np.lexsort((valid, -ap if which == "best" else ap))
    return valid[order[:int(num)]]


def _format_distance(value):
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.4g}"


def _format_percent(value):
    # two significant digits below 1% so that the worst queries' APs are not all "0.0%"
    return f"{100 * value:.1f}%" if value >= 0.01 else f"{100 * value:.2g}%"


def _count(number, noun):
    return f"{number} {noun}" + ("" if number == 1 else "es" if noun.endswith("ch") else "s")


def _name(path):
    return os.path.basename(os.fspath(path))


def write_ranked_lists(query_paths, gallery_paths, q_pids, g_pids, q_camids, g_camids,
                       query_features=None, gallery_features=None, output_folder=".", num=5,
                       top_k=10, metric="cosine", *, distances=None, image_height=128,
                       file_prefix="", memory_budget=DEFAULT_MEMORY_BUDGET, rankings=None):
    """Write ``<file_prefix>ranked_lists_best.png`` and ``..._worst.png`` into ``output_folder``:
    the ``num`` best and worst queries by AP, one row each, query then top-k gallery images.

    Images are read with OpenCV and shown ``image_height`` pixels high. ``distances`` replaces
    the features (see ``rank_queries``); ``rankings`` reuses a ``rank_queries`` result.
    Returns the written paths ([] when ``num`` is 0).
    """
    if int(num) < 0:
        raise ValueError(f"num (queries per picture) must be >= 0, got {num}")
    query_paths, gallery_paths = list(query_paths), list(gallery_paths)
    if rankings is None:
        rankings = rank_queries(q_pids, g_pids, q_camids, g_camids, query_features,
                                gallery_features, distances=distances, metric=metric,
                                top_k=top_k, memory_budget=memory_budget)
    num_q, num_g = len(rankings.average_precision), len(np.asarray(g_pids))
    if len(query_paths) != num_q or len(gallery_paths) != num_g:
        raise ValueError(f"got {len(query_paths)} query and {len(gallery_paths)} gallery paths "
                         f"for {num_q} queries and {num_g} gallery images")
    if int(num) == 0:
        return []
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    top_k = min(int(top_k), rankings.top_indices.shape[1])
    chosen = {which: select_queries(rankings, num, which) for which in FILE_NAMES}
    needed = [query_paths[q] for indices in chosen.values() for q in indices]
    needed += [gallery_paths[g] for indices in chosen.values() for q in indices
               for g in rankings.top_indices[q, :top_k] if g >= 0]
    images = read_images(needed, int(image_height))

    num_valid = int(rankings.valid.sum())
    distance_name = "given" if distances is not None else metric
    written = []
    for which, indices in chosen.items():
        order = "highest AP first" if which == "best" else "lowest AP first"
        mean = _format_percent(rankings.mean_average_precision)
        header = (f"The {len(indices)} {which.upper()} queries by AP ({order}) of the "
                  f"{num_valid} queries with a true match; mAP {mean}.\n"
                  f"Each row: the query (blue frame), then its top {top_k} of {num_g} gallery "
                  f"images by {distance_name} distance (under each: rank, distance, identity, "
                  f"camera). Green frame = same identity, red = another identity (distractors "
                  f"and junk count as wrong). Gallery images of the query's identity from the "
                  f"query's camera are excluded, as in the evaluation.")
        rows = []
        for position, query in enumerate(indices, 1):
            first = int(rankings.first_match_rank[query])
            hit = "hit" if first == 0 else f"miss (first true match at rank {first + 1})"
            title = (f"{which.capitalize()} #{position} by AP: AP "
                     f"{_format_percent(rankings.average_precision[query])}, rank-1 {hit}, "
                     f"{_count(rankings.num_true_matches[query], 'true match')}; query "
                     f"{_name(query_paths[query])}")
            tiles = [Tile(images[query_paths[query]],
                          f"query\nid {q_pids[query]} c{q_camids[query]}", QUERY_COLOUR)]
            for rank, gallery in enumerate(rankings.top_indices[query, :top_k], 1):
                if gallery < 0:
                    break
                right = g_pids[gallery] == q_pids[query]
                tiles.append(Tile(
                    images[gallery_paths[gallery]],
                    f"{rank}: {_format_distance(rankings.top_distances[query, rank - 1])}\n"
                    f"id {g_pids[gallery]} c{g_camids[gallery]}",
                    RIGHT_COLOUR if right else WRONG_COLOUR, gap_before=18 if rank == 1 else 0))
            rows.append(Row(title, tiles))
        path = os.path.join(output_folder, file_prefix + FILE_NAMES[which])
        written.append(render(rows, path, header))
    return written
