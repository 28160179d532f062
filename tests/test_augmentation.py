"""FlipReID / AdaptiveL2 augmentation: every step is shown to take effect with the exact values."""
import collections

import albumentations as A
import cv2
import numpy as np
import pytest

from pipeline.augmentation import (AdaptiveL2Augmentor, FlipReIDAugmentor, RandomErasing,
                                   RandomGrayscalePatchReplacement)

H, W = 64, 32


def random_image(seed=0, low=0, high=100):
    # Values below 100 can never equal the fill colours, and random triples are almost never grey.
    return np.random.default_rng(seed).integers(low, high, (H, W, 3), dtype=np.uint8)


def crop_candidates(image, pad_top, pad_bottom, pad_left, pad_right, fill):
    """All (offset -> crop) of the padded image, built by hand with numpy."""
    padded = np.empty((H + pad_top + pad_bottom, W + pad_left + pad_right, 3), np.uint8)
    padded[:] = np.array(fill, np.uint8)
    padded[pad_top:pad_top + H, pad_left:pad_left + W] = image
    return {(dy, dx): padded[dy:dy + H, dx:dx + W]
            for dy in range(pad_top + pad_bottom + 1) for dx in range(pad_left + pad_right + 1)}


def matching_offset(output, candidates):
    matches = [offset for offset, crop in candidates.items() if np.array_equal(output, crop)]
    assert len(matches) == 1, "output is exactly one crop of the padded image"
    return matches[0]


def test_flipreid_padding_colour_and_random_crop_offsets():
    # 64x32: pad to 64+int(3.2)=67 x 32+int(1.6)=33, centred: top 1 / bottom 2, left 0 / right 1.
    augmentor = FlipReIDAugmentor(H, W, patch_replacement_probability=0,
                                  random_erasing_probability=0, horizontal_flip_probability=0,
                                  seed=0)
    assert (augmentor.padded_height, augmentor.padded_width) == (67, 33)
    image = random_image()
    candidates = crop_candidates(image, 1, 2, 0, 1, fill=(124, 117, 104))
    offsets = collections.Counter(matching_offset(augmentor(image), candidates)
                                  for _ in range(400))
    assert set(offsets) == set(candidates), "every crop offset occurs"
    assert min(offsets.values()) > 400 / len(candidates) / 3


def test_flipreid_padding_at_spec_size_384x128():
    augmentor = FlipReIDAugmentor(384, 128, 0, 0, horizontal_flip_probability=0, seed=1)
    assert (augmentor.padded_height, augmentor.padded_width) == (403, 134)
    image = np.zeros((384, 128, 3), np.uint8)
    bordered = 0
    for _ in range(50):
        output = augmentor(image)
        border = np.any(output != 0, axis=2)
        if not border.any():  # the one centred crop offset (9, 3) shows no border
            continue
        bordered += 1
        # Border pixels carry exactly the OpenCV-saturated ImageNet mean colour.
        np.testing.assert_array_equal(np.unique(output[border], axis=0), [[124, 117, 104]])
        # At most 9 rows (top) or 10 rows (bottom) and 3 columns per side are border.
        rows = np.flatnonzero(border.all(axis=1))
        columns = np.flatnonzero(border.all(axis=0))
        assert len(rows) <= 10 and len(columns) <= 3
    assert bordered > 40


def test_adaptivel2_base_padding_is_black_ten_pixels_each_side():
    augmentor = AdaptiveL2Augmentor(H, W, name="BaseImageAugmentor",
                                    horizontal_flip_probability=0, seed=0)
    assert (augmentor.padded_height, augmentor.padded_width) == (H + 20, W + 20)
    image = random_image(1, low=1)
    candidates = crop_candidates(image, 10, 10, 10, 10, fill=(0, 0, 0))
    offsets = {matching_offset(augmentor(image), candidates) for _ in range(300)}
    assert len(offsets) > 200 and {dy for dy, _ in offsets} == set(range(21))


def test_flipreid_flip_after_crop_and_its_probability():
    augmentor = FlipReIDAugmentor(H, W, 0, 0, seed=2)
    image = random_image(2)
    candidates = crop_candidates(image, 1, 2, 0, 1, fill=(124, 117, 104))
    flipped = {("flipped",) + k: v[:, ::-1] for k, v in candidates.items()}
    candidates = {("plain",) + k: v for k, v in candidates.items()}
    kinds = collections.Counter(matching_offset(augmentor(image), {**candidates, **flipped})[0]
                                for _ in range(1000))
    assert abs(kinds["flipped"] / 1000 - 0.5) < 0.06


def test_adaptivel2_flip_happens_before_padding():
    augmentor = AdaptiveL2Augmentor(H, W, name="BaseImageAugmentor",
                                    horizontal_flip_probability=1.0, seed=3)
    image = random_image(3, low=1)
    candidates = crop_candidates(image[:, ::-1], 10, 10, 10, 10, fill=(0, 0, 0))
    for _ in range(20):
        matching_offset(augmentor(image), candidates)
    # Mirroring really is along the width axis, the same pixels as cv2.flip(img, 1).
    np.testing.assert_array_equal(image[:, ::-1], cv2.flip(image, 1))


def changed_rectangle(before, after):
    changed = np.any(before != after, axis=2)
    rows, columns = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    top, left = rows[0], columns[0]
    h, w = rows[-1] - top + 1, columns[-1] - left + 1
    assert changed[top:top + h, left:left + w].all() and changed.sum() == h * w, "a full rectangle"
    return top, left, h, w


def run_transform(transform, image):
    return transform(image=image)["image"]


def test_grayscale_patch_is_cv2_gray_inside_a_rectangle_only():
    transform = RandomGrayscalePatchReplacement(p=1.0)
    transform.set_random_seed(0)
    for seed in range(30):
        image = random_image(seed, high=256)
        output = run_transform(transform, image)
        top, left, h, w = changed_rectangle(image, output)
        patch = output[top:top + h, left:left + w]
        assert (patch[..., 0] == patch[..., 1]).all() and (patch[..., 1] == patch[..., 2]).all()
        gray = cv2.cvtColor(np.ascontiguousarray(image[top:top + h, left:left + w]),
                            cv2.COLOR_RGB2GRAY)
        np.testing.assert_array_equal(patch[..., 0], gray)
        assert output.dtype == np.uint8 and output.shape == image.shape


@pytest.mark.parametrize("fill, expected", [((123.68, 116.779, 103.939), (123, 116, 103)),
                                            ((125.307, 122.961, 113.8575), (125, 122, 113))])
def test_erasing_fills_a_rectangle_with_the_truncated_colour(fill, expected):
    transform = RandomErasing(fill=fill, p=1.0)
    transform.set_random_seed(1)
    for seed in range(30):
        image = random_image(seed)
        output = run_transform(transform, image)
        top, left, h, w = changed_rectangle(image, output)
        region = output[top:top + h, left:left + w].reshape(-1, 3)
        np.testing.assert_array_equal(np.unique(region, axis=0), [expected])


def reference_rectangles(rng, n, height, width):
    """Rectangle sampling written out independently (numpy Generator, first accepted attempt)."""
    shapes = []
    while len(shapes) < n:
        for _ in range(100):
            area = rng.uniform(0.02, 0.4) * height * width
            ratio = rng.uniform(0.3, 1 / 0.3)
            h, w = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
            if w < width and h < height:
                shapes.append((h, w))
                break
    return np.array(shapes)


def test_rectangle_size_and_position_distribution():
    transform = RandomErasing(fill=(255, 255, 255), p=1.0)
    transform.set_random_seed(2)
    image = random_image(0)
    rectangles = np.array([changed_rectangle(image, run_transform(transform, image))
                           for _ in range(1500)])
    top, left, h, w = rectangles.T
    assert (h >= 1).all() and (h < H).all() and (w >= 1).all() and (w < W).all()
    # randint(0, H-h) has an exclusive upper bound: the last row/column is never covered.
    assert (top + h <= H - 1).all() and (left + w <= W - 1).all() and (top == 0).any()
    assert (top + h == H - 1).any() and (left + w == W - 1).any()
    reference = reference_rectangles(np.random.default_rng(123), 20000, H, W)
    for ours, ref in ((h, reference[:, 0]), (w, reference[:, 1]), (h * w, reference.prod(1))):
        np.testing.assert_allclose(np.quantile(ours, [0.1, 0.5, 0.9]),
                                   np.quantile(ref, [0.1, 0.5, 0.9]), rtol=0.12, atol=1)
    area_fraction = h * w / (H * W)
    assert area_fraction.min() > 0.01 and area_fraction.max() < 0.5
    # Positions are uniform given the size: mean relative offset ~ 0.5.
    assert abs(np.mean(top / (H - h)) - 0.5) < 0.05 and abs(np.mean(left / (W - w)) - 0.5) < 0.05


def applied_frequencies(augmentor, n=2000):
    image = random_image(0)
    steps = augmentor.transforms.transforms
    applied = np.zeros((n, len(steps)), bool)
    for i in range(n):
        augmentor(image)
        applied[i] = [bool(step.get_applied_params()) for step in steps]
    return applied


def test_flipreid_step_probabilities_and_independence():
    augmentor = FlipReIDAugmentor(H, W, patch_replacement_probability=0.8,
                                  random_erasing_probability=0.3, seed=4)
    names = [type(step).__name__ for step in augmentor.transforms.transforms]
    assert names == ["PadIfNeeded", "RandomCrop", "HorizontalFlip",
                     "RandomGrayscalePatchReplacement", "RandomErasing"]
    applied = applied_frequencies(augmentor)
    np.testing.assert_allclose(applied.mean(0), [1, 1, 0.5, 0.8, 0.3], atol=0.035)
    # albumentations' Compose(seed=...) would give every step the same stream (flip => patch).
    flip, patch, erase = applied[:, 2], applied[:, 3], applied[:, 4]
    assert abs((flip & patch).mean() - 0.4) < 0.035 and abs((flip & ~patch).mean() - 0.1) < 0.03
    assert abs((patch & erase).mean() - 0.24) < 0.035


def test_adaptivel2_step_probabilities():
    augmentor = AdaptiveL2Augmentor(H, W, seed=5)
    names = [type(step).__name__ for step in augmentor.transforms.transforms]
    assert names == ["HorizontalFlip", "PadIfNeeded", "RandomCrop", "RandomErasing"]
    np.testing.assert_allclose(applied_frequencies(augmentor).mean(0), [0.5, 1, 1, 0.5], atol=0.035)
    base = AdaptiveL2Augmentor(H, W, name="BaseImageAugmentor")
    assert [type(s).__name__ for s in base.transforms.transforms][-1] == "RandomCrop"


def test_full_flipreid_output_contains_erasing_colour_and_grey_patch():
    augmentor = FlipReIDAugmentor(H, W, 1.0, 1.0, seed=6)
    image = random_image(7)
    erased = grey = 0
    for _ in range(50):
        output = augmentor(image)
        assert output.shape == (H, W, 3) and output.dtype == np.uint8
        erased += np.all(output == (123, 116, 103), axis=2).sum() > 0
        is_grey = (output[..., 0] == output[..., 1]) & (output[..., 1] == output[..., 2])
        grey += (is_grey & ~np.all(output == (123, 116, 103), axis=2)).sum() > 0
    assert erased == 50 and grey > 40


def test_seeded_augmentors_are_reproducible():
    image = random_image(8)
    for cls in (FlipReIDAugmentor, AdaptiveL2Augmentor):
        first, second, other = cls(H, W, seed=9), cls(H, W, seed=9), cls(H, W, seed=10)
        outputs = [first(image) for _ in range(20)]
        assert all(np.array_equal(o, second(image)) for o in outputs)
        assert not all(np.array_equal(o, other(image)) for o in outputs)
        first.reseed(9)
        assert all(np.array_equal(o, first(image)) for o in outputs)


def test_bad_inputs_raise_clear_errors():
    augmentor = FlipReIDAugmentor(H, W)
    with pytest.raises(ValueError, match="uint8 RGB image of shape"):
        augmentor(np.zeros((H, W, 3), np.float32))
    with pytest.raises(ValueError, match="read_image"):
        augmentor(np.zeros((H + 1, W, 3), np.uint8))
    with pytest.raises(ValueError, match="Unknown augmentor name"):
        AdaptiveL2Augmentor(H, W, name="Rotate")
    with pytest.raises(ValueError):
        RandomErasing(p=1.5)
    # albumentations 2.x ignores unknown (1.x) argument names unless strict.
    with pytest.raises(ValueError, match="value"):
        A.PadIfNeeded(min_height=10, min_width=10, value=0, strict=True)
