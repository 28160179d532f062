"""Evaluation speed and memory: prints one table.

Rows:
* Market-1501 size (3,368 x 15,913; 751 ids + distractors, 6 cameras; 256-d features with
  identity/camera structure): a full-argsort reference written here (torchreid/fast-reid
  style: ``np.argsort`` of every row, then a per-query loop), ``np.argsort`` alone (the
  floor of any full-argsort implementation, compiled or not) and ours (Cython, NumPy).
  Also a "hard" case with uniformly random distances (true matches spread over the row).
* MSMT17 size (11,659 x 82,161, 4,096-d float32 features): dense
  (``compute_distance_matrix`` + ``evaluate_rank``) vs chunked (``evaluate_features``),
  each in its own subprocess (twice, A-B-B-A order), with the peak RSS above the features
  (VmHWM after resetting it via /proc/self/clear_refs once the features exist).
* Re-ranking rows from ``benchmarks/re_ranking_speed.py`` (``benchmark_rows(quick)``) if
  that module exists.

Ratios compare timings taken in the same run (the machine is shared).
Usage (repo root): ``python benchmarks/evaluation_speed.py [--quick]``.
"""
import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from metrics import (CYTHON_AVAILABLE, compute_distance_matrix, evaluate_features,  # noqa: E402
                     evaluate_rank)

MARKET = dict(num_q=3368, num_g=15913, num_ids=751, num_cams=6, num_distractors=2793, dim=256,
              noise=1.5)
MSMT = dict(num_q=11659, num_g=82161, num_ids=3060, num_cams=15, num_distractors=0, dim=4096,
            noise=3.5)
QUICK_MARKET = dict(num_q=842, num_g=3978, num_ids=188, num_cams=6, num_distractors=698, dim=128,
                    noise=1.3)
QUICK_MSMT = dict(num_q=1166, num_g=8216, num_ids=306, num_cams=15, num_distractors=0, dim=512,
                  noise=2.2)


def synthetic_reid(num_q, num_g, num_ids, num_cams, num_distractors, dim, noise=1.5, seed=0):
    """Features = identity centre + camera offset + noise; distractors (pid 0) are random.

    Generated block-wise straight into float32 arrays so no large temporaries exist.
    """
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((num_ids + 1, dim), dtype=np.float32)
    cam_offsets = 0.5 * rng.standard_normal((num_cams, dim), dtype=np.float32)
    g_pids = np.concatenate([np.zeros(num_distractors, np.int64),
                             rng.integers(1, num_ids + 1, num_g - num_distractors)])
    q_pids = rng.integers(1, num_ids + 1, num_q)
    q_camids, g_camids = rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g)

    def features(pids, camids):
        out = np.empty((len(pids), dim), dtype=np.float32)
        for s in range(0, len(pids), 4096):
            blk = out[s:s + 4096]
            rng.standard_normal(out=blk, dtype=np.float32)
            blk *= noise
            p = pids[s:s + 4096]
            blk += np.where((p > 0)[:, None], centers[p] + cam_offsets[camids[s:s + 4096]], 0)
        return out

    return features(q_pids, q_camids), features(g_pids, g_camids), q_pids, g_pids, q_camids, \
        g_camids


def full_argsort_reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20):
    """torchreid/fast-reid-style evaluation: full argsort, then one loop step per query."""
    indices = np.argsort(distmat, axis=1)
    matches = g_pids[indices] == q_pids[:, None]
    cmc_sum, aps, inps = np.zeros(max_rank), [], []
    for q in range(len(q_pids)):
        order = indices[q]
        keep = ~((g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q]))
        raw = matches[q][keep]
        if not raw.any():
            continue
        pos = np.flatnonzero(raw)
        cmc_sum[pos[0]:] += 1
        aps.append(np.mean(np.arange(1, len(pos) + 1) / (pos + 1.0)))
        inps.append(len(pos) / (pos[-1] + 1.0))
    return dict(cmc=(cmc_sum / len(aps)).astype(np.float32), mAP=float(np.mean(aps)),
                mINP=float(np.mean(inps)), num_valid_queries=len(aps))


def best_time(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def differences(a, b):
    return max(abs(a["mAP"] - b["mAP"]), abs(a["mINP"] - b["mINP"]),
               float(np.abs(a["cmc"] - b["cmc"]).max()))


def market_rows(quick):
    size = QUICK_MARKET if quick else MARKET
    qf, gf, q_pids, g_pids, q_camids, g_camids = synthetic_reid(**size)
    realistic = compute_distance_matrix(qf, gf)
    hard = np.random.default_rng(1).random(realistic.shape, dtype=np.float32)
    label = f"Market {size['num_q']}x{size['num_g']}"
    rows = []
    for case, distmat in (("realistic", realistic), ("hard (uniform random)", hard)):
        args = (distmat, q_pids, g_pids, q_camids, g_camids)
        ref_time, ref = best_time(lambda: full_argsort_reference(*args), 2)
        sort_time, _ = best_time(lambda: np.argsort(distmat, axis=1), 2)
        note = f"mAP {ref['mAP']:.4f}, R1 {ref['cmc'][0]:.4f}, mINP {ref['mINP']:.4f}"
        rows.append(dict(case=f"{label} {case}", method="full-argsort reference",
                         time_s=ref_time, ratio=1.0, note=note))
        rows.append(dict(case=f"{label} {case}", method="np.argsort alone (floor)",
                         time_s=sort_time, ratio=ref_time / sort_time, note=""))
        for backend in ("cython", "numpy"):
            if backend == "cython" and not CYTHON_AVAILABLE:
                rows.append(dict(case=f"{label} {case}", method="ours, cython",
                                 note="not built (python setup.py build_ext --inplace)"))
                continue
            t, res = best_time(lambda: evaluate_rank(*args, backend=backend), 3)
            rows.append(dict(case=f"{label} {case}", method=f"ours, {backend}", time_s=t,
                             ratio=ref_time / t,
                             note=f"{sort_time / t:.1f}x vs argsort alone; max |diff| vs "
                                  f"reference {differences(res, ref):.1e}"))
    return rows


def _reset_peak_rss():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def child(mode, quick):
    """One MSMT-size measurement in a fresh process; prints a JSON line."""
    size = QUICK_MSMT if quick else MSMT
    qf, gf, q_pids, g_pids, q_camids, g_camids = synthetic_reid(**size)
    labels = (q_pids, g_pids, q_camids, g_camids)
    can_reset = _reset_peak_rss()
    base = _rss_kib("VmRSS")
    t, cpu = time.perf_counter(), _cpu_seconds()
    if mode == "dense":
        res = evaluate_rank(compute_distance_matrix(qf, gf), *labels)
    else:
        res = evaluate_features(qf, gf, *labels)
    elapsed, cpu = time.perf_counter() - t, _cpu_seconds() - cpu
    peak = _rss_kib("VmHWM")  # without the reset it also covers the setup (flagged)
    print(json.dumps(dict(time_s=elapsed, cpu_s=cpu, peak_extra_mib=(peak - base) / 1024,
                          features_mib=(qf.nbytes + gf.nbytes) / 2 ** 20, mAP=res["mAP"],
                          mINP=res["mINP"], r1=float(res["cmc"][0]), reset=can_reset)))


def msmt_rows(quick):
    """Dense vs chunked, each in a fresh subprocess, in A-B-B-A order (best of two each):
    both do the same distance blocks, so only the shared machine's load differs."""
    size = QUICK_MSMT if quick else MSMT
    label = f"MSMT17 {size['num_q']}x{size['num_g']}, {size['dim']}-d"
    runs = {"dense": [], "chunked": []}
    for mode in ("dense", "chunked", "chunked", "dense"):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", mode] + (
            ["--quick"] if quick else [])
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
        runs[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    best = {mode: dict(r[0], time_s=min(x["time_s"] for x in r), cpu_s=min(x["cpu_s"] for x in r),
                       peak_extra_mib=max(x["peak_extra_mib"] for x in r),
                       reset=all(x["reset"] for x in r))
            for mode, r in runs.items()}
    same = all(x[k] == runs["dense"][0][k] for r in runs.values() for x in r
               for k in ("mAP", "mINP", "r1"))
    rows = []
    for mode, method in (("dense", "dense: distmat + evaluate_rank"),
                         ("chunked", "chunked: evaluate_features")):
        r, d = best[mode], best["dense"]
        times = ", ".join(f"{x['time_s']:.3g}" for x in runs[mode])
        rows.append(dict(case=label, method=method, time_s=r["time_s"],
                         ratio=d["time_s"] / r["time_s"], peak_mib=r["peak_extra_mib"],
                         note=f"runs {times} s; cpu {r['cpu_s']:.1f} s (ratio "
                              f"{d['cpu_s'] / r['cpu_s']:.2f}); mAP {r['mAP']:.4f}, "
                              f"R1 {r['r1']:.4f}; features {r['features_mib']:.0f} MiB"
                              + ("" if mode == "dense" else f"; identical to dense: {same}")
                              + ("" if r["reset"] else "; peak NOT reset (includes setup)")))
    return rows


def re_ranking_rows(quick):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "re_ranking_speed.py")
    if not os.path.exists(path):
        return []
    spec = importlib.util.spec_from_file_location("re_ranking_speed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [_adapt_row(row) for row in module.benchmark_rows(quick)]


def _adapt_row(row):
    """Map helper R's row keys (name, size, seconds, peak_mb, ...) onto this table's columns."""
    if "case" in row or "method" in row:
        return row
    out = dict(case=f"re-ranking {row.get('size', '')}".strip(), method=row.get("name", "-"),
               time_s=row.get("seconds"), ratio=row.get("ratio"), peak_mib=row.get("peak_mb"))
    notes = []
    if row.get("mAP") is not None:
        notes.append(f"mAP {row['mAP']:.4f}, R1 {row.get('rank1', float('nan')):.4f}")
    if row.get("memory_ratio") is not None:
        notes.append(f"memory ratio {row['memory_ratio']:.2f}")
    if row.get("max_abs_diff") is not None:
        notes.append(f"max |diff| vs reference {row['max_abs_diff']:.1e}")
    if row.get("same_mAP") is not None:
        notes.append("same mAP/R1 as reference: "
                     + ("yes" if row["same_mAP"] and row.get("same_rank1") else "NO"))
    if row.get("ratio_incl_distances") is not None:
        notes.append(f"{row['ratio_incl_distances']:.1f}x vs reference + its distance matrices")
    if row.get("input_mb") is not None:  # whole-process VmHWM, reset once the inputs exist
        notes.append(f"peak_mib is the whole process incl. inputs ({row['input_mb']:.0f} MiB "
                     f"when the clock starts)")
    elif row.get("base_mb") is not None:  # total peak RSS, not the increase
        notes.append(f"peak_mib is the whole process (base {row['base_mb']:.0f} MiB)")
    if row.get("note"):
        notes.append(str(row["note"]))
    out["note"] = "; ".join(notes)
    return {k: v for k, v in out.items() if v is not None}


COLUMNS = (("case", 48), ("method", 32), ("time_s", 9), ("ratio", 8), ("peak_mib", 10),
           ("note", 0))


def format_row(row):
    cells = []
    extra = {k: v for k, v in row.items() if k not in dict(COLUMNS)}
    for name, width in COLUMNS:
        value = row.get(name, "-")
        if name == "note" and extra:
            value = "; ".join([str(value)] * (value not in ("-", "")) +
                              [f"{k}={v}" for k, v in extra.items()])
        if isinstance(value, float):
            value = f"{value:.1f}x" if name == "ratio" else (
                f"{value:.0f}" if name == "peak_mib" else f"{value:.3f}")
        cells.append(f"{value!s:<{width}}" if width else str(value))
    return " | ".join(cells)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument("--child", choices=("dense", "chunked"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.quick)
        return
    print(f"cpus={os.cpu_count()} numpy={np.__version__} cython_kernel={CYTHON_AVAILABLE} "
          f"ratio = reference time / this time (same run); peak_mib = peak RSS above the "
          f"features")
    print(format_row({name: name for name, _ in COLUMNS}))
    print("-" * 150, flush=True)
    for section in (market_rows, msmt_rows, re_ranking_rows):  # rows appear as they finish
        for row in section(args.quick):
            print(format_row(row), flush=True)


if __name__ == "__main__":
    main()
