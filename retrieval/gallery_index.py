"""A searchable gallery of re-ID features: top-k cosine search, exact or with faiss.

Features are stored L2-normalised (float32), so cosine distance is ``1 - dot``. The ``exact``
backend multiplies query and gallery blocks (a bounded working set) and keeps a running top-k,
ties going to the lower gallery index. The ``faiss`` backend (``pip install faiss-cpu``) is an
HNSW-Flat (default) or IVF-Flat index on the same vectors; its search breadth (nprobe or
efSearch) is calibrated at build time to reach ``target_recall`` of recall@k against exact search
for gallery images held out of the index until then, and the measured recall is kept with it.

An index remembers the fingerprint of the model that produced its features and refuses query
features of another model (``check_fingerprint``). Saved as one ``.npz`` file or as a folder
(``gallery.npz`` + ``faiss.index``), written atomically and read without pickle.
"""
import json
import math
import os
import shutil
import tempfile
import time
import warnings

import numpy as np

from utils.files import atomic_path, atomic_write

BACKENDS = ("auto", "exact", "faiss")
FAISS_INDEX_TYPES = ("hnsw_flat", "ivf_flat")
# Below this size exact search answers 1000 queries in seconds (benchmarks/README.md), and
# exact results need no recall caveat.
AUTO_EXACT_MAX_SIZE = 200_000
# Working memory of exact search: the similarity tile plus argpartition's int64 indices.
DEFAULT_CHUNK_BYTES = 256 * 2 ** 20
QUERY_BLOCK = 256
# ``auto`` keeps a faiss index only if it answers the calibration queries this much faster than
# exact search; otherwise the exact answers cost little more.
FAISS_MIN_SPEED_UP = 2
FORMAT_NAME = "reid-gallery-index"
FORMAT_VERSION = 1
FOLDER_ARRAYS_FILE = "gallery.npz"
FOLDER_FAISS_FILE = "faiss.index"
FAISS_INSTALL_HINT = "pip install faiss-cpu==1.15.1"


def import_faiss():
    """The faiss module, imported on first use so that exact search never needs it."""
    try:
        import faiss
    except ImportError as error:
        raise ImportError("the faiss backend needs faiss-cpu, which is not installed: run "
                          f"`{FAISS_INSTALL_HINT}`, or use backend='exact'") from error
    return faiss


def faiss_available():
    try:
        import_faiss()
    except ImportError:
        return False
    return True


def normalise_features(features, name="features"):
    """Validated, L2-normalised float32 C-contiguous copy of a (N, D) array."""
    array = np.asarray(features)
    if array.ndim == 1 and name.startswith("query"):
        array = array[None]
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (num_images, feature_dim) array, got shape "
                         f"{array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} are empty (shape {array.shape}): give at least one image and "
                         "a non-zero feature dimension")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    array = np.array(array, dtype=np.float32, order="C", copy=True)
    norms = np.empty(len(array), dtype=np.float32)
    for start in range(0, len(array), 65536):  # blocks keep the temporaries small
        block = array[start:start + 65536]
        norms[start:start + 65536] = np.sqrt(np.einsum("ij,ij->i", block, block))
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if len(bad):
        raise ValueError(f"{name}: {len(bad)} row(s) are zero or not finite (first: row {bad[0]}); "
                         "cosine search needs non-zero finite features, so drop those images")
    for start in range(0, len(array), 65536):
        array[start:start + 65536] /= norms[start:start + 65536, None]
    return array


def _top_k_block(similarities, k):
    """Best ``k`` columns of each row, sorted by similarity then column (ties: lower column)."""
    rows, columns = similarities.shape
    k = min(k, columns)
    if k == columns:
        indices = np.broadcast_to(np.arange(columns), (rows, columns))
    else:
        indices = np.argpartition(similarities, columns - k, axis=1)[:, columns - k:]
        threshold = np.take_along_axis(similarities, indices, axis=1).min(axis=1)
        # argpartition picks arbitrarily among values equal to the k-th: redo those rows.
        tied = np.flatnonzero((similarities >= threshold[:, None]).sum(axis=1) > k)
        if len(tied):
            indices = np.array(indices)
            for row in tied:
                candidates = np.flatnonzero(similarities[row] >= threshold[row])
                order = np.lexsort((candidates, -similarities[row, candidates]))
                indices[row] = candidates[order[:k]]
    values = np.take_along_axis(similarities, indices, axis=1)
    order = np.lexsort((indices, -values), axis=1)
    return (np.take_along_axis(values, order, axis=1),
            np.take_along_axis(indices, order, axis=1).astype(np.int64))


def exact_search(queries, gallery, k, chunk_bytes=DEFAULT_CHUNK_BYTES):
    """Exact top-k by inner product of (normalised) rows: (similarities (Q, k), indices (Q, k)),
    best first, ties to the lower gallery index; k is capped at the gallery size.

    The (Q, N) similarity matrix is computed in tiles of up to QUERY_BLOCK queries and as many
    gallery rows as ``chunk_bytes`` of working memory allow, the top-k merged across tiles.
    """
    num_queries, num_gallery = len(queries), len(gallery)
    k = min(int(k), num_gallery)
    elements = max(1, chunk_bytes // 16)  # 4 B similarity + 8 B argpartition index + mask
    # Many queries per tile let BLAS reuse each gallery row; a tall thin tile would stream the
    # whole gallery from memory once per handful of queries (3x slower at 1M x 512).
    rows = max(1, min(num_queries, QUERY_BLOCK, elements // max(k, 1)))
    columns = min(num_gallery, max(k, elements // rows))
    best_values = np.empty((num_queries, k), dtype=np.float32)
    best_indices = np.empty((num_queries, k), dtype=np.int64)
    for query_start in range(0, num_queries, rows):
        block_queries = queries[query_start:query_start + rows]
        values = indices = None
        for gallery_start in range(0, num_gallery, columns):
            block = block_queries @ gallery[gallery_start:gallery_start + columns].T
            block_values, block_indices = _top_k_block(block, k)
            block_indices += gallery_start
            if values is None:
                values, indices = block_values, block_indices
                continue
            values = np.concatenate([values, block_values], axis=1)
            indices = np.concatenate([indices, block_indices], axis=1)
            order = np.lexsort((indices, -values), axis=1)[:, :k]
            values = np.take_along_axis(values, order, axis=1)
            indices = np.take_along_axis(indices, order, axis=1)
        best_values[query_start:query_start + rows] = values
        best_indices[query_start:query_start + rows] = indices
    return best_values, best_indices


def recall_at_k(reference_indices, found_indices):
    """Mean fraction of each reference row's indices found in the same row of ``found``."""
    reference_indices = np.asarray(reference_indices)
    found_indices = np.asarray(found_indices)
    if reference_indices.shape[1] == 0:
        return 1.0
    hits = (reference_indices[:, :, None] == found_indices[:, None, :]).any(axis=2)
    return float(hits.mean())


def _optional_ids(values, size, name):
    if values is None:
        return None
    values = np.asarray(values)
    if values.shape != (size,):
        raise ValueError(f"{name} has shape {values.shape} but the gallery has {size} images: "
                         "give one value per gallery row (or none)")
    if not np.issubdtype(values.dtype, np.integer):
        if not np.issubdtype(values.dtype, np.number) or not np.all(values == np.round(values)):
            raise ValueError(f"{name} must hold integers, got dtype {values.dtype}")
    return values.astype(np.int64)


def _image_paths(paths, size):
    if paths is None:
        return np.array(["gallery[{}]".format(index) for index in range(size)])
    paths = np.asarray(paths)
    if paths.shape != (size,):
        raise ValueError(f"image paths have shape {paths.shape} but the gallery has {size} "
                         "images: give one path per gallery row")
    return paths.astype(str)


class GalleryIndex:
    """Normalised gallery features with their image paths, identities, cameras and the
    fingerprint of the model that produced them, searchable by cosine distance.

    Build with ``GalleryIndex.build``; ``search`` returns cosine distances (best first) and
    gallery indices; ``save`` / ``GalleryIndex.load`` keep it on disk.
    """

    def __init__(self, features, image_paths, identity_ids=None, camera_ids=None,
                 fingerprint=None, backend="exact", faiss_index=None, faiss_settings=None,
                 faiss_ids=None, note=""):
        self.features = features
        self.image_paths = image_paths
        self.identity_ids = identity_ids
        self.camera_ids = camera_ids
        self.fingerprint = fingerprint
        self.backend = backend
        self.faiss_index = faiss_index
        self.faiss_settings = dict(faiss_settings or {})
        # gallery index of each faiss id (the faiss index holds the images in another order)
        self.faiss_ids = faiss_ids
        self.note = note

    # ----------------------------------------------------------------- building
    @classmethod
    def build(cls, features, image_paths=None, identity_ids=None, camera_ids=None,
              fingerprint=None, backend="auto", faiss_index_type="hnsw_flat", target_recall=0.95,
              recall_k=10, calibration_queries=200, nlist=None, hnsw_m=32,
              hnsw_ef_construction=40, seed=0):
        """An index of ``features`` (N, D), normalised here.

        ``backend``: ``exact``; ``faiss``; ``auto`` = exact below AUTO_EXACT_MAX_SIZE images,
        else faiss when installed (else exact, with a note), and exact again when faiss at the
        calibrated breadth is not FAISS_MIN_SPEED_UP times faster than exact search. For faiss,
        the search breadth is the smallest power of two whose recall@k against exact search
        reaches ``target_recall`` for ``calibration_queries`` gallery images used as queries
        (added to the index only after the calibration); ``nlist`` (IVF) defaults to 4 sqrt(N),
        ``hnsw_m`` / ``hnsw_ef_construction`` are HNSW's graph degree and build breadth.
        """
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: use one of {BACKENDS}")
        if faiss_index_type not in FAISS_INDEX_TYPES:
            raise ValueError(f"unknown faiss index type {faiss_index_type!r}: use one of "
                             f"{FAISS_INDEX_TYPES}")
        if not 0 < target_recall <= 1:
            raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise ValueError(f"fingerprint must be a string or None, got {type(fingerprint)}")
        features = normalise_features(features, "gallery features")
        size = len(features)
        index = cls(features, _image_paths(image_paths, size),
                    _optional_ids(identity_ids, size, "identity_ids"),
                    _optional_ids(camera_ids, size, "camera_ids"), fingerprint)
        automatic = backend == "auto"
        if automatic:
            if size < AUTO_EXACT_MAX_SIZE:
                backend = "exact"
            elif faiss_available():
                backend = "faiss"
            else:
                backend = "exact"
                index.note = (f"{size} images: exact search, as faiss is not installed "
                              f"({FAISS_INSTALL_HINT} for faster queries on large galleries)")
        index.backend = backend
        if backend == "faiss":
            index._build_faiss(faiss_index_type, nlist, hnsw_m, hnsw_ef_construction, seed,
                               target_recall, recall_k, calibration_queries)
            index._compare_with_exact(fall_back=automatic)
        return index

    def _compare_with_exact(self, fall_back):
        """On galleries whose neighbourhoods are hard to approximate (noise spread over all
        dimensions), faiss needs so broad a search for the target recall that exact search is
        faster: then ``auto`` falls back to exact search, and ``faiss`` says so."""
        seconds = self.faiss_settings.get("calibration_seconds")
        if not seconds or seconds["faiss"] * FAISS_MIN_SPEED_UP <= seconds["exact"]:
            return
        message = ("faiss {} needed a search breadth of {} for recall@{} {:.3f} and was not {}x "
                   "faster than exact search on the calibration queries ({:.2f} s vs {:.2f} s)"
                   .format(self.faiss_settings["index_type"],
                           self.faiss_settings["search_breadth"],
                           self.faiss_settings["recall"]["k"],
                           self.faiss_settings["recall"]["value"], FAISS_MIN_SPEED_UP,
                           seconds["faiss"], seconds["exact"]))
        if fall_back:
            self.backend, self.faiss_index, self.faiss_ids = "exact", None, None
            self.faiss_settings = {}
            self.note = message + ": exact search"
        else:
            self.note = message
            warnings.warn(message + "; backend='exact' (or 'auto') would be faster")

    def _build_faiss(self, index_type, nlist, hnsw_m, hnsw_ef_construction, seed,
                     target_recall, recall_k, calibration_queries):
        faiss = import_faiss()
        size, dimension = self.features.shape
        rng = np.random.default_rng(seed)
        # Gallery images held out of the index until the search breadth is calibrated on them:
        # queries the index does not contain, as real queries (an HNSW node finds its own
        # neighbours trivially, which overstated recall).
        held_out = np.sort(rng.choice(size, min(int(calibration_queries), size // 4),
                                      replace=False))
        kept = np.setdiff1d(np.arange(size), held_out)
        self.faiss_ids = np.concatenate([kept, held_out])
        # L2 on unit vectors ranks as cosine (|a-b|^2 = 2 - 2 a.b) and lets IVF use plain
        # k-means, whose centroids are not unit vectors.
        if index_type == "ivf_flat":
            if nlist is None:
                nlist = int(round(4 * math.sqrt(size)))
            nlist = max(1, min(int(nlist), len(kept) // 39))  # faiss wants >= 39 points a list
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dimension), dimension, nlist)
            index.cp.seed = seed
            training_size = min(len(kept), 64 * nlist)
            index.train(self.features[np.sort(rng.choice(kept, training_size, replace=False))])
            self.faiss_settings = dict(index_type=index_type, nlist=nlist,
                                       training_size=training_size)
        else:
            index = faiss.IndexHNSWFlat(dimension, int(hnsw_m))
            index.hnsw.efConstruction = int(hnsw_ef_construction)
            self.faiss_settings = dict(index_type=index_type, m=int(hnsw_m),
                                       ef_construction=int(hnsw_ef_construction))
        self.faiss_index = index
        for start in range(0, len(kept), 65536):  # blocks bound the reordered copy
            index.add(self.features[kept[start:start + 65536]])
        self._calibrate(held_out, target_recall, recall_k)
        index.add(self.features[held_out])

    def _breadth_candidates(self, k):
        if self.faiss_settings["index_type"] == "ivf_flat":
            nlist = self.faiss_settings["nlist"]
            candidates = [2 ** power for power in range(int(math.log2(nlist)) + 1)]
            return [value for value in candidates if value < nlist] + [nlist]
        start = max(16, 2 ** math.ceil(math.log2(max(k, 1))))
        return [start * 2 ** power for power in range(12) if start * 2 ** power <= 8192]

    def set_search_breadth(self, breadth):
        """nprobe (IVF lists scanned) or efSearch (HNSW candidate list) of the faiss backend."""
        if self.backend != "faiss":
            raise ValueError("the search breadth only applies to the faiss backend; this index "
                             "searches exactly")
        breadth = int(breadth)
        if breadth < 1:
            raise ValueError(f"the search breadth must be >= 1, got {breadth}")
        if self.faiss_settings["index_type"] == "ivf_flat":
            self.faiss_index.nprobe = min(breadth, self.faiss_settings["nlist"])
            self.faiss_settings["search_breadth"] = int(self.faiss_index.nprobe)
        else:
            self.faiss_index.hnsw.efSearch = breadth
            self.faiss_settings["search_breadth"] = breadth

    def _calibrate(self, held_out, target_recall, k):
        """Set the smallest search breadth (powers of two) whose recall@k against exact search,
        for the held-out gallery images as queries, reaches ``target_recall``."""
        candidates = self._breadth_candidates(k)
        if len(held_out) == 0:
            self.set_search_breadth(candidates[-1])
            self.faiss_settings["recall"] = None
            return
        indexed = len(self) - len(held_out)
        k = min(k, indexed)
        queries = self.features[held_out]
        # exact top-k among the indexed images: the k best that are not held out
        start = time.perf_counter()
        indices = exact_search(queries, self.features, k + len(held_out))[1]
        exact_seconds = time.perf_counter() - start
        first = np.argsort(np.isin(indices, held_out), axis=1, kind="stable")[:, :k]
        reference = np.take_along_axis(indices, first, axis=1)
        recall = 0.0
        for breadth in candidates:
            self.set_search_breadth(breadth)
            start = time.perf_counter()
            found = self.faiss_index.search(queries, k)[1]
            faiss_seconds = time.perf_counter() - start
            recall = recall_at_k(reference, np.where(found < 0, -1, self.faiss_ids[found]))
            if recall >= target_recall:
                break
        else:
            warnings.warn(f"faiss recall@{k} reached only {recall:.3f} < {target_recall} at the "
                          f"largest search breadth {breadth}; use backend='exact' for exact "
                          "results")
        self.faiss_settings["recall"] = dict(k=int(k), value=recall, queries=len(held_out),
                                             target=float(target_recall))
        self.faiss_settings["calibration_seconds"] = dict(exact=exact_seconds,
                                                          faiss=faiss_seconds)

    # ----------------------------------------------------------------- search
    def __len__(self):
        return len(self.features)

    @property
    def dimension(self):
        return self.features.shape[1]

    def _faiss_search(self, queries, k):
        squared, found = self.faiss_index.search(queries, k)
        distances = np.clip(squared / 2, 0, 2).astype(np.float32)
        indices = np.where(found < 0, -1, self.faiss_ids[found])
        # IVF returns -1 when the probed lists hold fewer than k vectors: answer those exactly.
        missing = np.flatnonzero((indices < 0).any(axis=1))
        if len(missing):
            similarities, exact_indices = exact_search(queries[missing], self.features, k)
            distances[missing] = np.clip(1 - similarities, 0, 2)
            indices[missing] = exact_indices
        return distances, indices.astype(np.int64)

    def search(self, query_features, k=10, exact=None, chunk_bytes=DEFAULT_CHUNK_BYTES):
        """Top-k gallery images of each query: (cosine distances (Q, k), gallery indices (Q, k)),
        best first; k is capped at the gallery size. ``exact=True`` bypasses faiss."""
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = normalise_features(query_features, "query features")
        if queries.shape[1] != self.dimension:
            raise ValueError(f"query features have dimension {queries.shape[1]} but the gallery "
                             f"index holds {self.dimension}-d features: query with the model that "
                             "built the index, or rebuild the index with this model")
        k = min(k, len(self))
        if exact is None:
            exact = self.backend != "faiss"
        if not exact:
            return self._faiss_search(queries, k)
        similarities, indices = exact_search(queries, self.features, k, chunk_bytes)
        return np.clip(1 - similarities, 0, 2), indices

    def measure_recall(self, query_features, k=10):
        """Recall@k of this index's search against exact search on the given queries."""
        if self.backend != "faiss":
            return 1.0
        exact = self.search(query_features, k, exact=True)[1]
        return recall_at_k(exact, self.search(query_features, k)[1])

    def check_fingerprint(self, fingerprint):
        """Refuse features of another model. True when both fingerprints are known and equal,
        False when one is unknown (nothing to compare)."""
        if self.fingerprint is None or fingerprint is None:
            return False
        if fingerprint != self.fingerprint:
            raise ValueError(
                f"model mismatch: the gallery index was built with features of the model with "
                f"fingerprint {self.fingerprint!r}, but the query features come from the model "
                f"with fingerprint {fingerprint!r}; features of different models are not "
                "comparable. Rebuild the index with this model, or query with the model that "
                "built the index")
        return True

    def describe(self):
        """One line: size, dimension, backend and its measured recall, fingerprint."""
        text = f"{len(self):,} images x {self.dimension}-d, "
        if self.backend == "faiss":
            settings = self.faiss_settings
            ivf = settings["index_type"] == "ivf_flat"
            breadth_name = "nprobe" if ivf else "efSearch"
            size_name = ("nlist {}" if ivf else "M {}").format(
                settings["nlist"] if ivf else settings["m"])
            text += "faiss {} ({}, {} {})".format(settings["index_type"], size_name, breadth_name,
                                                  settings.get("search_breadth"))
            recall = settings.get("recall")
            if recall:
                text += (", recall@{} {:.3f} against exact search ({} held-out gallery "
                         "queries)").format(recall["k"], recall["value"], recall["queries"])
        else:
            text += "exact search"
        text += ", model fingerprint {}".format(self.fingerprint or "unknown")
        return text + (" ({})".format(self.note) if self.note else "")

    # ----------------------------------------------------------------- storage
    def _metadata(self):
        return dict(format=FORMAT_NAME, version=FORMAT_VERSION, backend=self.backend,
                    size=len(self), dimension=self.dimension, fingerprint=self.fingerprint,
                    faiss=self.faiss_settings if self.backend == "faiss" else None,
                    note=self.note)

    def _arrays(self):
        arrays = dict(features=self.features, image_paths=self.image_paths,
                      metadata=np.array(json.dumps(self._metadata())))
        if self.identity_ids is not None:
            arrays["identity_ids"] = self.identity_ids
        if self.camera_ids is not None:
            arrays["camera_ids"] = self.camera_ids
        if self.faiss_index is not None:
            arrays["faiss_ids"] = self.faiss_ids
        return arrays

    def save(self, path):
        """Write the index to ``path``: a single file if it ends in ``.npz``, else a folder.
        Nothing is left half-written: the file or folder appears complete or not at all."""
        arrays = self._arrays()
        if str(path).endswith(".npz"):
            if self.faiss_index is not None:
                arrays["faiss_index"] = import_faiss().serialize_index(self.faiss_index)
            with atomic_write(path, "wb") as file:
                np.savez(file, **arrays)
            return
        path = os.path.abspath(path)
        if os.path.exists(path) and not os.path.isfile(os.path.join(path, FOLDER_ARRAYS_FILE)):
            raise FileExistsError(f"{path} exists and is not a gallery index folder (no "
                                  f"{FOLDER_ARRAYS_FILE}): choose another index path or remove it")
        parent, name = os.path.split(path)
        os.makedirs(parent, exist_ok=True)
        temporary = tempfile.mkdtemp(dir=parent, prefix="." + name + ".", suffix=".tmp")
        try:
            with atomic_write(os.path.join(temporary, FOLDER_ARRAYS_FILE), "wb") as file:
                np.savez(file, **arrays)
            if self.faiss_index is not None:
                with atomic_path(os.path.join(temporary, FOLDER_FAISS_FILE)) as faiss_path:
                    import_faiss().write_index(self.faiss_index, faiss_path)
            if os.path.exists(path):
                previous = temporary + ".previous"
                os.rename(path, previous)
                os.rename(temporary, path)
                shutil.rmtree(previous)
            else:
                os.rename(temporary, path)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise

    @classmethod
    def load(cls, path):
        """An index written by ``save`` (a ``.npz`` file or a folder). A faiss index read where
        faiss is not installed falls back to exact search, with a warning."""
        folder = os.path.isdir(path)
        arrays_path = os.path.join(path, FOLDER_ARRAYS_FILE) if folder else path
        if not os.path.isfile(arrays_path):
            raise FileNotFoundError(f"no gallery index at {path} (expected a .npz file or a folder "
                                    f"with {FOLDER_ARRAYS_FILE}): build one with "
                                    "`python -m tools.search_gallery --build_index_from ...`")
        with np.load(arrays_path, allow_pickle=False) as data:
            if "metadata" not in data.files:
                raise ValueError(f"{arrays_path} is not a gallery index (no metadata): build one "
                                 "with `python -m tools.search_gallery --build_index_from ...`")
            metadata = json.loads(str(data["metadata"]))
            if metadata.get("format") != FORMAT_NAME or metadata.get("version") != FORMAT_VERSION:
                raise ValueError(f"{arrays_path} holds format {metadata.get('format')!r} version "
                                 f"{metadata.get('version')!r}; this code reads {FORMAT_NAME!r} "
                                 f"version {FORMAT_VERSION}: rebuild the index")
            index = cls(data["features"], data["image_paths"].astype(str),
                        data["identity_ids"] if "identity_ids" in data.files else None,
                        data["camera_ids"] if "camera_ids" in data.files else None,
                        metadata["fingerprint"], metadata["backend"],
                        faiss_settings=metadata["faiss"], note=metadata.get("note", ""))
            serialized = data["faiss_index"] if "faiss_index" in data.files else None
            index.faiss_ids = data["faiss_ids"] if "faiss_ids" in data.files else None
        if index.features.shape != (metadata["size"], metadata["dimension"]):
            raise ValueError(f"{arrays_path} is damaged: features of shape {index.features.shape}, "
                             f"metadata says ({metadata['size']}, {metadata['dimension']}); "
                             "rebuild the index")
        if index.backend != "faiss":
            return index
        try:
            faiss = import_faiss()
        except ImportError:
            warnings.warn(f"{path} was built with faiss, which is not installed here: searching "
                          f"exactly (slower; {FAISS_INSTALL_HINT} for the faiss index)")
            index.backend, index.faiss_settings = "exact", {}
            index.note = "faiss index not loaded: faiss is not installed"
            return index
        if folder:
            index.faiss_index = faiss.read_index(os.path.join(path, FOLDER_FAISS_FILE))
        else:
            index.faiss_index = faiss.deserialize_index(serialized)
        if (index.faiss_index.ntotal != len(index) or index.faiss_index.d != index.dimension
                or index.faiss_ids is None or len(index.faiss_ids) != len(index)):
            raise ValueError(f"{path} is damaged: its faiss index holds {index.faiss_index.ntotal} "
                             f"x {index.faiss_index.d}-d vectors, the features {len(index)} x "
                             f"{index.dimension}; rebuild the index")
        index.set_search_breadth(index.faiss_settings["search_breadth"])
        return index
