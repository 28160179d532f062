"""Up-front image check: every bad training image is reported at once, before any batch."""
import contextlib

import cv2
import numpy as np
import pytest

from datasets.image_check import (BadImagesError, check_image_files, find_bad_images,
                                  format_bad_images, image_file_problem)
from pipeline.images import ImageStore, read_image
from pipeline.sampler import PKSampler
from pipeline.training_input import make_training_dataset

H, W = 64, 32
GOOD = 9


def write_good_images(folder, count):
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = str(folder / f"good_{index}.{'png' if index % 2 else 'jpg'}")
        assert cv2.imwrite(path, rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
        paths.append(path)
    return paths


@pytest.fixture
def image_set(tmp_path):
    """(paths, bad paths, labels): GOOD valid images, then 3 bad files mixed in."""
    good = write_good_images(tmp_path, GOOD)
    random_bytes = tmp_path / "random.jpg"
    # Seeded bytes that happen to start like no image format.
    random_bytes.write_bytes(b"\x00" + np.random.default_rng(1).bytes(299))
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.png"
    bad = [str(random_bytes), str(empty), str(missing)]
    paths = good[:3] + [bad[0]] + good[3:6] + [bad[1]] + good[6:] + [bad[2]]
    labels = np.repeat(np.arange(len(paths) // 2 + 1), 2)[:len(paths)]
    return paths, bad, labels


def assert_names_every_bad_file(error, bad, total):
    message = str(error)
    assert message.startswith(f"3 of {total} training images cannot be read:")
    for path in bad:
        assert path in message
    assert "empty file" in message and "file not found" in message
    assert "Remove or replace them" in message
    assert sorted(path for path, _ in error.bad) == sorted(bad)


def test_check_image_files_reports_every_bad_file(image_set):
    paths, bad, _ = image_set
    with pytest.raises(BadImagesError) as raised:
        check_image_files(paths, workers=3)
    assert_names_every_bad_file(raised.value, bad, len(paths))
    assert isinstance(raised.value, ValueError)
    check_image_files([path for path in paths if path not in bad])  # passes


def test_cheap_check_reasons(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("these are notes, not a PNG\n")
    assert "no known image signature" in image_file_problem(text)
    assert image_file_problem(tmp_path) == "not a regular file"
    good = write_good_images(tmp_path, 2)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(open(good[1], "rb").read()[:20])  # signature, half a header
    assert "corrupt image header" in image_file_problem(truncated)
    assert [image_file_problem(path) for path in good] == [None, None]
    assert find_bad_images(good + [text], workers=1) == [(str(text), image_file_problem(text))]


def test_message_lists_at_most_50_files():
    bad = [(f"/data/{index}.jpg", "empty file (0 bytes)") for index in range(57)]
    message = format_bad_images(bad, "gallery", 1000)
    assert message.startswith("57 of 1000 gallery images cannot be read:")
    assert "/data/49.jpg: empty file" in message and "/data/50.jpg" not in message
    assert "... and 7 more" in message


@pytest.mark.parametrize("cache_max_images", [None, 5])
def test_fill_caches_good_images_and_reports_all_bad(image_set, cache_max_images, capsys):
    paths, bad, _ = image_set
    cache_max_bytes = None if cache_max_images is None else cache_max_images * H * W * 3
    with pytest.warns(UserWarning) if cache_max_images else contextlib.nullcontext():
        store = ImageStore(paths, H, W, cache_images=True, cache_max_bytes=cache_max_bytes)
    with pytest.raises(BadImagesError) as raised:
        store.fill(workers=2, progress=True)
    assert_names_every_bad_file(raised.value, bad, len(paths))
    assert f"Decoded {store.capacity}/{store.capacity} training images" in capsys.readouterr().err
    for index, path in enumerate(paths[:store.capacity]):
        assert store._cached[index] == (path not in bad)
        if path not in bad:
            np.testing.assert_array_equal(store._cache[index], read_image(path, H, W))


def test_fill_names_undecodable_image_data(tmp_path):
    good = write_good_images(tmp_path, 2)
    broken = tmp_path / "broken.png"
    data = open(good[1], "rb").read()
    pixels = data.index(b"IDAT") + 4  # keep the headers, zero the compressed pixel data
    broken.write_bytes(data[:pixels] + b"\x00" * (len(data) - pixels))
    assert image_file_problem(broken) is None  # the cheap check cannot see it ...
    with pytest.raises(BadImagesError, match="(?s)1 of 3 .*broken.png: .*cannot be decoded"):
        ImageStore(good + [str(broken)], H, W).fill()  # ... decoding does


@pytest.mark.parametrize("cache_images", [True, False])
def test_training_dataset_refuses_bad_images_before_any_batch(image_set, cache_images):
    paths, bad, labels = image_set

    class CountingSampler:
        drawn = 0

        def __iter__(self):
            for _ in range(3):
                CountingSampler.drawn += 1
                yield np.array([0, 1, 2, 4])  # good images only

    with pytest.raises(BadImagesError) as raised:
        make_training_dataset(paths, labels, CountingSampler(), H, W, workers=2,
                              cache_images=cache_images, num_batches=3)
    assert_names_every_bad_file(raised.value, bad, len(paths))
    assert CountingSampler.drawn == 0
    # Opting out builds the dataset as before (the bad files are not drawn by this sampler).
    dataset = make_training_dataset(paths, labels, CountingSampler(), H, W, workers=2,
                                    cache_images=cache_images, num_batches=3, check_images=False)
    assert len(list(dataset.as_numpy_iterator())) == 3


@pytest.mark.parametrize("cache_images", [True, False])
def test_training_dataset_with_good_images_yields_batches(tmp_path, cache_images):
    paths = write_good_images(tmp_path, 12)
    labels = np.repeat(np.arange(6), 2)
    sampler = PKSampler(labels, 3, 2, steps_per_epoch=2, seed=0)
    dataset = make_training_dataset(paths, labels, sampler, H, W, workers=2,
                                    cache_images=cache_images, num_batches=2)
    batches = list(dataset.as_numpy_iterator())
    assert len(batches) == 2
    for images, batch_labels in batches:
        assert images.shape == (6, H, W, 3) and batch_labels.shape == (6,)
        for image, label in zip(images, batch_labels):
            assert any(np.array_equal(image, read_image(paths[index], H, W))
                       for index in np.flatnonzero(labels == label))
