"""Time and peak memory of k-reciprocal re-ranking: reference (dense) vs sparse versions.

    python benchmarks/re_ranking_speed.py [--quick] [--msmt17 | --msmt17-only] [--msmt17-dim 256]

Problems are random features with identity clusters (``make_problem``). Each method runs in
its own subprocess, one after the other. Rows:

* ``reference re_ranking (dense)``: ``metrics.re_ranking.re_ranking`` on the three
  ``exact_distance_matrix`` inputs (q-g, q-q, g-g; computed before the clock starts).
* ``re_ranking_sparse``: the drop-in sparse version, given **the same three matrices**
  (same inputs, same output); "speed-up" and "mem" of this row are the headline ratios.
* ``re_ranking_features``: the sparse version from features (it computes the distances
  itself, float32 GEMM neighbour search + float64 original distances, so it also scales to
  sizes whose matrices do not fit in memory); ``ratio_incl_distances`` compares it with the
  reference plus the float32 distance matrices the pipeline computes first
  (``compute_distance_matrix``).

Peak memory: VmHWM of the child (whole process: Python, NumPy and the inputs), reset just
before the timed call once the inputs exist (the features are deleted first in the matrix
children), so input preparation does not count; ``input_mb`` is the RSS at that point.
``benchmark_rows(quick)`` returns the table rows as dicts for other benchmark scripts.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SIZES = {
    "quick": (300, 1500, 128),
    "Market1501": (3368, 15913, 2048),
    "MSMT17": (11659, 82161, 256),
}


def make_problem(num_query, num_gallery, dim, seed=0):
    """Clustered random features: (qf, gf, q_pids, g_pids, q_camids, g_camids).

    About 4.5 queries and 21 gallery images per identity (Market-like), 6 cameras; an image
    is a common offset + its identity's centre + a camera offset + noise. The centre and camera
    scales grow as dim^-1/4 so that the difficulty barely depends on ``dim``: plain cosine mAP
    is ~0.4 and re-ranking lifts it to ~0.8-0.95.
    """
    rng = np.random.default_rng(seed)
    num_ids = max(2, int(round(num_query / 4.5)))
    scale = (2048.0 / dim) ** 0.25
    centres = 0.38 * scale * rng.standard_normal((num_ids, dim), dtype=np.float32)
    cameras = 0.28 * scale * rng.standard_normal((6, dim), dtype=np.float32)
    base = rng.standard_normal(dim, dtype=np.float32) * 2.0

    def images(count, pids):
        cams = rng.integers(0, 6, count)
        x = np.empty((count, dim), dtype=np.float32)
        for s in range(0, count, 4096):
            e = min(s + 4096, count)
            noise = rng.standard_normal((e - s, dim), dtype=np.float32) * 1.1
            x[s:e] = base + centres[pids[s:e]] + cameras[cams[s:e]] + noise
        return x, cams + 1

    q_pids = rng.integers(0, num_ids, num_query)
    g_pids = np.concatenate([q_pids[:min(num_query, num_gallery)],
                             rng.integers(0, num_ids, max(0, num_gallery - num_query))])
    g_pids = rng.permutation(g_pids)
    qf, q_cams = images(num_query, q_pids)
    gf, g_cams = images(num_gallery, g_pids)
    return qf, gf, q_pids + 1, g_pids + 1, q_cams, g_cams


def _peak_mb():
    """Peak resident memory of this process in MB.

    ``ru_maxrss`` survives fork+exec on Linux (a child starts with its parent's peak), so the
    per-process high-water mark VmHWM is preferred when /proc is available.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak():
    """Reset VmHWM to the current RSS (Linux >= 4.0); returns the RSS in MB."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker(method, num_query, num_gallery, dim, out_path):
    """Run one method in this (child) process and print a JSON line of measurements."""
    from metrics.re_ranking import exact_distance_matrix, re_ranking, re_ranking_features
    import metrics.re_ranking_from_features as sparse
    from metrics.re_ranking_from_matrices import re_ranking_sparse

    qf, gf, q_pids, g_pids, q_cams, g_cams = make_problem(num_query, num_gallery, dim)
    result = dict(base_mb=_peak_mb())
    if method in ("reference", "sparse"):
        if method == "reference":
            from metrics.distances import compute_distance_matrix
            t0 = time.perf_counter()
            mats = [compute_distance_matrix(qf, gf), compute_distance_matrix(qf, qf),
                    compute_distance_matrix(gf, gf)]
            result["distance_seconds"] = time.perf_counter() - t0
            del mats
        mats = [exact_distance_matrix(qf, gf), exact_distance_matrix(qf, qf),
                exact_distance_matrix(gf, gf)]
        del qf, gf
        run = re_ranking if method == "reference" else re_ranking_sparse
        result["input_mb"] = _reset_peak()
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        final = run(*mats)
        result["seconds"] = time.perf_counter() - t0
        result["cpu_seconds"] = _cpu_seconds() - cpu0
        result["peak_mb"] = _peak_mb()
        if method == "sparse":
            result["stats"] = dict(sparse.LAST_RUN_STATS)
        del mats
        np.save(out_path, final)
    else:
        evaluate = out_path == "-"
        if evaluate:
            from metrics import evaluate_rank
            stats = []
        result["input_mb"] = _reset_peak()
        cpu0, t0, spent = _cpu_seconds(), time.perf_counter(), 0.0
        with (open(out_path, "wb") if not evaluate else open(os.devnull, "wb")) as sink:
            for rows, chunk in re_ranking_features(qf, gf):
                if evaluate:  # rank each chunk; only per-query statistics are kept
                    e0 = time.perf_counter()
                    r = evaluate_rank(chunk, q_pids[rows], g_pids, q_cams[rows], g_cams)
                    stats.append((r["num_valid_queries"], r["mAP"], r["cmc"][0]))
                    spent += time.perf_counter() - e0
                else:
                    sink.write(chunk.tobytes())
        result["seconds"] = time.perf_counter() - t0 - spent
        result["cpu_seconds"] = _cpu_seconds() - cpu0
        result["stats"] = dict(sparse.LAST_RUN_STATS)
        if evaluate:
            valid = np.array([s[0] for s in stats], dtype=float)
            result["mAP"] = float(np.dot(valid, [s[1] for s in stats]) / valid.sum())
            result["rank1"] = float(np.dot(valid, [s[2] for s in stats]) / valid.sum())
            result["evaluation_seconds"] = spent
        result["peak_mb"] = _peak_mb()
    print("RESULT " + json.dumps(result))


def _run_child(method, size, out_path):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", method,
           *[str(v) for v in size], out_path]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child {method} {size} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _cmc_map(dist, problem):
    from metrics import compute_CMC_mAP
    _, _, q_pids, g_pids, q_cams, g_cams = problem
    cmc, m_ap = compute_CMC_mAP(dist, q_pids, g_pids, q_cams, g_cams)
    return float(m_ap), float(cmc[0])


def compare_rows(name, size):
    """Reference and sparse rows for one problem size (outputs compared with the reference's:
    max |difference|, mAP and rank-1)."""
    num_query, num_gallery, dim = size
    label = f"{num_query}+{num_gallery} x {dim}-d"
    with tempfile.TemporaryDirectory() as tmp:
        ref_path = os.path.join(tmp, "ref.npy")
        sparse_path, fast_path = os.path.join(tmp, "sparse.npy"), os.path.join(tmp, "fast.bin")
        ref = _run_child("reference", size, ref_path)
        spr = _run_child("sparse", size, sparse_path)
        fast = _run_child("fast", size, fast_path)
        problem = make_problem(*size)
        ref_dist = np.load(ref_path)
        ref_map, ref_r1 = _cmc_map(ref_dist, problem)
        outputs = {}
        for key, path in (("sparse", sparse_path), ("fast", fast_path)):
            dist = np.load(path) if key == "sparse" else \
                np.fromfile(path, dtype=np.float32).reshape(num_query, num_gallery)
            outputs[key] = (float(np.abs(ref_dist - dist).max()), *_cmc_map(dist, problem))
            del dist
        del ref_dist
    rows = []
    ref_total = ref["seconds"] + ref["distance_seconds"]
    for method, res, (max_diff, m_ap, r1) in (
            ("reference re_ranking (dense)", ref, (0.0, ref_map, ref_r1)),
            ("re_ranking_sparse (same matrices)", spr, outputs["sparse"]),
            ("re_ranking_features (from features)", fast, outputs["fast"])):
        rows.append(dict(
            name=f"{name} {method}", size=label, seconds=res["seconds"],
            cpu_seconds=res["cpu_seconds"], peak_mb=res["peak_mb"], base_mb=res["base_mb"],
            input_mb=res.get("input_mb"),
            ratio=ref["seconds"] / res["seconds"],
            cpu_ratio=ref["cpu_seconds"] / res["cpu_seconds"],
            ratio_incl_distances=ref_total / res["seconds"] if res is fast else None,
            memory_ratio=res["peak_mb"] / ref["peak_mb"],
            mAP=m_ap, rank1=r1, same_mAP=m_ap == ref_map, same_rank1=r1 == ref_r1,
            max_abs_diff=max_diff,
            distance_seconds=res.get("distance_seconds"), stats=res.get("stats")))
    return rows


def feasibility_row(name, size):
    """Fast version only (the reference would need ~24 bytes per (Q+G)^2 pair)."""
    num_query, num_gallery, dim = size
    res = _run_child("fast", size, "-")
    n = num_query + num_gallery
    matrices_gib = (num_query * num_gallery + num_query ** 2 + num_gallery ** 2) * 4 / 2**30
    return dict(name=f"{name} re_ranking_features (from features)",
                size=f"{num_query}+{num_gallery} x {dim}-d", seconds=res["seconds"],
                cpu_seconds=res["cpu_seconds"],
                peak_mb=res["peak_mb"], base_mb=res["base_mb"], input_mb=res.get("input_mb"),
                ratio=None, cpu_ratio=None,
                ratio_incl_distances=None, memory_ratio=None,
                mAP=res["mAP"], rank1=res["rank1"], same_mAP=None, same_rank1=None,
                max_abs_diff=None, evaluation_seconds=res["evaluation_seconds"],
                stats=res["stats"],
                note=f"reference not run: needs > {n * n * 24 / 2**30:.0f} GiB; "
                     f"re_ranking_sparse's float32 input matrices alone: "
                     f"{matrices_gib:.0f} GiB")


def benchmark_rows(quick: bool, msmt17: bool = False, msmt17_dim=None,
                   compare: bool = True) -> list:
    """Rows (dicts) of the benchmark: quick = small problem, else Market-1501 size; with
    ``msmt17`` also the fast version alone at MSMT17 size (``msmt17_dim``-d features);
    ``compare=False`` skips the reference comparison."""
    extra = []
    if msmt17:  # first, while this process is still small
        q, g, d = SIZES["MSMT17"]
        extra.append(feasibility_row("MSMT17", (q, g, msmt17_dim or d)))
    if not compare:
        return extra
    rows = compare_rows("quick" if quick else "Market1501",
                        SIZES["quick" if quick else "Market1501"])
    return rows + extra


def format_table(rows):
    head = (f"{'method':<52} {'size':<24} {'time s':>8} {'cpu s':>8} {'peak MB':>9} "
            f"{'speed-up':>8} {'mem':>6} {'mAP':>8} {'rank-1':>7} {'same':>5} {'max|diff|':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        same = "" if r["same_mAP"] is None else ("yes" if r["same_mAP"] and r["same_rank1"]
                                                  else "NO")
        speed = "" if r["ratio"] is None else f"{r['ratio']:.1f}x"
        mem = "" if r["memory_ratio"] is None else f"{r['memory_ratio']:.2f}"
        diff = "" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}"
        lines.append(f"{r['name']:<52} {r['size']:<24} {r['seconds']:>8.1f} "
                     f"{r['cpu_seconds']:>8.1f} {r['peak_mb']:>9.0f} {speed:>8} {mem:>6} "
                     f"{r['mAP']:>8.5f} {r['rank1']:>7.4f} {same:>5} {diff:>9}")
    for r in rows:
        extra = {k: r[k] for k in ("cpu_ratio", "ratio_incl_distances", "distance_seconds",
                                   "evaluation_seconds", "base_mb", "input_mb", "stats", "note")
                 if r.get(k) is not None}
        lines.append(f"  {r['name']}: {extra}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small problem (seconds)")
    parser.add_argument("--msmt17", action="store_true",
                        help="also run the fast version at MSMT17 size (11,659 + 82,161 images)")
    parser.add_argument("--msmt17-dim", type=int, default=SIZES["MSMT17"][2],
                        help="feature dimension of the MSMT17-size run (default 256)")
    parser.add_argument("--msmt17-only", action="store_true",
                        help="only the MSMT17-size run (no reference comparison)")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        method, q, g, d, out = args.worker
        _worker(method, int(q), int(g), int(d), out)
        return
    rows = benchmark_rows(args.quick, args.msmt17 or args.msmt17_only, args.msmt17_dim,
                          compare=not args.msmt17_only)
    print(format_table(rows))


if __name__ == "__main__":
    main()
