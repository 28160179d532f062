"""The gallery index and the search tool against independent brute-force references: Python
loops over exact dot products, full float64 argsorts, and direct reads of the written files."""
import csv
import json
import os
import subprocess
import sys
import types
import zlib
from fractions import Fraction

import numpy as np
import pytest

import retrieval.gallery_index as gallery_index_module
from retrieval import GalleryIndex, exact_search
from tools import search_gallery

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Recall@10 of the faiss backends against exact search on fresh clustered queries (measured:
# 0.96 IVF-Flat, 0.97 HNSW). The build calibrates the search breadth to 0.95 on 200 gallery
# images held out of the index; other queries of the same distribution land a little either
# side of it.
FAISS_RECALL_THRESHOLD = 0.9

try:
    import faiss  # noqa: F401
    HAVE_FAISS = True
except ImportError:
    HAVE_FAISS = False
needs_faiss = pytest.mark.skipif(not HAVE_FAISS, reason="faiss-cpu is not installed")
# faiss on galleries this small is rarely faster than exact search, and says so
pytestmark = pytest.mark.filterwarnings("ignore:faiss .* faster than exact search")


def clustered(num, dim, num_ids, seed, centres=None, noise=0.8):
    """Unit vectors around identity centres (plus a shared offset, as CNN features have)."""
    rng = np.random.default_rng(seed)
    if centres is None:
        centres = np.random.default_rng(1000).standard_normal((num_ids, dim))
    ids = rng.integers(0, num_ids, num)
    x = 0.5 + centres[ids] + noise * rng.standard_normal((num, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), ids


def brute_force(queries, gallery, k):
    """Full float64 cosine ranking with a stable sort (ties to the lower index)."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True).astype(np.float64)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True).astype(np.float64)
    similarities = q.astype(np.float64) @ g.astype(np.float64).T
    order = np.argsort(-similarities, axis=1, kind="stable")[:, :k]
    return 1 - np.take_along_axis(similarities, order, axis=1), order


def tie_vectors(num, dim, seed):
    """Vectors of four entries +-1/2 (norm exactly 1): every dot product is an exact multiple of
    1/4 whatever the summation order, so rankings are full of genuine ties."""
    rng = np.random.default_rng(seed)
    x = np.zeros((num, dim), dtype=np.float32)
    for row in x:
        row[rng.choice(dim, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return x


def python_loop_top_k(queries, gallery, k):
    """Per-query loop on exact fractions: (distance, index) sorted by distance then index."""
    result = []
    for query in queries:
        scored = []
        for index, item in enumerate(gallery):
            dot = sum(Fraction(float(a)) * Fraction(float(b)) for a, b in zip(query, item))
            scored.append((1 - dot, index))
        result.append(sorted(scored)[:k])
    return result


# ------------------------------------------------------------------------- exact search
@pytest.mark.parametrize("chunk_bytes", [gallery_index_module.DEFAULT_CHUNK_BYTES, 16 * 7,
                                         16 * 40, 16 * 200])
def test_exact_search_breaks_ties_like_a_python_loop(chunk_bytes):
    # tiny budgets force one query per block and gallery blocks merged across (7, 40 columns)
    gallery, queries = tie_vectors(120, 8, 0), tie_vectors(9, 8, 1)
    similarities, indices = exact_search(queries, gallery, 12, chunk_bytes)
    reference = python_loop_top_k(queries, gallery, 12)
    assert indices.tolist() == [[index for _, index in row] for row in reference]
    assert (1 - similarities).tolist() == [[float(d) for d, _ in row] for row in reference]


def test_exact_search_equals_a_full_argsort_on_random_features():
    rng = np.random.default_rng(3)
    gallery = rng.standard_normal((700, 32)) * rng.uniform(0.1, 5, (700, 1))  # not normalised
    queries = rng.standard_normal((40, 32))
    expected_distances, expected_indices = brute_force(queries, gallery, 11)
    gaps = np.diff(expected_distances, axis=1)
    assert gaps.min() > 1e-5, "the reference must have no near-ties for an exact index match"
    index = GalleryIndex.build(gallery, backend="exact")
    for chunk_bytes in (gallery_index_module.DEFAULT_CHUNK_BYTES, 16 * 50):
        distances, indices = index.search(queries, 10, chunk_bytes=chunk_bytes)
        assert indices.tolist() == expected_indices[:, :10].tolist()
        np.testing.assert_allclose(distances, expected_distances[:, :10], atol=1e-5)
    assert distances.dtype == np.float32 and indices.dtype == np.int64


def test_k_is_capped_at_the_gallery_size_and_one_query_may_be_a_vector():
    gallery = tie_vectors(5, 8, 2)
    index = GalleryIndex.build(gallery)
    distances, indices = index.search(gallery[2], 10)
    assert indices.shape == (1, 5) and indices[0, 0] == 2 and distances[0, 0] == 0


# ------------------------------------------------------------------------- faiss
@needs_faiss
@pytest.mark.parametrize("index_type", ["ivf_flat", "hnsw_flat"])
def test_faiss_recall_against_brute_force(index_type):
    # 4000 identities of 5 images, noisy: the narrowest search (nprobe 1, efSearch 10) finds
    # only 0.2 / 0.5 of the exact top-10, so the calibration has work to do
    centres = np.random.default_rng(1000).standard_normal((4000, 256))
    gallery, _ = clustered(20000, 256, 4000, seed=0, centres=centres, noise=1.2)
    queries, _ = clustered(200, 256, 4000, seed=1, centres=centres, noise=1.2)
    index = GalleryIndex.build(gallery, backend="faiss", faiss_index_type=index_type)
    assert index.faiss_settings["recall"]["value"] >= 0.95  # the calibration's own measure
    distances, indices = index.search(queries, 10)
    reference_distances, reference = brute_force(queries, gallery, 10)
    hits = [len(set(found) & set(expected)) for found, expected in zip(indices, reference)]
    recall = np.sum(hits) / reference.size
    assert recall >= FAISS_RECALL_THRESHOLD
    assert recall == pytest.approx(index.measure_recall(queries, 10))
    # faiss' distances are the cosine distances of the images it returns
    returned = 1 - np.einsum("qd,qkd->qk", queries.astype(np.float64), gallery[indices])
    np.testing.assert_allclose(distances, returned, atol=1e-5)
    assert np.all(np.diff(distances, axis=1) >= -1e-6)
    assert "recall@10" in index.describe()
    index.set_search_breadth(1 if index_type == "ivf_flat" else 10)
    assert index.measure_recall(queries, 10) < 0.7


@needs_faiss
def test_faiss_search_breadth_is_settable_and_a_full_probe_is_exact():
    gallery, _ = clustered(4000, 32, 100, seed=0)
    index = GalleryIndex.build(gallery, backend="faiss", faiss_index_type="ivf_flat")
    index.set_search_breadth(10 ** 6)  # capped at nlist: every list scanned
    assert index.faiss_settings["search_breadth"] == index.faiss_settings["nlist"]
    queries, _ = clustered(30, 32, 100, seed=5)
    assert index.measure_recall(queries, 10) == 1.0


@needs_faiss
@pytest.mark.parametrize("index_type", ["ivf_flat", "hnsw_flat"])
def test_faiss_on_a_gallery_too_small_to_calibrate(index_type):
    gallery = tie_vectors(3, 8, 0)
    index = GalleryIndex.build(gallery, backend="faiss", faiss_index_type=index_type)
    assert index.faiss_settings["recall"] is None
    assert index.search(gallery, 5)[1][:, 0].tolist() == [0, 1, 2]


@needs_faiss
def test_auto_keeps_faiss_only_when_it_beats_exact_search(monkeypatch):
    gallery, _ = clustered(2000, 16, 40, seed=0)
    monkeypatch.setattr(gallery_index_module, "AUTO_EXACT_MAX_SIZE", 100)
    monkeypatch.setattr(gallery_index_module, "FAISS_MIN_SPEED_UP", 0)
    assert GalleryIndex.build(gallery).backend == "faiss"
    monkeypatch.setattr(gallery_index_module, "FAISS_MIN_SPEED_UP", 10 ** 9)
    index = GalleryIndex.build(gallery)
    assert index.backend == "exact" and index.faiss_index is None
    assert "was not 1000000000x faster than exact search" in index.note
    with pytest.warns(UserWarning, match="backend='exact'"):
        assert GalleryIndex.build(gallery, backend="faiss").backend == "faiss"


def test_missing_faiss_is_named_with_the_install_command(monkeypatch):
    def no_faiss():
        raise ImportError("the faiss backend needs faiss-cpu, which is not installed: run "
                          "`pip install faiss-cpu==1.15.1`, or use backend='exact'")
    monkeypatch.setattr(gallery_index_module, "import_faiss", no_faiss)
    gallery = tie_vectors(50, 8, 0)
    with pytest.raises(ImportError, match="pip install faiss-cpu"):
        GalleryIndex.build(gallery, backend="faiss")
    monkeypatch.setattr(gallery_index_module, "AUTO_EXACT_MAX_SIZE", 10)
    index = GalleryIndex.build(gallery, backend="auto")
    assert index.backend == "exact" and "faiss is not installed" in index.note


# ------------------------------------------------------------------------- storage
@pytest.mark.parametrize("backend", ["exact", pytest.param("faiss", marks=needs_faiss)])
@pytest.mark.parametrize("file_name", ["index.npz", "index_folder"])
def test_save_and_load_round_trip(tmp_path, backend, file_name):
    gallery, ids = clustered(3000, 16, 60, seed=0)
    queries, _ = clustered(20, 16, 60, seed=1)
    paths = ["images/{:05d}.jpg".format(i) for i in range(3000)]
    index = GalleryIndex.build(gallery, paths, ids, ids % 6, "abc123", backend=backend)
    path = str(tmp_path / file_name)
    index.save(path)
    index.save(path)  # overwriting an index replaces it
    loaded = GalleryIndex.load(path)
    assert loaded.backend == backend and loaded.fingerprint == "abc123"
    assert loaded.image_paths.tolist() == paths
    assert loaded.identity_ids.tolist() == ids.tolist()
    assert loaded.camera_ids.tolist() == (ids % 6).tolist()
    assert np.array_equal(loaded.features, index.features)
    assert loaded.faiss_settings == index.faiss_settings
    for expected, found in zip(index.search(queries, 7), loaded.search(queries, 7)):
        assert np.array_equal(expected, found)
    assert sorted(os.listdir(tmp_path)) == [file_name], "no temporary file left behind"


def test_optional_fields_round_trip_as_none(tmp_path):
    index = GalleryIndex.build(tie_vectors(10, 8, 0))
    index.save(str(tmp_path / "i.npz"))
    loaded = GalleryIndex.load(str(tmp_path / "i.npz"))
    assert loaded.identity_ids is None and loaded.camera_ids is None
    assert loaded.fingerprint is None and loaded.image_paths[3] == "gallery[3]"


def test_a_failed_save_leaves_the_previous_index_whole(tmp_path, monkeypatch):
    old = GalleryIndex.build(tie_vectors(10, 8, 0), fingerprint="old")
    new = GalleryIndex.build(tie_vectors(12, 8, 1), fingerprint="new")
    for name in ("index.npz", "index_folder"):
        path = str(tmp_path / name)
        old.save(path)
        with monkeypatch.context() as patch:
            def broken_savez(file, **arrays):
                file.write(b"half")
                raise OSError("disk full")
            patch.setattr(np, "savez", broken_savez)
            with pytest.raises(OSError, match="disk full"):
                new.save(path)
        assert GalleryIndex.load(path).fingerprint == "old"
    assert sorted(os.listdir(tmp_path)) == ["index.npz", "index_folder"]


def test_a_folder_that_is_not_an_index_is_not_overwritten(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not a gallery index folder"):
        GalleryIndex.build(tie_vectors(10, 8, 0)).save(str(tmp_path / "photos"))
    with pytest.raises(FileNotFoundError, match="no gallery index"):
        GalleryIndex.load(str(tmp_path / "photos"))


@needs_faiss
def test_a_faiss_index_loads_as_exact_without_faiss(tmp_path, monkeypatch):
    gallery, _ = clustered(2000, 16, 40, seed=0)
    GalleryIndex.build(gallery, backend="faiss").save(str(tmp_path / "i.npz"))

    def no_faiss():
        raise ImportError("no faiss")
    monkeypatch.setattr(gallery_index_module, "import_faiss", no_faiss)
    with pytest.warns(UserWarning, match="faiss, which is not installed"):
        loaded = GalleryIndex.load(str(tmp_path / "i.npz"))
    assert loaded.backend == "exact"
    assert loaded.search(gallery[:3], 1)[1][:, 0].tolist() == [0, 1, 2]


# ------------------------------------------------------------------------- checks
def test_fingerprint_mismatch_is_refused_naming_both_and_the_fix():
    index = GalleryIndex.build(tie_vectors(10, 8, 0), fingerprint="model-A")
    with pytest.raises(ValueError) as error:
        index.check_fingerprint("model-B")
    message = str(error.value)
    assert "model-A" in message and "model-B" in message and "Rebuild the index" in message
    assert index.check_fingerprint("model-A") is True
    assert index.check_fingerprint(None) is False


@pytest.mark.parametrize("features, problem", [
    (np.zeros((0, 8)), "empty"),
    (np.zeros((4, 0)), "empty"),
    (np.ones(8), "2-D"),
    (np.array([[1.0, 0.0], [0.0, 0.0]]), "zero or not finite"),
    (np.array([[1.0, np.nan]]), "zero or not finite"),
    (np.array([["a", "b"]]), "real numbers"),
])
def test_bad_gallery_features_are_refused(features, problem):
    with pytest.raises(ValueError, match=problem):
        GalleryIndex.build(features)


def test_bad_queries_and_arguments_are_refused():
    index = GalleryIndex.build(tie_vectors(10, 8, 0))
    with pytest.raises(ValueError, match="dimension 7 but the gallery index holds 8-d"):
        index.search(np.ones((2, 7)), 3)
    with pytest.raises(ValueError, match="k must be >= 1"):
        index.search(np.ones((2, 8)), 0)
    with pytest.raises(ValueError, match="query features are empty"):
        index.search(np.ones((0, 8)), 3)
    with pytest.raises(ValueError, match="identity_ids has shape"):
        GalleryIndex.build(tie_vectors(10, 8, 0), identity_ids=np.arange(9))
    with pytest.raises(ValueError, match="image paths have shape"):
        GalleryIndex.build(tie_vectors(10, 8, 0), image_paths=["a"])
    with pytest.raises(ValueError, match="unknown backend"):
        GalleryIndex.build(tie_vectors(10, 8, 0), backend="annoy")
    with pytest.raises(ValueError, match="only applies to the faiss backend"):
        index.set_search_breadth(8)


# ------------------------------------------------------------------------- the tool
def evaluator_npz(path, with_paths=True, seed=0):
    """An evaluator-style test.npz: clustered features, identities and cameras."""
    centres = np.random.default_rng(1000).standard_normal((30, 16))
    query, query_ids = clustered(12, 16, 30, seed=seed, centres=centres)
    gallery, gallery_ids = clustered(200, 16, 30, seed=seed + 1, centres=centres)
    arrays = dict(query_image_features_array=query * 3, gallery_image_features_array=gallery,
                  query_identity_ID_array=query_ids, gallery_identity_ID_array=gallery_ids,
                  query_camera_ID_array=np.ones(12, int), gallery_camera_ID_array=np.full(200, 2))
    if with_paths:
        arrays["query_image_file_path_array"] = np.array(["q/{}.jpg".format(i) for i in range(12)])
        arrays["gallery_image_file_path_array"] = np.array(
            ["g/{}.jpg".format(i) for i in range(200)])
    np.savez(path, **arrays)
    return arrays


def test_tool_csv_and_json_match_brute_force(tmp_path, capsys):
    arrays = evaluator_npz(str(tmp_path / "test.npz"))
    search_gallery.build_index(str(tmp_path / "test.npz"), str(tmp_path / "index"))
    rows = search_gallery.search_gallery(str(tmp_path / "index"), [str(tmp_path / "test.npz")],
                                         top_k=5, output_path=str(tmp_path / "results.csv"))
    printed = capsys.readouterr().out
    assert "same identity?" in printed and "q/0.jpg" in printed
    distances, indices = brute_force(arrays["query_image_features_array"],
                                     arrays["gallery_image_features_array"], 5)
    with open(str(tmp_path / "results.csv"), newline="") as file:
        written = list(csv.DictReader(file))
    assert len(written) == 12 * 5 == len(rows)
    for row in written:
        q, rank = int(row["query_index"]), int(row["rank"])
        g = indices[q, rank - 1]
        assert row["query"] == "q/{}.jpg".format(q)
        assert row["gallery_path"] == "g/{}.jpg".format(g) and int(row["gallery_index"]) == g
        assert float(row["distance"]) == pytest.approx(distances[q, rank - 1], abs=1e-5)
        same = arrays["query_identity_ID_array"][q] == arrays["gallery_identity_ID_array"][g]
        assert row["same_identity"] == str(bool(same))
        assert row["gallery_camera"] == "2" and row["query_camera"] == "1"

    search_gallery.search_gallery(str(tmp_path / "index"), str(tmp_path / "test.npz"), top_k=3,
                                  output_path=str(tmp_path / "results.json"))
    with open(str(tmp_path / "results.json")) as file:
        result = json.load(file)
    assert result["top_k"] == 3 and len(result["queries"]) == 12
    for q, query in enumerate(result["queries"]):
        assert query["query"] == "q/{}.jpg".format(q)
        assert query["query_identity"] == arrays["query_identity_ID_array"][q]
        assert [match["gallery_index"] for match in query["matches"]] == indices[q, :3].tolist()
        assert [match["rank"] for match in query["matches"]] == [1, 2, 3]


def test_tool_names_images_of_older_npz_files_by_position(tmp_path):
    evaluator_npz(str(tmp_path / "test.npz"), with_paths=False)
    index, _ = search_gallery.build_index(str(tmp_path / "test.npz"), str(tmp_path / "i.npz"))
    rows = search_gallery.search_gallery(index, str(tmp_path / "test.npz"), top_k=2)
    assert rows[0]["query"] == "query[0]" and rows[0]["gallery_path"].startswith("gallery[")


def test_tool_refuses_features_of_another_model(tmp_path):
    features, _ = clustered(50, 16, 5, seed=0)
    np.savez(str(tmp_path / "gallery.npz"), features=features, fingerprint=np.array("model-A"),
             image_file_paths=np.array(["{}.jpg".format(i) for i in range(50)]))
    np.savez(str(tmp_path / "query.npz"), features=features[:3], fingerprint=np.array("model-B"))
    search_gallery.build_index(str(tmp_path / "gallery.npz"), str(tmp_path / "index"))
    with pytest.raises(ValueError, match="'model-A'.*'model-B'"):
        search_gallery.search_gallery(str(tmp_path / "index"), str(tmp_path / "query.npz"),
                                      output_path=str(tmp_path / "out.csv"))
    assert not os.path.exists(str(tmp_path / "out.csv"))


def test_tool_reads_the_feature_extraction_tools_file(tmp_path):
    extract_features = pytest.importorskip("tools.extract_features")
    features, ids = clustered(30, 16, 5, seed=0)
    paths = ["{:04d}_c{}s1_000001_00.jpg".format(i, i % 6 + 1) for i in ids]
    extract_features.save_features(str(tmp_path / "f.npz"), features, paths, "fp-x",
                                   (ids, ids % 6 + 1))
    index, _ = search_gallery.build_index(str(tmp_path / "f.npz"), str(tmp_path / "i.npz"))
    assert index.fingerprint == "fp-x" and index.image_paths.tolist() == paths
    assert index.identity_ids.tolist() == ids.tolist()
    rows = search_gallery.search_gallery(index, str(tmp_path / "f.npz"), top_k=1)
    assert [row["gallery_index"] for row in rows] == list(range(30))


class FakeExtractor:
    """Stands in for inference.feature_extractor.FeatureExtractor: a vector per file name."""
    created, extracted = [], []

    def __init__(self, fingerprint):
        self.fingerprint = fingerprint

    @classmethod
    def from_run(cls, path):
        cls.created.append(path)
        return cls("fp-" + os.path.basename(path))

    def extract(self, images, progress=True):
        FakeExtractor.extracted.extend(images)
        seeds = [zlib.crc32(os.path.basename(str(image)).encode()) for image in images]
        rows = [np.random.default_rng(seed).standard_normal(8) for seed in seeds]
        features = np.array(rows, dtype=np.float32)
        return features / np.linalg.norm(features, axis=1, keepdims=True)


@pytest.fixture
def fake_inference(monkeypatch):
    from inference.feature_extractor import list_images  # the real folder listing
    package = types.ModuleType("inference")
    module = types.ModuleType("inference.feature_extractor")
    module.FeatureExtractor, module.list_images = FakeExtractor, list_images
    package.feature_extractor = module
    monkeypatch.setitem(sys.modules, "inference", package)
    monkeypatch.setitem(sys.modules, "inference.feature_extractor", module)
    FakeExtractor.created, FakeExtractor.extracted = [], []
    return FakeExtractor


def test_tool_builds_and_queries_from_image_folders(tmp_path, fake_inference):
    gallery = tmp_path / "gallery" / "sub"
    gallery.mkdir(parents=True)
    names = ["{:04d}_c{}s1_000001_00.jpg".format(i // 3, i % 3 + 1) for i in range(9)]
    for name in names:
        (gallery / name).write_bytes(b"")
    (gallery / "notes.txt").write_text("not an image")
    index, _ = search_gallery.build_index(str(tmp_path / "gallery"), str(tmp_path / "index"),
                                          model_path=str(tmp_path / "run1"))
    assert index.fingerprint == "fp-run1" and len(index) == 9
    assert index.identity_ids.tolist() == [i // 3 for i in range(9)]
    assert index.camera_ids.tolist() == [i % 3 + 1 for i in range(9)]
    query = str(gallery / names[4])
    rows = search_gallery.search_gallery(str(tmp_path / "index"), [query], top_k=3,
                                         model_path=str(tmp_path / "run1"))
    assert rows[0]["gallery_path"] == query and rows[0]["distance"] == pytest.approx(0, abs=1e-6)
    assert rows[0]["same_identity"] is True and rows[0]["query_identity"] == 1

    fake_inference.extracted = []
    with pytest.raises(ValueError, match="'fp-run1'.*'fp-run2'"):
        search_gallery.search_gallery(str(tmp_path / "index"), [query],
                                      model_path=str(tmp_path / "run2"))
    assert fake_inference.extracted == [], "the model is checked before any image is read"


def test_tool_errors_name_the_problem(tmp_path, fake_inference):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="folder .*empty holds no image"):
        search_gallery.build_index(str(tmp_path / "empty"), str(tmp_path / "index"),
                                   model_path="run")
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="pass --model_path"):
        search_gallery.build_index(str(tmp_path / "a.jpg"), str(tmp_path / "index"))
    with pytest.raises(FileNotFoundError, match="neither an image file nor a folder"):
        search_gallery.resolve_inputs([str(tmp_path / "missing.jpg")])
    np.savez(str(tmp_path / "other.npz"), something=np.ones(3))
    with pytest.raises(ValueError, match="holds neither"):
        search_gallery.build_index(str(tmp_path / "other.npz"), str(tmp_path / "index"))
    with pytest.raises(ValueError, match="must end in one of"):
        search_gallery.write_results([], str(tmp_path / "out.txt"))


def test_command_line_builds_queries_and_exits_with_an_error_message(tmp_path):
    evaluator_npz(str(tmp_path / "test.npz"))
    command = [sys.executable, "-m", "tools.search_gallery", "--index_path",
               str(tmp_path / "index.npz")]
    done = subprocess.run(command + ["--build_index_from", str(tmp_path / "test.npz"), "--query",
                                     str(tmp_path / "test.npz"), "--top_k", "4", "--output_path",
                                     str(tmp_path / "r.json")],
                          cwd=REPOSITORY, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Gallery index written" in done.stdout and "Results written" in done.stdout
    assert len(json.load(open(str(tmp_path / "r.json")))["queries"]) == 12
    failed = subprocess.run(command + ["--query", str(tmp_path / "missing")], cwd=REPOSITORY,
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "error:" in failed.stderr and "missing" in failed.stderr
