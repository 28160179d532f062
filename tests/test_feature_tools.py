"""The saved-features tools: ``tools.evaluate_features`` against brute-force per-query loops,
``tools.search_re_ranking`` against an independent loop over the grid, the test split refused,
and neither command importing TensorFlow."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from metrics import evaluate_features
from metrics.re_ranking import exact_distance_matrix, re_ranking
from metrics.saved_features import REQUIRED_KEYS, load_saved_features
from tools import evaluate_features as evaluate_tool
from tools import search_re_ranking as search_tool

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def synthetic_split(seed=0, identities=25, per_identity=8, dim=16, noise=0.9):
    """Noisy identity clusters: the first image of each identity is its query, the rest gallery;
    4 cameras, a few distractors (pid 0) and one identity whose gallery shares its camera."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(identities, dim))
    pids = np.repeat(np.arange(1, identities + 1), per_identity)
    cams = np.tile(np.arange(per_identity) % 4, identities)
    cams[pids == 1] = 0  # identity 1: no true match in another camera, so no valid query
    features = centers[pids - 1] + noise * rng.normal(size=(len(pids), dim))
    query = np.zeros(len(pids), bool)
    query[::per_identity] = True
    distractors = rng.normal(size=(6, dim)) * 1.5
    return dict(
        query_image_features_array=features[query].astype(np.float32),
        gallery_image_features_array=np.concatenate([features[~query],
                                                     distractors]).astype(np.float32),
        query_identity_ID_array=pids[query], gallery_identity_ID_array=np.r_[pids[~query],
                                                                              [0] * 6],
        query_camera_ID_array=cams[query], gallery_camera_ID_array=np.r_[cams[~query], [1] * 6],
        query_image_file_path_array=np.asarray([f"q{i}.jpg" for i in range(query.sum())]),
        gallery_image_file_path_array=np.asarray([f"g{i}.jpg" for i in range((~query).sum() + 6)]))


def save(path, arrays):
    np.savez(path, **arrays)
    return str(path)


def brute_force_metrics(distances, q_pids, g_pids, q_cams, g_cams):
    """Per-query loops: same identity and camera removed, stable order, queries without a
    true match skipped; CMC, AP and INP (matches / position of the last match)."""
    cmc_hits, aps, inps = np.zeros(len(g_pids)), [], []
    for i in range(len(q_pids)):
        keep = [j for j in range(len(g_pids))
                if not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])]
        order = sorted(keep, key=lambda j: (distances[i][j], j))
        matches = [g_pids[j] == q_pids[i] for j in order]
        if not any(matches):
            continue
        first = matches.index(True)
        cmc_hits[first:] += 1
        hits, precisions = 0, []
        for position, match in enumerate(matches, 1):
            if match:
                hits += 1
                precisions.append(hits / position)
        aps.append(sum(precisions) / hits)
        last = max(p for p, match in enumerate(matches, 1) if match)
        inps.append(hits / last)
    return dict(cmc=cmc_hits / len(aps), mAP=np.mean(aps), mINP=np.mean(inps))


def float64_distances(query, gallery, metric):
    query, gallery = query.astype(np.float64), gallery.astype(np.float64)
    if metric == "cosine":
        query = query / np.linalg.norm(query, axis=1, keepdims=True)
        gallery = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
        return 1.0 - query @ gallery.T
    return np.sqrt(((query[:, None, :] - gallery[None, :, :]) ** 2).sum(axis=2))


def labels(data):
    return (data["query_identity_ID_array"], data["gallery_identity_ID_array"],
            data["query_camera_ID_array"], data["gallery_camera_ID_array"])


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_evaluate_tool_equals_brute_force_loops(tmp_path, metric):
    data = synthetic_split()
    summary = evaluate_tool.evaluate_saved_features(save(tmp_path / "test.npz", data),
                                                    metric=metric)
    reference = brute_force_metrics(float64_distances(data["query_image_features_array"],
                                                      data["gallery_image_features_array"],
                                                      metric), *labels(data))
    for k in (1, 5, 10, 20):
        assert summary[f"rank-{k}"] == pytest.approx(reference["cmc"][k - 1], abs=1e-6)
    assert summary["mAP"] == pytest.approx(reference["mAP"], abs=1e-9)
    assert summary["mINP"] == pytest.approx(reference["mINP"], abs=1e-9)
    assert (summary["num_queries"], summary["num_valid_queries"]) == (25, 24)
    report = evaluate_tool.format_report(summary)
    assert "test: mAP {:.4f} rank-1 {:.4f}".format(summary["mAP"], summary["rank-1"]) in report


def test_evaluate_tool_re_ranking_equals_reference_loops(tmp_path):
    data = synthetic_split(seed=1)
    summary = evaluate_tool.evaluate_saved_features(
        save(tmp_path / "test.npz", data), use_re_ranking=True, k1=8, k2=3, lambda_value=0.2)
    query, gallery = data["query_image_features_array"], data["gallery_image_features_array"]
    distances = re_ranking(exact_distance_matrix(query, gallery),
                           exact_distance_matrix(query, query),
                           exact_distance_matrix(gallery, gallery), k1=8, k2=3, lambda_value=0.2)
    reference = brute_force_metrics(distances, *labels(data))
    assert summary["mAP"] == pytest.approx(reference["mAP"], abs=1e-9)
    assert summary["rank-1"] == pytest.approx(reference["cmc"][0], abs=1e-6)


def test_evaluate_tool_options_equal_evaluate_features_and_json(tmp_path):
    data = synthetic_split(seed=2)
    options = dict(use_centroids=True, query_expansion_k=2, query_expansion_alpha=2.0, k1=6,
                   k2=2, lambda_value=0.4)
    summary = evaluate_tool.evaluate_saved_features(
        save(tmp_path / "valid.npz", data), metric="euclidean", use_re_ranking=True, **options)
    expected = evaluate_features(data["query_image_features_array"],
                                 data["gallery_image_features_array"], *labels(data),
                                 metric="euclidean", use_re_ranking=True, **options)
    assert summary["mAP"] == expected["mAP"] and summary["mINP"] == expected["mINP"]
    assert summary["rank-1"] == float(expected["cmc"][0])
    assert summary["evaluation_options"] == options and summary["split"] == "valid"
    output = tmp_path / "out" / "metrics.json"
    evaluate_tool.write_summary(summary, str(output))
    assert json.loads(output.read_text()) == summary


def test_bad_files_are_named_with_the_keys_expected(tmp_path):
    missing = str(tmp_path / "nothing.npz")
    with pytest.raises(FileNotFoundError, match="nothing.npz.*--save_data_to_disk"):
        load_saved_features(missing)
    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    with pytest.raises(ValueError, match="notes.npz is not a NumPy .npz"):
        load_saved_features(str(text))
    data = synthetic_split()
    del data["gallery_camera_ID_array"]
    path = save(tmp_path / "partial.npz", data)
    with pytest.raises(ValueError) as error:
        evaluate_tool.evaluate_saved_features(path)
    message = str(error.value)
    assert "partial.npz" in message and "['gallery_camera_ID_array']" in message
    assert all(key in message for key in REQUIRED_KEYS)
    data = synthetic_split()
    data["query_camera_ID_array"] = data["query_camera_ID_array"][:-1]
    with pytest.raises(ValueError, match="short.npz: query_camera_ID_array .* one entry per query"):
        load_saved_features(save(tmp_path / "short.npz", data))
    data = synthetic_split()
    data["query_image_features_array"][0, 0] = np.nan
    with pytest.raises(ValueError, match="nan.npz: query_image_features_array contains NaN"):
        load_saved_features(save(tmp_path / "nan.npz", data))


def independent_best(data, grid):
    """Every grid point through metrics.evaluate_features; the highest mAP, then rank-1, first
    in grid order."""
    results, best = {}, None
    for k1 in grid[0]:
        for k2 in grid[1]:
            for lambda_value in grid[2]:
                if k1 < 1:
                    continue
                result = evaluate_features(data["query_image_features_array"],
                                           data["gallery_image_features_array"], *labels(data),
                                           use_re_ranking=True, k1=k1, k2=k2,
                                           lambda_value=lambda_value)
                key = (result["mAP"], float(result["cmc"][0]))
                results[(k1, k2, lambda_value)] = key
                if best is None or key > results[best]:
                    best = (k1, k2, lambda_value)
    return best, results


def test_search_best_setting_equals_an_independent_loop(tmp_path):
    data = synthetic_split()
    grid = ([0, 3, 5, 8, 12], [1, 2, 3], [0.0, 0.3, 0.6, 1.0])  # k1 = 0 is invalid
    lines = []
    result = search_tool.run_search(save(tmp_path / "valid.npz", data), *grid,
                                    log=lines.append)
    best, results = independent_best(data, grid)
    top = result["rows"][0]
    assert (top["k1"], top["k2"], top["lambda"]) == best
    # the lambda blend reproduces every re-ranked evaluation exactly
    assert {(r["k1"], r["k2"], r["lambda"]): (r["mAP"], r["rank-1"])
            for r in result["rows"]} == results
    assert [(k1, reason.startswith("k1 must be")) for k1, *_, reason in result["skipped"]] == \
        [(0, True)] * 12
    # the data are built so that re-ranking matters
    assert top["mAP"] > result["baseline"]["mAP"] + 0.05
    output = "\n".join(lines)
    assert "Note: 12 grid point(s) skipped: k1 must be an integer >= 1" in output
    assert ("Evaluation flags: --use_re_ranking --re_ranking_k1 {} --re_ranking_k2 {} "
            "--re_ranking_lambda {:g} --distance_metric cosine".format(*best)) in output
    plain = search_tool.search_re_ranking(data, *grid, reuse_across_lambdas=False,
                                          log=lambda line: None)
    assert plain["rows"] == result["rows"]


def test_search_refuses_the_test_split(tmp_path):
    for name in ("test.npz", "Test_epoch10.npz"):
        path = save(tmp_path / name, synthetic_split())
        with pytest.raises(ValueError, match="refusing .* test split.*leaks.*valid.npz"):
            search_tool.run_search(path)


def test_search_writes_csv_and_json(tmp_path):
    data = synthetic_split(per_identity=4, identities=12)
    path = save(tmp_path / "valid.npz", data)
    grid = ([4, 6], [1, 2], [0.2, 0.5])
    with pytest.raises(ValueError, match="end the name with .csv or .json"):
        search_tool.run_search(path, *grid, output_path=str(tmp_path / "table.txt"))
    result = search_tool.run_search(path, *grid, output_path=str(tmp_path / "table.csv"),
                                    log=lambda line: None)
    with open(tmp_path / "table.csv") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == list(search_tool.COLUMNS) and len(rows) == 8
    assert [float(row["mAP"]) for row in rows] == [row["mAP"] for row in result["rows"]]
    search_tool.write_results(result, str(tmp_path / "table.json"), path)
    saved = json.loads((tmp_path / "table.json").read_text())
    assert saved["best"] == result["rows"][0]
    assert saved["flags"] == search_tool.evaluation_flags(result["rows"][0])


def test_parse_values():
    assert search_tool.parse_values("15, 20,20,25", int, "k1_values") == [15, 20, 25]
    assert search_tool.parse_values("0,0.3", float, "lambda_values") == [0.0, 0.3]
    with pytest.raises(ValueError, match="--k1_values: '1.5' is not an integer"):
        search_tool.parse_values("1.5", int, "k1_values")
    with pytest.raises(ValueError, match="--k2_values is empty"):
        search_tool.parse_values(" , ", int, "k2_values")


def test_importing_the_tools_defines_no_flag():
    from absl import flags
    assert "features_path" not in flags.FLAGS and "k1_values" not in flags.FLAGS


RUN_WITHOUT_TENSORFLOW = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_module(sys.argv[0], run_name="__main__")
except SystemExit as exit:
    assert not exit.code, exit.code
assert "tensorflow" not in sys.modules, "TensorFlow was imported"
print("TensorFlow-free")
"""


def run_python(*arguments):
    return subprocess.run([sys.executable, *arguments], cwd=REPOSITORY, capture_output=True,
                          text=True, timeout=120)


def test_commands_run_without_tensorflow(tmp_path):
    test_path = save(tmp_path / "test.npz", synthetic_split())
    valid_path = save(tmp_path / "valid.npz", synthetic_split(seed=3))
    evaluation = run_python("-c", RUN_WITHOUT_TENSORFLOW, "tools.evaluate_features",
                            "--features_path", test_path, "--use_re_ranking",
                            "--re_ranking_k1", "8", "--re_ranking_k2", "3",
                            "--output_path", str(tmp_path / "metrics.json"))
    assert evaluation.returncode == 0, evaluation.stderr
    assert "TensorFlow-free" in evaluation.stdout and "test: mAP" in evaluation.stdout
    assert json.loads((tmp_path / "metrics.json").read_text())["evaluation_options"]["k1"] == 8
    search = run_python("-c", RUN_WITHOUT_TENSORFLOW, "tools.search_re_ranking",
                        "--features_path", valid_path, "--k1_values", "5,8",
                        "--k2_values", "2", "--lambda_values", "0.3,0.6",
                        "--noreuse_across_lambdas")
    assert search.returncode == 0, search.stderr
    assert "TensorFlow-free" in search.stdout and "Evaluation flags: --use_re_ranking" in \
        search.stdout
    refused = run_python("-m", "tools.search_re_ranking", "--features_path", test_path)
    assert refused.returncode == 1 and "refusing to tune re-ranking" in refused.stderr
