"""Shared helpers of the dataset loaders: listing, file-name parsing, validation, label encoding.

Every loader returns ``(train_df, query_df, gallery_df, label_encoder_dict)`` where each DataFrame has the
columns ``image_file_path`` (absolute path, str), ``identity_ID`` (int64) and ``camera_ID`` (int64), junk
images (identity -1) are removed, distractors (identity 0) are kept, and ``label_encoder_dict`` is an
``OrderedDict(identity_ID=LabelEncoder)`` fitted on the train identities only. TensorFlow-free.
"""
import os
import re
import warnings
from collections import OrderedDict

import numpy as np
import pandas as pd
from sklearn.preprocessing import LabelEncoder

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
COLUMNS = ("image_file_path", "identity_ID", "camera_ID")
SPLIT_NAMES = ("train", "query", "gallery")
JUNK_IDENTITY_ID = -1
DISTRACTOR_IDENTITY_ID = 0

# Market-1501 "0002_c1s1_000451_03", DukeMTMC-reID "0001_c2_f0046182", CUHK03-NP "0001_c1_1";
# junk "-1_c1s1_..." parses to -1 and is removed later.
DEFAULT_FILE_NAME_PATTERN = r"^(?P<pid>-?\d+)_c(?P<camid>\d+)"


class DatasetCountWarning(UserWarning):
    """A split's size differs from the dataset's published standard (the download may be incomplete)."""


def layout_message(problem, dataset_name, layout):
    """Error text: the problem, then the expected tree of the dataset."""
    return f"{problem}\nExpected layout of the {dataset_name} dataset:\n{layout.rstrip()}"


def is_image_file_name(file_name):
    """True for .jpg/.jpeg/.png/.bmp names (case-insensitive); Thumbs.db and other strays are False."""
    return file_name.lower().endswith(IMAGE_EXTENSIONS)


def strip_image_extensions(file_name):
    """File name without its image extension(s): ``1488_c1s6_023021_00.jpg.jpg`` -> ``1488_c1s6_023021_00``."""
    stem = file_name
    while is_image_file_name(stem):
        stem = os.path.splitext(stem)[0]
    return stem


def check_root_folder(root_folder_path, dataset_name, layout):
    """Absolute root folder path; FileNotFoundError naming the layout when it does not exist."""
    if root_folder_path is None or not os.path.isdir(root_folder_path):
        raise FileNotFoundError(layout_message(
            f"root_folder_path {root_folder_path!r} is not an existing folder.", dataset_name, layout))
    return os.path.abspath(root_folder_path)


def find_dataset_folder(root_folder_path, folder_names, required_entries, dataset_name, layout):
    """Folder of the dataset: ``<root>/<one of folder_names>``, or root itself when it already holds the
    required entries (users often pass the dataset folder instead of its parent)."""
    root_folder_path = check_root_folder(root_folder_path, dataset_name, layout)
    for folder_name in folder_names:
        candidate = os.path.join(root_folder_path, folder_name)
        if os.path.isdir(candidate):
            return candidate
    if all(os.path.exists(os.path.join(root_folder_path, entry)) for entry in required_entries):
        return root_folder_path
    tried = ", ".join(os.path.join(root_folder_path, name) for name in folder_names)
    raise FileNotFoundError(layout_message(
        f"Dataset folder not found (tried {tried}). Download/extract the dataset under root_folder_path.",
        dataset_name, layout))


def list_image_files(folder_path, dataset_name, layout):
    """Sorted absolute paths of the images directly inside ``folder_path`` (stray non-image files ignored).

    Raises FileNotFoundError when the folder is missing and ValueError when it holds no image.
    """
    if not os.path.isdir(folder_path):
        raise FileNotFoundError(layout_message(f"Missing folder {folder_path}.", dataset_name, layout))
    folder_path = os.path.abspath(folder_path)
    with os.scandir(folder_path) as entries:
        file_names = [entry.name for entry in entries if is_image_file_name(entry.name) and entry.is_file()]
    if not file_names:
        raise ValueError(layout_message(
            f"Folder {folder_path} contains no image ({'/'.join(IMAGE_EXTENSIONS)}).", dataset_name, layout))
    return [os.path.join(folder_path, file_name) for file_name in sorted(file_names)]


def compile_file_name_pattern(pattern=None):
    """Compiled regex with named groups ``pid`` and ``camid`` (default: DEFAULT_FILE_NAME_PATTERN)."""
    if pattern is None:
        pattern = DEFAULT_FILE_NAME_PATTERN
    try:
        compiled = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
    except re.error as exception:
        raise ValueError(f"Invalid file name pattern {pattern!r}: {exception}") from exception
    missing_groups = {"pid", "camid"} - set(compiled.groupindex)
    if missing_groups:
        raise ValueError(
            f"File name pattern {compiled.pattern!r} lacks the named group(s) {sorted(missing_groups)}; "
            "it needs (?P<pid>...) for the person ID and (?P<camid>...) for the camera ID, e.g. "
            f"{DEFAULT_FILE_NAME_PATTERN!r}. Evaluation needs camera IDs: without them, list the images "
            "in CSV files with a camera_ID column (query and gallery on different cameras).")
    return compiled


def parse_file_names(image_file_paths, pattern, dataset_name, layout):
    """Identity and camera IDs of each image, from ``pattern.search`` on the file name without extension(s).

    Raises ValueError listing a few offending names when any name does not parse.
    """
    compiled = compile_file_name_pattern(pattern)
    identity_IDs, camera_IDs, failures = [], [], []
    for image_file_path in image_file_paths:
        file_name = os.path.basename(image_file_path)
        match = compiled.search(strip_image_extensions(file_name))
        try:
            identity_ID, camera_ID = int(match.group("pid")), int(match.group("camid"))
        except (AttributeError, TypeError, ValueError):
            # No match, a group that did not participate, or a group that is not an integer.
            failures.append(image_file_path)
            continue
        identity_IDs.append(identity_ID)
        camera_IDs.append(camera_ID)
    if failures:
        examples = "\n  ".join(failures[:5])
        raise ValueError(layout_message(
            f"{len(failures)} file name(s) do not match the pattern {compiled.pattern!r} (groups pid and camid "
            f"must be integers), e.g.\n  {examples}", dataset_name, layout))
    return identity_IDs, camera_IDs


def make_dataframe(image_file_paths, identity_IDs, camera_IDs):
    """DataFrame with the standard columns and dtypes (str, int64, int64)."""
    return pd.DataFrame({
        "image_file_path": [str(path) for path in image_file_paths],
        "identity_ID": np.asarray(identity_IDs, dtype=np.int64).reshape(-1),
        "camera_ID": np.asarray(camera_IDs, dtype=np.int64).reshape(-1),
    }, columns=list(COLUMNS))


def load_image_folder(folder_path, pattern, dataset_name, layout):
    """DataFrame of one split folder whose file names encode the IDs (junk not yet removed)."""
    image_file_paths = list_image_files(folder_path, dataset_name, layout)
    identity_IDs, camera_IDs = parse_file_names(image_file_paths, pattern, dataset_name, layout)
    return make_dataframe(image_file_paths, identity_IDs, camera_IDs)


def remove_junk(dataframe):
    """Rows with identity -1 removed (index reset); distractors (identity 0) are kept."""
    return dataframe[dataframe["identity_ID"] != JUNK_IDENTITY_ID].reset_index(drop=True)


def fit_label_encoder(train_df):
    """``OrderedDict(identity_ID=LabelEncoder)`` fitted on the train identities (classes sorted ascending)."""
    label_encoder = LabelEncoder()
    label_encoder.fit(train_df["identity_ID"].to_numpy())
    return OrderedDict(identity_ID=label_encoder)


def warn_on_count_mismatch(dataset_name, actual_counts, expected_counts):
    """One warnings.warn (DatasetCountWarning) listing the counts that differ from the standard ones."""
    mismatches = [f"{key} has {actual_counts[key]:,} but the standard release has {expected:,}"
                  for key, expected in (expected_counts or {}).items()
                  if actual_counts.get(key) is not None and actual_counts[key] != expected]
    if mismatches:
        warnings.warn(
            f"{dataset_name}: {'; '.join(mismatches)}. The download may be incomplete or a different version; "
            "results will not be comparable with published numbers.", DatasetCountWarning, stacklevel=2)


def finalize_splits(train_df, query_df, gallery_df, dataset_name, layout):
    """Junk removed from every split, validity checked, label encoder fitted on train."""
    splits = []
    for split_name, dataframe in zip(SPLIT_NAMES, (train_df, query_df, gallery_df)):
        dataframe = remove_junk(dataframe)
        if dataframe.empty:
            raise ValueError(layout_message(
                f"The {split_name} split is empty (after removing junk images of identity -1).",
                dataset_name, layout))
        if dataframe.isna().to_numpy().any():
            raise ValueError(f"{dataset_name}: the {split_name} split has missing values.")
        splits.append(dataframe)
    train_df, query_df, gallery_df = splits
    return train_df, query_df, gallery_df, fit_label_encoder(train_df)


def load_split_folders(dataset_folder, split_folders, dataset_name, layout, pattern=None, expected_counts=None):
    """The three splits of a Market-style dataset whose file names encode the IDs.

    ``split_folders`` maps ``train``/``query``/``gallery`` to sub-folder names of ``dataset_folder``.
    ``expected_counts`` (optional) maps ``"<sub-folder> images"`` and ``"train identities"`` to the standard
    counts, checked before junk removal and reported with DatasetCountWarning.
    """
    dataframes = {split_name: load_image_folder(os.path.join(dataset_folder, split_folders[split_name]),
                                                pattern, dataset_name, layout)
                  for split_name in SPLIT_NAMES}
    if expected_counts:
        actual_counts = {f"{split_folders[name]} images": len(df) for name, df in dataframes.items()}
        train_identities = set(dataframes["train"]["identity_ID"]) - {JUNK_IDENTITY_ID}
        actual_counts["train identities"] = len(train_identities)
        warn_on_count_mismatch(dataset_name, actual_counts, expected_counts)
    return finalize_splits(dataframes["train"], dataframes["query"], dataframes["gallery"], dataset_name, layout)
