"""Input pipeline: image reading, training/inference datasets and flip-averaged feature extraction."""
import gc
import itertools
import weakref

import cv2
import numpy as np
import pytest

from utils.tf_env import tf, keras  # noqa: F401  (TF must come from utils.tf_env)
from pipeline.augmentation import FlipReIDAugmentor
from pipeline import feature_extraction
from pipeline.feature_extraction import extract_features, make_inference_dataset
from pipeline.images import read_image
from pipeline.training_input import make_training_dataset
from pipeline.sampler import PKSampler

H, W = 64, 32


def index_image(index):
    """An RGB image whose colour encodes `index` (exact after a PNG round trip)."""
    image = np.empty((H, W, 3), np.uint8)
    image[..., 0] = index % 256
    image[..., 1] = index // 256
    image[..., 2] = 200
    image[:H // 2, :W // 4, 2] = 50  # asymmetric, so flips and model outputs differ
    return image


def decode_index(image):
    return int(image[H - 1, W - 1, 0]) + 256 * int(image[H - 1, W - 1, 1])


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for index in range(40):
        path = str(folder / f"{index:04d}.png")
        assert cv2.imwrite(path, cv2.cvtColor(index_image(index), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def test_read_image_is_rgb_and_resized(tmp_path):
    red_bgr = np.zeros((40, 20, 3), np.uint8)
    red_bgr[..., 2] = 255
    path = str(tmp_path / "red.png")
    cv2.imwrite(path, red_bgr)
    image = read_image(path, H, W)
    assert image.shape == (H, W, 3) and image.dtype == np.uint8
    assert (image == (255, 0, 0)).all(), "pure red reads as RGB (255, 0, 0)"
    gradient = np.random.default_rng(0).integers(0, 256, (50, 30, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), gradient)
    expected = cv2.cvtColor(cv2.resize(gradient, (W, H), interpolation=cv2.INTER_LINEAR),
                            cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(read_image(str(tmp_path / "g.png"), H, W), expected)
    cv2.imwrite(str(tmp_path / "red.jpg"), red_bgr)
    jpeg = read_image(tmp_path / "red.jpg", H, W).astype(int)
    assert (jpeg[..., 0] > 240).all() and (jpeg[..., 1:] < 15).all()


def test_read_image_errors_name_the_file(tmp_path):
    missing = str(tmp_path / "missing.jpg")
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        read_image(missing, H, W)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"this is not a jpeg" * 10)
    with pytest.raises(ValueError, match="corrupt.jpg"):
        read_image(str(corrupt), H, W)


def identity_labels():
    return np.repeat(np.arange(10), 4)  # 40 images, 10 identities x 4


@pytest.mark.parametrize("cache_images", [True, False])
def test_training_batches_follow_the_sampler(image_files, cache_images):
    labels = identity_labels() + 3
    make_sampler = lambda: PKSampler(labels, 3, 2, steps_per_epoch=4, seed=0)  # noqa: E731
    dataset = make_training_dataset(image_files, labels, make_sampler(), H, W, workers=2,
                                    cache_images=cache_images, num_batches=6)
    batches = list(dataset.as_numpy_iterator())
    expected = list(itertools.islice(iter(make_sampler()), 6))
    assert len(batches) == 6
    for (images, batch_labels), indices in zip(batches, expected):
        assert images.dtype == np.float32 and images.shape == (6, H, W, 3)
        assert batch_labels.dtype == np.int32 and batch_labels.shape == (6,)
        np.testing.assert_array_equal(batch_labels, labels[indices])
        for image, index in zip(images, indices):
            np.testing.assert_array_equal(image, index_image(index).astype(np.float32))


def test_training_dataset_spec_and_cache_bound(image_files):
    labels = identity_labels()
    sampler = PKSampler(labels, 2, 2, steps_per_epoch=2, seed=1)
    with pytest.warns(UserWarning, match="cache limited to 5 of 40"):
        dataset = make_training_dataset(image_files, labels, sampler, H, W, workers=1,
                                        cache_max_bytes=5 * H * W * 3)
    assert dataset.element_spec[0].shape.as_list() == [None, H, W, 3]
    assert dataset.element_spec[0].dtype == tf.float32
    images, _ = next(iter(dataset))  # infinite dataset: take one batch
    assert images.shape == (4, H, W, 3)
    with pytest.raises(ValueError, match="same length"):
        make_training_dataset(image_files[:3], labels, sampler, H, W)
    with pytest.raises(ValueError, match="integer"):
        make_training_dataset(image_files, labels.astype(float), sampler, H, W)


def test_seeded_augmentation_is_reproducible_across_threads(image_files):
    labels = identity_labels()

    def run(seed, workers):
        sampler = PKSampler(labels, 4, 2, steps_per_epoch=3, seed=2)
        dataset = make_training_dataset(image_files, labels, sampler, H, W,
                                        augmentor=FlipReIDAugmentor(H, W), workers=workers,
                                        seed=seed, num_batches=4)
        return np.stack([images for images, _ in dataset.as_numpy_iterator()])

    first = run(seed=3, workers=2)
    np.testing.assert_array_equal(first, run(seed=3, workers=1))
    assert not np.array_equal(first, run(seed=4, workers=2))
    plain = np.stack([np.stack([index_image(i) for i in batch]) for batch in
                      itertools.islice(iter(PKSampler(labels, 4, 2, 3, seed=2)), 4)])
    assert not np.array_equal(first, plain.astype(np.float32)), "augmentation took effect"
    # Erasing colour (123, 116, 103) shows up somewhere: the augmentor was really applied.
    assert np.all(first == np.array([123, 116, 103], np.float32), axis=-1).any()


def test_inference_dataset_preserves_order_and_flips(image_files):
    paths = image_files[:10]
    batches = list(make_inference_dataset(paths, H, W, batch_size=4).as_numpy_iterator())
    assert [len(b) for b in batches] == [4, 4, 2]
    images = np.concatenate(batches)
    assert images.dtype == np.float32
    assert [decode_index(image.astype(np.uint8)) for image in images] == list(range(10))
    flipped = np.concatenate(list(make_inference_dataset(paths, H, W, batch_size=4,
                                                         flip=True).as_numpy_iterator()))
    np.testing.assert_array_equal(flipped, images[:, :, ::-1])
    with pytest.raises(ValueError, match="empty"):
        make_inference_dataset([], H, W)


def tiny_model(two_outputs):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((H, W, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = [keras.layers.Dense(3)(x), keras.layers.Dense(2)(x)] if two_outputs else \
        keras.layers.Dense(5)(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("two_outputs", [False, True])
def test_extract_features_with_flip_averaging(image_files, capsys, two_outputs):
    model = tiny_model(two_outputs)
    paths = image_files[:7]
    images = np.stack([index_image(i) for i in range(7)]).astype(np.float32)

    def manual(x):
        outputs = model.predict(x, verbose=0)
        return np.hstack(outputs) if isinstance(outputs, list) else outputs

    plain = extract_features(model, paths, H, W, batch_size=3, progress=False)
    assert plain.dtype == np.float32 and plain.shape == (7, 5)
    np.testing.assert_allclose(plain, manual(images), rtol=1e-5, atol=1e-6)
    averaged = extract_features(model, paths, H, W, batch_size=3, use_horizontal_flipping=True,
                                progress=False)
    flipped_images = np.stack([cv2.flip(image, 1) for image in images])
    expected = (manual(images) + manual(flipped_images)) / 2
    np.testing.assert_allclose(averaged, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(averaged, plain), "the flip changes the features"
    assert "Speed of feature extraction:" in capsys.readouterr().out
    features, speed = extract_features(model, paths, H, W, progress=False, return_speed=True)
    assert speed > 0 and features.shape == (7, 5)


def test_extract_features_traces_once_per_model_and_does_not_keep_it(image_files):
    """Periodic evaluation reuses the traced function; the cache must not keep models alive."""
    model = tiny_model(False)
    first = extract_features(model, image_files[:4], H, W, batch_size=2, progress=False)
    second = extract_features(model, image_files[:4], H, W, batch_size=2, progress=False)
    np.testing.assert_array_equal(first, second)
    predict = feature_extraction.predict_function(model, H, W, False)
    assert predict.experimental_get_tracing_count() == 1
    assert feature_extraction.predict_function(model, H, W, True) is not predict
    reference = weakref.ref(model)
    del model, predict
    gc.collect()
    assert reference() is None


def test_extract_features_keeps_file_order_with_many_workers(image_files):
    model = tiny_model(False)
    images = np.stack([index_image(i) for i in range(9)]).astype(np.float32)
    features = extract_features(model, image_files[:9], H, W, batch_size=2, workers=4,
                                progress=False)
    np.testing.assert_allclose(features, model.predict(images, verbose=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        extract_features(model, image_files[:2], H, W, workers=0, progress=False)


def test_extract_features_averages_augmented_passes(image_files):
    """ALR's augmented evaluation: mean over `augmentation_num` passes of the augmentor."""
    model = tiny_model(False)
    paths = image_files[:5]
    images = np.stack([index_image(i) for i in range(5)])

    class Brighten:  # a deterministic stand-in: pass k adds 10 * k to every pixel
        calls = 0

        def __call__(self, image):
            Brighten.calls += 1
            return np.clip(image.astype(int) + 10 * ((Brighten.calls - 1) // 5 + 1),
                           0, 255).astype(np.uint8)

    features = extract_features(model, paths, H, W, batch_size=2, progress=False,
                                augmentor=Brighten(), augmentation_num=3)
    passes = [model.predict(np.clip(images.astype(int) + 10 * k, 0, 255).astype(np.float32),
                            verbose=0) for k in (1, 2, 3)]
    np.testing.assert_allclose(features, np.mean(passes, axis=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="augmentor"):
        extract_features(model, paths, H, W, progress=False, augmentation_num=2)
