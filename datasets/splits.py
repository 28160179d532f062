"""Test-set subsampling (``testing_size``) and the validation split, with scikit-learn's splitters.

Both reproduce the original programs' calls (same splitter, ``random_state=0``, same index bookkeeping), so the
same inputs give the same subsets. Returned DataFrames have a fresh RangeIndex; row order is the splitter's.
"""
import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, StratifiedShuffleSplit


def _normalise_size(size, name):
    """``int(size)`` when > 1 (an absolute count), else the fraction unchanged, as the original code does."""
    if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number (a fraction in [0, 1] or a count > 1), got {size!r}.")
    if size < 0:
        raise ValueError(f"{name} must be >= 0 (0 disables, a fraction in (0, 1], or a count > 1), got {size}.")
    return int(size) if size > 1 else size


def apply_testing_size(query_df, gallery_df, testing_size):
    """Keep a random subset of the test identities in query and gallery.

    ``testing_size``: 0 -> ``(None, None)`` (no test evaluation); 1 -> inputs returned unchanged; a fraction in
    (0, 1) -> that fraction of the identities; > 1 -> ``int(testing_size)`` identities (note: 1 < size < 2 becomes
    1 and therefore means "everything", as in the original). Identities are the groups of a
    ``GroupShuffleSplit(n_splits=1, test_size=testing_size, random_state=0)`` over the query rows followed by the
    gallery rows; the distractor identity 0 is one group. The split's test part is kept.
    """
    testing_size = _normalise_size(testing_size, "testing_size")
    if testing_size == 0:
        return None, None
    if testing_size == 1:
        return query_df, gallery_df
    accumulated_df = pd.concat([query_df, gallery_df], ignore_index=True)
    splitter = GroupShuffleSplit(n_splits=1, test_size=testing_size, random_state=0)
    try:
        _, test_indexes = next(splitter.split(accumulated_df, groups=accumulated_df["identity_ID"]))
    except ValueError as exception:
        raise ValueError(f"testing_size={testing_size} cannot be applied to "
                         f"{accumulated_df['identity_ID'].nunique()} test identities: {exception}") from exception
    is_query = test_indexes < len(query_df)
    return (accumulated_df.iloc[test_indexes[is_query]].reset_index(drop=True),
            accumulated_df.iloc[test_indexes[~is_query]].reset_index(drop=True))


def _stratified_split(dataframe, test_size, what):
    """(train part, test part) of a StratifiedShuffleSplit by identity; test_size == 1 gives (all, all)."""
    if test_size == 1:
        return dataframe.reset_index(drop=True), dataframe.reset_index(drop=True)
    splitter = StratifiedShuffleSplit(n_splits=1, test_size=test_size, random_state=0)
    try:
        train_indexes, test_indexes = next(splitter.split(np.zeros(len(dataframe)), dataframe["identity_ID"]))
    except ValueError as exception:
        raise ValueError(f"Cannot split {what} ({len(dataframe)} images of {dataframe['identity_ID'].nunique()} "
                         f"identities) with test_size={test_size} stratified by identity: {exception}. "
                         "Try a larger validation_size.") from exception
    return (dataframe.iloc[train_indexes].reset_index(drop=True),
            dataframe.iloc[test_indexes].reset_index(drop=True))


def split_validation(train_df, validation_size, query_num, gallery_num):
    """``(train_df, valid_query_df, valid_gallery_df)`` carved from the training data.

    ``validation_size`` 0 -> ``(train_df, None, None)``. Otherwise a StratifiedShuffleSplit (by identity,
    ``random_state=0``, ``int()`` when > 1; 1 means train = valid = all) gives train / valid; valid is split again
    the same way with ``test_size = gallery_num / (query_num + gallery_num)`` (the test query/gallery ratio):
    its train part is the valid query, its test part the valid gallery. Valid identities are training identities.
    """
    validation_size = _normalise_size(validation_size, "validation_size")
    if validation_size == 0:
        return train_df, None, None
    if query_num + gallery_num <= 0:
        raise ValueError(f"query_num + gallery_num must be > 0, got {query_num} + {gallery_num}.")
    train_part, valid_df = _stratified_split(train_df, validation_size, "the training data")
    valid_query_df, valid_gallery_df = _stratified_split(
        valid_df, gallery_num / (query_num + gallery_num), "the validation data into query and gallery")
    return train_part, valid_query_df, valid_gallery_df
