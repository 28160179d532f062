"""testing_size subsampling and the validation split against direct scikit-learn calls."""
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import GroupShuffleSplit, StratifiedShuffleSplit

from datasets.splits import apply_testing_size, split_validation


def make_frame(prefix, identity_IDs, camera_ID):
    return pd.DataFrame({"image_file_path": [f"/data/{prefix}_{index:04d}.jpg" for index in range(len(identity_IDs))],
                         "identity_ID": np.asarray(identity_IDs, dtype=np.int64),
                         "camera_ID": np.full(len(identity_IDs), camera_ID, dtype=np.int64)})


@pytest.fixture
def test_frames():
    rng = np.random.RandomState(1)
    identities = np.arange(1, 31)
    query_df = make_frame("q", rng.permutation(np.repeat(identities, 2)), 1)
    gallery_ids = np.concatenate([np.repeat(identities, 3), np.zeros(12, dtype=np.int64)])  # 0 = distractors
    gallery_df = make_frame("g", rng.permutation(gallery_ids), 2)
    return query_df, gallery_df


def reference_testing_subset(query_df, gallery_df, test_size):
    """The originals' procedure written out with a direct GroupShuffleSplit call."""
    accumulated = pd.concat([query_df, gallery_df], ignore_index=True)
    _, test_indexes = next(GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=0).split(
        accumulated, groups=accumulated["identity_ID"]))
    query_paths = [accumulated["image_file_path"][index] for index in test_indexes if index < len(query_df)]
    gallery_paths = [accumulated["image_file_path"][index] for index in test_indexes if index >= len(query_df)]
    return query_paths, gallery_paths


@pytest.mark.parametrize("testing_size, sklearn_test_size, expected_groups", [
    (0.5, 0.5, math.ceil(0.5 * 31)), (0.2, 0.2, math.ceil(0.2 * 31)), (7, 7, 7), (7.9, 7, 7), (np.int64(3), 3, 3)])
def test_apply_testing_size(test_frames, testing_size, sklearn_test_size, expected_groups):
    query_df, gallery_df = test_frames
    new_query_df, new_gallery_df = apply_testing_size(query_df, gallery_df, testing_size)

    # Equal to the direct sklearn call, in the split's order.
    reference_query_paths, reference_gallery_paths = reference_testing_subset(query_df, gallery_df, sklearn_test_size)
    assert list(new_query_df["image_file_path"]) == reference_query_paths
    assert list(new_gallery_df["image_file_path"]) == reference_gallery_paths

    # Group integrity: a kept identity keeps all its query and gallery rows, rows stay on their side.
    kept = set(new_query_df["identity_ID"]) | set(new_gallery_df["identity_ID"])
    assert len(kept) == expected_groups  # 30 identities + the distractor group 0 = 31 groups
    for original, new in ((query_df, new_query_df), (gallery_df, new_gallery_df)):
        expected_rows = original[original["identity_ID"].isin(kept)]
        assert sorted(new["image_file_path"]) == sorted(expected_rows["image_file_path"])
        merged = new.merge(original, on="image_file_path", suffixes=("", "_original"))
        assert (merged["identity_ID"] == merged["identity_ID_original"]).all()
        assert (merged["camera_ID"] == merged["camera_ID_original"]).all()
    assert list(new_query_df.columns) == list(query_df.columns)
    assert list(new_query_df.index) == list(range(len(new_query_df)))

    # Deterministic.
    again_query_df, again_gallery_df = apply_testing_size(query_df, gallery_df, testing_size)
    pd.testing.assert_frame_equal(again_query_df, new_query_df)
    pd.testing.assert_frame_equal(again_gallery_df, new_gallery_df)


def test_apply_testing_size_special_values(test_frames):
    query_df, gallery_df = test_frames
    for testing_size in (1, 1.0, 1.5):  # 1.5 -> int(1.5) == 1 -> everything, as in the original code
        new_query_df, new_gallery_df = apply_testing_size(query_df, gallery_df, testing_size)
        assert new_query_df is query_df and new_gallery_df is gallery_df
    assert apply_testing_size(query_df, gallery_df, 0) == (None, None)
    assert apply_testing_size(query_df, gallery_df, 0.0) == (None, None)
    with pytest.raises(ValueError, match="testing_size"):
        apply_testing_size(query_df, gallery_df, -0.5)
    with pytest.raises(ValueError, match="31 test identities"):
        apply_testing_size(query_df, gallery_df, 40)


@pytest.fixture
def train_frame():
    rng = np.random.RandomState(2)
    return make_frame("t", rng.permutation(np.repeat(np.arange(100, 120), 4)), 3)  # 20 ids x 4 images


def reference_validation(train_df, validation_size, second_test_size):
    def split(dataframe, test_size):
        if test_size == 1:
            return dataframe, dataframe
        train_indexes, test_indexes = next(StratifiedShuffleSplit(n_splits=1, test_size=test_size, random_state=0)
                                           .split(np.zeros(len(dataframe)), dataframe["identity_ID"]))
        return dataframe.iloc[train_indexes], dataframe.iloc[test_indexes]

    train_part, valid = split(train_df, validation_size)
    valid_query, valid_gallery = split(valid, second_test_size)
    return [list(df["image_file_path"]) for df in (train_part, valid_query, valid_gallery)]


def test_split_validation(train_frame):
    new_train_df, valid_query_df, valid_gallery_df = split_validation(train_frame, 0.5, query_num=300,
                                                                      gallery_num=300)
    # Equal to the direct sklearn calls.
    assert [list(df["image_file_path"]) for df in (new_train_df, valid_query_df, valid_gallery_df)] == \
        reference_validation(train_frame, 0.5, 300 / 600)
    # Sizes and stratification: 20 identities x 4 images -> 2 train + 2 valid each, valid -> 1 query + 1 gallery.
    assert len(new_train_df) == 40 and len(valid_query_df) == 20 and len(valid_gallery_df) == 20
    for df, per_identity in ((new_train_df, 2), (valid_query_df, 1), (valid_gallery_df, 1)):
        assert (df["identity_ID"].value_counts() == per_identity).all()
        assert set(df["identity_ID"]) == set(train_frame["identity_ID"])
        assert list(df.index) == list(range(len(df)))
    # A partition of the training images.
    all_paths = list(new_train_df["image_file_path"]) + list(valid_query_df["image_file_path"]) + \
        list(valid_gallery_df["image_file_path"])
    assert sorted(all_paths) == sorted(train_frame["image_file_path"])
    # Deterministic.
    again = split_validation(train_frame, 0.5, query_num=300, gallery_num=300)
    for first, second in zip(again, (new_train_df, valid_query_df, valid_gallery_df)):
        pd.testing.assert_frame_equal(first, second)


def test_split_validation_gallery_ratio_and_counts(train_frame):
    # validation_size 60.7 -> 60 images; then test_size = 2 / (1 + 2) -> ceil(2 / 3 * 60) = 40 gallery images.
    new_train_df, valid_query_df, valid_gallery_df = split_validation(train_frame, 60.7, query_num=1, gallery_num=2)
    assert [list(df["image_file_path"]) for df in (new_train_df, valid_query_df, valid_gallery_df)] == \
        reference_validation(train_frame, 60, 2 / 3)
    assert (len(new_train_df), len(valid_query_df), len(valid_gallery_df)) == (20, 20, 40)
    # Stratified: every identity keeps one training image, one valid query and two valid gallery images.
    for df, per_identity in ((new_train_df, 1), (valid_query_df, 1), (valid_gallery_df, 2)):
        assert (df["identity_ID"].value_counts() == per_identity).all() and df["identity_ID"].nunique() == 20


def test_split_validation_special_cases(train_frame):
    new_train_df, valid_query_df, valid_gallery_df = split_validation(train_frame, 0, 10, 10)
    assert new_train_df is train_frame and valid_query_df is None and valid_gallery_df is None
    # test_size == 1: train and valid are both everything.
    new_train_df, valid_query_df, valid_gallery_df = split_validation(train_frame, 1, 10, 10)
    assert list(new_train_df["image_file_path"]) == list(train_frame["image_file_path"])
    assert len(valid_query_df) == 40 and len(valid_gallery_df) == 40
    assert [list(df["image_file_path"]) for df in (new_train_df, valid_query_df, valid_gallery_df)] == \
        reference_validation(train_frame, 1, 0.5)
    # Too few validation images for 20 identities: a clear error.
    with pytest.raises(ValueError, match="validation_size"):
        split_validation(train_frame, 0.1, 10, 10)
