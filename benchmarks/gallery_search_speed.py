"""Build time, peak memory, queries/s and recall@10 of the gallery index backends
(``retrieval.GalleryIndex``) on a large synthetic gallery.

    python benchmarks/gallery_search_speed.py                    # 1,000,000 x 512-d gallery
    python benchmarks/gallery_search_speed.py --latent_dim 64    # drawn in 64-d, mapped to 512-d
    python benchmarks/gallery_search_speed.py --quick            # 50,000 x 512-d, a minute

Data (``make_vectors``): unit vectors of ``size / 20`` identities (about 20 images each), each an
image = shared offset + identity centre + one of 6 camera offsets + noise (per-dimension scales
1, 1, 0.3, 0.7), generated in chunks of 65,536 rows; queries are fresh images of the gallery's
identities. In the exact top-10 of a query nearly all images share its identity, but the noise
is isotropic in all 512 dimensions, a hard case for approximate search; ``--latent_dim 64``
draws the images in 64 dimensions and maps them linearly to 512 (plus 0.05 noise per dimension),
closer to real CNN features, which lie near a low-dimensional manifold.

Each backend runs in its own subprocess, which generates the same seeded gallery itself:
``exact`` first (its top-10 of the queries are the reference), then the faiss indexes, whose
search breadth ``build`` calibrates to recall@10 >= 0.95 on 200 gallery images held out of the
index until then; their rows give recall@10 on the 1000 queries against exact search, at the
calibrated breadth and at two others, and the build's note when faiss was not twice as fast as
exact search (``--backend auto`` would then keep exact search). Memory: ``input`` is the RSS once the gallery array exists (it
counts in the build peak, as ``build`` normalises a copy); ``build peak`` is VmHWM during the
build; ``index`` is the RSS once the input array is deleted; ``search peak`` is VmHWM during the
timed search. Queries/s: all queries in one ``search`` call, k=10, after a 10-query warm-up.
"""
import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

BACKENDS = ("exact", "hnsw_flat", "ivf_flat")
CHUNK = 65536


def make_vectors(size, dim, num_ids, seed, data_seed=0, latent_dim=0):
    """(size, dim) float32 unit vectors of ``num_ids`` identities and their identities;
    ``data_seed`` fixes the centres shared by a gallery and its queries, ``seed`` the draws.
    With ``latent_dim``, the images are drawn in that many dimensions and mapped linearly to
    ``dim`` (plus 0.05 noise per dimension)."""
    shared = np.random.default_rng(data_seed)
    inner = latent_dim or dim
    offset = shared.standard_normal(inner, dtype=np.float32)
    centres = shared.standard_normal((num_ids, inner), dtype=np.float32)
    cameras = 0.3 * shared.standard_normal((6, inner), dtype=np.float32)
    mapping = shared.standard_normal((inner, dim), dtype=np.float32) / np.sqrt(inner)
    rng = np.random.default_rng(seed)
    identities = rng.integers(0, num_ids, size)
    vectors = np.empty((size, dim), dtype=np.float32)
    for start in range(0, size, CHUNK):
        ids = identities[start:start + CHUNK]
        block = offset + centres[ids] + cameras[rng.integers(0, 6, len(ids))]
        block += 0.7 * rng.standard_normal(block.shape, dtype=np.float32)
        if latent_dim:
            block = block @ mapping
            block += 0.05 * rng.standard_normal(block.shape, dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        vectors[start:start + CHUNK] = block
    return vectors, identities


def _status_mib(key):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _reset_peak():
    """Reset VmHWM to the current RSS (Linux >= 4.0); returns that RSS in MiB."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass
    return _status_mib("VmRSS")


def _timed_search(index, queries, k):
    index.search(queries[:10], k)
    start = time.perf_counter()
    distances, indices = index.search(queries, k)
    return time.perf_counter() - start, indices


def _worker(backend, size, dim, num_queries, k, reference_path, sweep, latent_dim):
    """One backend in this process; prints one JSON line of measurements."""
    from retrieval import GalleryIndex
    from retrieval.gallery_index import recall_at_k
    num_ids = max(1, size // 20)
    gallery, _ = make_vectors(size, dim, num_ids, seed=1, latent_dim=latent_dim)
    queries, _ = make_vectors(num_queries, dim, num_ids, seed=2, latent_dim=latent_dim)
    result = dict(backend=backend, input_mib=_reset_peak())
    start = time.perf_counter()
    if backend == "exact":
        index = GalleryIndex.build(gallery, backend="exact")
    else:
        index = GalleryIndex.build(gallery, backend="faiss", faiss_index_type=backend)
    result["build_seconds"] = time.perf_counter() - start
    result["build_peak_mib"] = _status_mib("VmHWM")
    del gallery
    gc.collect()
    result["index_mib"] = _reset_peak()
    seconds, indices = _timed_search(index, queries, k)
    result["search_peak_mib"] = _status_mib("VmHWM")
    result["queries_per_second"] = num_queries / seconds
    result["describe"] = index.describe()
    result["note"] = index.note
    if backend == "exact":
        np.save(reference_path, indices)
        print(json.dumps(result))
        return
    reference = np.load(reference_path)
    result["breadth"] = index.faiss_settings["search_breadth"]
    result["calibration_recall"] = index.faiss_settings["recall"]["value"]
    result["recall"] = recall_at_k(reference, indices)
    calibrated = result["breadth"]
    result["sweep"] = []
    for factor in sweep:
        breadth = int(calibrated * factor)
        if breadth < 1 or factor == 1:
            continue
        index.set_search_breadth(breadth)
        seconds, found = _timed_search(index, queries, k)
        result["sweep"].append(dict(breadth=index.faiss_settings["search_breadth"],
                                    queries_per_second=num_queries / seconds,
                                    recall=recall_at_k(reference, found)))
    print(json.dumps(result))


def run_backend(backend, size, dim, num_queries, k, reference_path, sweep, latent_dim):
    command = [sys.executable, os.path.abspath(__file__), "--worker", backend, "--size", str(size),
               "--dim", str(dim), "--queries", str(num_queries), "--k", str(k),
               "--reference", reference_path, "--sweep", ",".join(map(str, sweep)),
               "--latent_dim", str(latent_dim)]
    process = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if process.returncode:
        raise RuntimeError("{} failed:\n{}".format(backend, process.stderr[-3000:]))
    return json.loads(process.stdout.strip().splitlines()[-1])


def table(results, size, dim, num_queries, k):
    lines = ["| backend | build (s) | input (MiB) | build peak (MiB) | index (MiB) | search peak "
             "(MiB) | queries/s ({} queries, k={}) | recall@{} vs exact | notes |".format(
                 num_queries, k, k),
             "|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        if result["backend"] == "exact":
            name, recall, notes = "exact (NumPy, 256 MiB blocks)", "1 (reference)", ""
        else:
            breadth_name = "nprobe" if result["backend"] == "ivf_flat" else "efSearch"
            name = "faiss {}, {} {} (calibrated)".format(result["backend"], breadth_name,
                                                        result["breadth"])
            recall = "{:.3f}".format(result["recall"])
            notes = "calibration: {:.3f} on 200 held-out gallery images; ".format(
                result["calibration_recall"]) + "; ".join(
                "{} {}: {:.1f} q/s, recall {:.3f}".format(breadth_name, row["breadth"],
                                                          row["queries_per_second"], row["recall"])
                for row in result["sweep"])
            if result["note"]:
                notes += "; " + result["note"]
        values = (name, result["build_seconds"], result["input_mib"], result["build_peak_mib"],
                  result["index_mib"], result["search_peak_mib"], result["queries_per_second"],
                  recall, notes)
        lines.append("| {} | {:.1f} | {:,.0f} | {:,.0f} | {:,.0f} | {:,.0f} | {:.1f} | {} | {} |"
                     .format(*values))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="gallery vectors")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--latent_dim", type=int, default=0,
                        help="draw the images in this many dimensions (0: in all --dim)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--sweep", default="0.5,2", help="faiss breadths tried besides the "
                        "calibrated one, as factors of it")
    parser.add_argument("--quick", action="store_true", help="50,000 vectors")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--reference", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sweep = [float(value) for value in args.sweep.split(",") if value]
    if args.quick:
        args.size = 50_000
    if args.worker:
        _worker(args.worker, args.size, args.dim, args.queries, args.k, args.reference, sweep,
                args.latent_dim)
        return
    backends = args.backends.split(",")
    unknown = set(backends) - set(BACKENDS)
    if unknown or "exact" not in backends:
        parser.error("--backends takes exact (always needed: it is the reference) and any of "
                     "{}".format(BACKENDS[1:]))
    import faiss
    print("{:,} gallery x {}-d{}, {} queries, k={}; {} CPUs, NumPy {}, faiss {}, Python {}".format(
        args.size, args.dim, " (latent {}-d)".format(args.latent_dim) if args.latent_dim else "",
        args.queries, args.k, os.cpu_count(), np.__version__,
        faiss.__version__, platform.python_version()), flush=True)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        reference_path = os.path.join(folder, "exact_top_k.npy")
        for backend in ["exact"] + [name for name in backends if name != "exact"]:
            start = time.perf_counter()
            results.append(run_backend(backend, args.size, args.dim, args.queries, args.k,
                                       reference_path, sweep, args.latent_dim))
            print("{}: {} ({:.0f} s with data generation)".format(
                backend, results[-1]["describe"], time.perf_counter() - start), flush=True)
    print(table(results, args.size, args.dim, args.queries, args.k))


if __name__ == "__main__":
    main()
