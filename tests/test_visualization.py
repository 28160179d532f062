"""Ranked-list and training-batch pictures: read back from the PNG pixels."""
import copy
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from visualization.ranked_lists import rank_queries, select_queries, write_ranked_lists
from visualization.training_batch import training_batch, write_training_batch

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A hand-made case on a line (euclidean distance = |x_query - x_gallery|):
#   gallery  g0    g1    g2    g3    g4    g5    g6    g7
#   x        1     2     0.5   3     1.5   2.5   10    20
#   identity 1     2     1     1     0     -1    3     2
#   camera   2     1     1     3     2     2     1     2
GALLERY_X = [1, 2, 0.5, 3, 1.5, 2.5, 10, 20]
G_PIDS = [1, 2, 1, 1, 0, -1, 3, 2]
G_CAMIDS = [2, 1, 1, 3, 2, 2, 1, 2]
# queries: A (identity 1, camera 1; g2 excluded), B (2, 1; g1 excluded), C (3, 2), D (4: no match)
QUERY_X = [0, 20.5, 2.2, 5]
Q_PIDS = [1, 2, 3, 4]
Q_CAMIDS = [1, 1, 2, 1]
# rankings by hand (top 7, excluded entries dropped) and their APs
EXPECTED_TOP = {0: [0, 4, 1, 5, 3, 6, 7],  # right at ranks 1 and 5: AP (1/1 + 2/5) / 2
                1: [7, 6, 3, 5, 4, 0, 2],  # right at rank 1: AP 1
                2: [1, 5, 4, 3, 0, 2, 6]}  # right at rank 7: AP 1/7
EXPECTED_AP = {0: 0.7, 1: 1.0, 2: 1 / 7}
GALLERY_GREY = [40 + 15 * i for i in range(8)]  # each image's grey level identifies it
QUERY_GREY = [180 + 15 * i for i in range(4)]


def _features(xs):
    return np.array([[x, 0.0] for x in xs], np.float32)


def _write_images(folder, greys, prefix, size=(64, 32)):
    paths = []
    for index, grey in enumerate(greys):
        path = os.path.join(str(folder), f"{prefix}{index}.png")
        cv2.imwrite(path, np.full(size + (3,), grey, np.uint8))
        paths.append(path)
    return paths


def _hand_case(tmp_path):
    return dict(query_paths=_write_images(tmp_path, QUERY_GREY, "query"),
                gallery_paths=_write_images(tmp_path, GALLERY_GREY, "gallery"),
                q_pids=Q_PIDS, g_pids=G_PIDS, q_camids=Q_CAMIDS, g_camids=G_CAMIDS,
                query_features=_features(QUERY_X), gallery_features=_features(GALLERY_X))


def _framed_tiles(png_path):
    """Rows (top to bottom) of (frame colour, grey level inside) per tile (left to right)."""
    image = cv2.cvtColor(cv2.imread(png_path), cv2.COLOR_BGR2RGB).astype(int)
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    masks = {"right": (g > 120) & (r < 60) & (b < 60), "wrong": (r > 150) & (g < 60) & (b < 60),
             "query": (b > 150) & (r < 60)}
    tiles = []
    for name, mask in masks.items():
        _, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
        for x, y, w, h, area in stats[1:]:
            if area > 100:  # frames; anti-aliased text never forms such a component
                tiles.append((y, x, name, int(image[y + h // 2, x + w // 2, 0])))
    rows = {}
    for y, x, name, grey in sorted(tiles):
        rows.setdefault(y, []).append((name, grey))
    return [rows[y] for y in sorted(rows)]


def _expected_row(query):
    row = [("query", QUERY_GREY[query])]
    for gallery in EXPECTED_TOP[query]:
        right = G_PIDS[gallery] == Q_PIDS[query]
        row.append(("right" if right else "wrong", GALLERY_GREY[gallery]))
    return row


def test_ranked_lists_match_the_hand_computed_ranking(tmp_path):
    paths = write_ranked_lists(**_hand_case(tmp_path), output_folder=str(tmp_path / "out"),
                               num=2, top_k=7, metric="euclidean", image_height=64)
    assert [os.path.basename(p) for p in paths] == ["ranked_lists_best.png",
                                                    "ranked_lists_worst.png"]
    # best by AP: B (1.0) then A (0.7); worst: C (1/7) then A; D has no true match
    assert _framed_tiles(paths[0]) == [_expected_row(1), _expected_row(0)]
    assert _framed_tiles(paths[1]) == [_expected_row(2), _expected_row(0)]


def test_rank_queries_on_the_hand_case():
    rankings = rank_queries(Q_PIDS, G_PIDS, Q_CAMIDS, G_CAMIDS, _features(QUERY_X),
                            _features(GALLERY_X), metric="euclidean", top_k=7)
    assert rankings.valid.tolist() == [True, True, True, False]
    for query, top in EXPECTED_TOP.items():
        assert rankings.top_indices[query].tolist() == top
        assert rankings.average_precision[query] == pytest.approx(EXPECTED_AP[query])
    assert rankings.first_match_rank.tolist() == [0, 0, 6, -1]
    np.testing.assert_allclose(rankings.top_distances[0], [1, 1.5, 2, 2.5, 3, 10, 20])
    assert select_queries(rankings, 5, "best").tolist() == [1, 0, 2]
    assert select_queries(rankings, 5, "worst").tolist() == [2, 0, 1]


def _brute_force(distances, q_pids, g_pids, q_camids, g_camids, top_k):
    """APs (None when skipped) and top-k lists with plain loops."""
    aps, tops = [], []
    for q in range(len(q_pids)):
        kept = [(float(distances[q][g]), g) for g in range(len(g_pids))
                if not (g_pids[g] == q_pids[q] and g_camids[g] == q_camids[q])]
        kept.sort()  # by distance, then gallery index
        hits, precisions = 0, []
        for position, (_, g) in enumerate(kept, 1):
            if g_pids[g] == q_pids[q]:
                hits += 1
                precisions.append(hits / position)
        aps.append(sum(precisions) / len(precisions) if precisions else None)
        tops.append([g for _, g in kept[:top_k]])
    return aps, tops


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_rank_queries_equals_brute_force_over_several_chunks(metric):
    from metrics import compute_distance_matrix, evaluate_features

    rng = np.random.default_rng(0)
    num_q, num_g, top_k = 300, 60, 10  # 300 queries: three chunks of 128 rows
    # few distinct values, so that many distances tie
    qf = rng.integers(0, 3, (num_q, 3)).astype(np.float32)
    gf = rng.integers(0, 3, (num_g, 3)).astype(np.float32)
    q_pids, g_pids = rng.integers(0, 6, num_q), rng.integers(-1, 6, num_g)
    q_camids, g_camids = rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)
    rankings = rank_queries(q_pids, g_pids, q_camids, g_camids, qf, gf, metric=metric,
                            top_k=top_k, memory_budget=1)
    distances = compute_distance_matrix(qf, gf, metric)
    aps, tops = _brute_force(distances, q_pids, g_pids, q_camids, g_camids, top_k)
    for q in range(num_q):
        assert rankings.top_indices[q].tolist()[:len(tops[q])] == (tops[q] if aps[q] else [])
        if aps[q] is None:
            assert not rankings.valid[q]
        else:
            assert rankings.average_precision[q] == pytest.approx(aps[q], abs=1e-12)
    valid = [q for q in range(num_q) if aps[q] is not None]
    best = sorted(valid, key=lambda q: (-aps[q], q))[:7]
    worst = sorted(valid, key=lambda q: (aps[q], q))[:7]
    assert select_queries(rankings, 7, "best").tolist() == best
    assert select_queries(rankings, 7, "worst").tolist() == worst
    result = evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, metric=metric)
    assert rankings.mean_average_precision == pytest.approx(result["mAP"], abs=1e-12)
    given = rank_queries(q_pids, g_pids, q_camids, g_camids, distances=distances, top_k=top_k)
    np.testing.assert_array_equal(given.top_indices, rankings.top_indices)
    np.testing.assert_array_equal(given.average_precision, rankings.average_precision)


def test_a_missing_image_is_named(tmp_path):
    case = _hand_case(tmp_path)
    os.remove(case["gallery_paths"][4])  # in query A's top 7
    with pytest.raises(FileNotFoundError, match="gallery4.png"):
        write_ranked_lists(**case, output_folder=str(tmp_path), num=1, top_k=7,
                           metric="euclidean")


def test_no_valid_query_is_an_error(tmp_path):
    case = _hand_case(tmp_path)
    case["q_pids"] = [7, 8, 9, 4]
    with pytest.raises(ValueError, match="no valid query"):
        write_ranked_lists(**case, output_folder=str(tmp_path), num=1)


def _training_set(folder, identities=5, images=3):
    """Images of one saturated colour per identity (never white, as the background)."""
    colours = [(200, 40, 40), (40, 160, 40), (40, 40, 200), (160, 160, 0), (120, 0, 160)]
    paths, labels = [], []
    for identity in range(identities):
        for index in range(images):
            path = os.path.join(str(folder), f"{identity:04d}_c1s1_{index:06d}_00.png")
            image = np.full((48, 24, 3), colours[identity], np.uint8)
            image[:, :12] //= 2  # a left half, to see flips
            cv2.imwrite(path, image)
            paths.append(path)
            labels.append(identity)
    return paths, np.array(labels)


def test_training_batch_grid_has_p_times_k_tiles(tmp_path):
    from pipeline.augmentation import FlipReIDAugmentor
    from pipeline.images import read_image
    from pipeline.sampler import PKSampler

    paths, labels = _training_set(tmp_path)
    sampler = PKSampler(labels, identity_num_per_batch=3, image_num_per_identity=2,
                        steps_per_epoch=2, seed=1)
    expected_indices = next(iter(copy.deepcopy(sampler)))
    indices, images = training_batch(paths, sampler, None, 48, 24)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(images, [read_image(paths[i], 48, 24) for i in indices])
    # drawing did not advance the caller's sampler
    np.testing.assert_array_equal(next(iter(sampler)), expected_indices)

    output = write_training_batch(paths, labels, sampler,
                                  FlipReIDAugmentor(48, 24, seed=0), str(tmp_path / "b.png"),
                                  48, 24, seed=3, identities=labels + 100)
    image = cv2.imread(output)
    _, _, stats, _ = cv2.connectedComponentsWithStats(
        (image.min(axis=2) < 250).astype(np.uint8), 8)
    scale = 4  # 48-pixel-high images are shown x4 (at least 192 pixels)
    tiles = [(y, x) for x, y, w, h, area in stats[1:]
             if (w, h) == (24 * scale, 48 * scale)]
    assert len(tiles) == 3 * 2
    assert len({y for y, _ in tiles}) == 3  # P rows of K tiles


def test_training_batch_reseeds_a_copy_of_the_augmentor(tmp_path):
    from pipeline.augmentation import FlipReIDAugmentor
    from pipeline.sampler import PKSampler

    paths, labels = _training_set(tmp_path)
    sampler = PKSampler(labels, 3, 2, steps_per_epoch=2, seed=1)
    augmentor = FlipReIDAugmentor(48, 24, seed=0)
    state = copy.deepcopy(augmentor)
    _, first = training_batch(paths, sampler, augmentor, 48, 24, seed=5)
    _, again = training_batch(paths, sampler, augmentor, 48, 24, seed=5)
    np.testing.assert_array_equal(first, again)
    probe = np.full((48, 24, 3), 90, np.uint8)
    np.testing.assert_array_equal(augmentor(probe), state(probe))  # caller's stream untouched


def test_training_batch_equals_the_training_input(tmp_path):
    from pipeline.augmentation import FlipReIDAugmentor
    from pipeline.sampler import PKSampler
    from pipeline.training_input import make_training_dataset

    paths, labels = _training_set(tmp_path)
    augmentor = FlipReIDAugmentor(48, 24, seed=0)
    for batch_index in (0, 1):
        sampler = PKSampler(labels, 3, 2, steps_per_epoch=2, seed=1)
        _, images = training_batch(paths, sampler, augmentor, 48, 24, seed=7,
                                   batch_index=batch_index)
        dataset = make_training_dataset(paths, labels, sampler, 48, 24, augmentor=augmentor,
                                        workers=2, seed=7, num_batches=2)
        batches = [batch.numpy().astype(np.uint8) for batch, _ in dataset]
        np.testing.assert_array_equal(images, batches[batch_index])


def _run_tool(*arguments):
    environment = dict(os.environ, PYTHONPATH=REPOSITORY)
    return subprocess.run([sys.executable, "-m", "tools.visualize_ranks", *arguments],
                          cwd=REPOSITORY, env=environment, capture_output=True, text=True)


def test_the_command_draws_saved_features_and_refuses_files_without_paths(tmp_path):
    case = _hand_case(tmp_path)
    arrays = dict(query_image_features_array=case["query_features"],
                  gallery_image_features_array=case["gallery_features"],
                  query_identity_ID_array=np.array(Q_PIDS),
                  gallery_identity_ID_array=np.array(G_PIDS),
                  query_camera_ID_array=np.array(Q_CAMIDS),
                  gallery_camera_ID_array=np.array(G_CAMIDS))
    old = str(tmp_path / "old.npz")
    np.savez(old, **arrays)
    result = _run_tool("--features_path", old, "--output_folder", str(tmp_path / "o"))
    assert result.returncode != 0
    assert "no image paths" in result.stderr and "--save_data_to_disk" in result.stderr

    new = str(tmp_path / "test.npz")
    np.savez(new, query_image_file_path_array=np.array(case["query_paths"]),
             gallery_image_file_path_array=np.array(case["gallery_paths"]), **arrays)
    result = _run_tool("--features_path", new, "--output_folder", str(tmp_path / "o"),
                       "--visualize_num", "2", "--top_k", "7", "--distance_metric", "euclidean",
                       "--image_height", "64")
    assert result.returncode == 0, result.stderr
    assert _framed_tiles(str(tmp_path / "o" / "ranked_lists_best.png")) == [
        _expected_row(1), _expected_row(0)]
