"""Generic dataset for your own data: ``<root>/{train,query,gallery}/`` folders or ``<root>/{split}.csv`` files.

Per split, a CSV file ``<root>/<split>.csv`` wins over the folder ``<root>/<split>/``:

* folder: every .jpg/.jpeg/.png/.bmp directly inside it; identity and camera are parsed from the file name
  (without its image extension(s)) by ``re.search(pattern, name)``, which must yield the integer named groups
  ``pid`` and ``camid``. The default, ``DEFAULT_FILE_NAME_PATTERN`` = ``^(?P<pid>-?\\d+)_c(?P<camid>\\d+)``,
  reads Market-style ``0002_c1s1_000451_03.jpg`` and ``0001_c1_....jpg``. Pass your own to
  ``load_folder_dataset(root, pattern=...)``, e.g. ``r"^person(?P<pid>\\d+)_cam(?P<camid>\\d+)"``.
* CSV: columns ``image_file_path`` (absolute, or relative to ``<root>``), ``identity_ID``, ``camera_ID``.

As for the benchmarks, identity -1 marks junk (dropped) and identity 0 distractors (kept, never a match);
only the train split defines the classes.
"""
import os

import pandas as pd

from datasets.common import (DEFAULT_FILE_NAME_PATTERN, SPLIT_NAMES, check_root_folder, compile_file_name_pattern,
                             finalize_splits, is_image_file_name, layout_message, load_image_folder, make_dataframe)

__all__ = ["DEFAULT_FILE_NAME_PATTERN", "load_folder_dataset"]

DATASET_NAME = "Folder"
LAYOUT = """\
<root_folder_path>/
├── train/      training images, e.g. 0002_c1s1_000451_03.jpg or 0001_c1_0001.png (identity, camera)
├── query/      query images, same naming
└── gallery/    gallery images, same naming (identity 0 = distractor, -1 = junk, dropped)
or, per split, a CSV file instead of the folder:
├── train.csv   columns image_file_path (absolute or relative to root), identity_ID, camera_ID
├── query.csv
└── gallery.csv
Folder file names are parsed with re.search(pattern, file name without extension); the pattern needs the
integer named groups pid and camid (pattern in use: {pattern})."""


def to_integers(column, csv_file_path, layout):
    """int64 values of a CSV column; ValueError when a value is not an integer (``3.5``, ``abc``)."""
    try:
        numbers = pd.to_numeric(column)
        integers = numbers.astype("int64")
    except (ValueError, TypeError) as exception:
        raise ValueError(layout_message(f"{csv_file_path}: {column.name} must hold integers ({exception}).",
                                        DATASET_NAME, layout)) from exception
    if not (integers == numbers).all():
        raise ValueError(layout_message(f"{csv_file_path}: {column.name} must hold integers.", DATASET_NAME,
                                        layout))
    return integers.to_numpy()


def read_csv_split(csv_file_path, root_folder_path, layout):
    """DataFrame of one split listed in a CSV file (paths resolved against the root, existence checked)."""
    try:
        dataframe = pd.read_csv(csv_file_path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as exception:
        raise ValueError(layout_message(f"Cannot read {csv_file_path}: {exception}", DATASET_NAME,
                                        layout)) from exception
    missing_columns = [column for column in ("image_file_path", "identity_ID", "camera_ID")
                       if column not in dataframe.columns]
    if missing_columns:
        raise ValueError(layout_message(f"{csv_file_path} lacks the column(s) {missing_columns} "
                                        f"(it has {list(dataframe.columns)}).", DATASET_NAME, layout))
    if dataframe.empty:
        raise ValueError(layout_message(f"{csv_file_path} lists no image.", DATASET_NAME, layout))
    if dataframe[["image_file_path", "identity_ID", "camera_ID"]].isna().to_numpy().any():
        raise ValueError(f"{csv_file_path} has empty cells in image_file_path, identity_ID or camera_ID.")
    identity_IDs, camera_IDs = (to_integers(dataframe[column], csv_file_path, layout)
                                for column in ("identity_ID", "camera_ID"))
    image_file_paths = [os.path.abspath(os.path.join(root_folder_path, str(path)))
                        for path in dataframe["image_file_path"]]
    missing_files = [path for path in image_file_paths if not os.path.isfile(path)]
    if missing_files:
        examples = "\n  ".join(missing_files[:5])
        raise FileNotFoundError(f"{csv_file_path}: {len(missing_files)} listed image(s) do not exist "
                                f"(relative paths are relative to {root_folder_path}), e.g.\n  {examples}")
    not_images = [path for path in image_file_paths if not is_image_file_name(os.path.basename(path))]
    if not_images:
        raise ValueError(f"{csv_file_path}: {len(not_images)} listed file(s) are not .jpg/.jpeg/.png/.bmp "
                         f"images, e.g. {not_images[0]}")
    return make_dataframe(image_file_paths, identity_IDs, camera_IDs)


def load_folder_dataset(root_folder_path, pattern=None):
    """``(train_df, query_df, gallery_df, label_encoder_dict)`` of a user's dataset (see the module doc).

    ``pattern``: regex (str or compiled) with named groups ``pid`` and ``camid`` applied to folder file names;
    None selects ``DEFAULT_FILE_NAME_PATTERN``.
    """
    compiled_pattern = compile_file_name_pattern(pattern)
    layout = LAYOUT.format(pattern=compiled_pattern.pattern)
    root_folder_path = check_root_folder(root_folder_path, DATASET_NAME, layout)
    dataframes = []
    for split_name in SPLIT_NAMES:
        csv_file_path = os.path.join(root_folder_path, f"{split_name}.csv")
        if os.path.isfile(csv_file_path):
            dataframes.append(read_csv_split(csv_file_path, root_folder_path, layout))
        else:
            dataframes.append(load_image_folder(os.path.join(root_folder_path, split_name), compiled_pattern,
                                                DATASET_NAME, layout))
    return finalize_splits(*dataframes, DATASET_NAME, layout)
