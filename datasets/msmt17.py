"""MSMT17 (Wei et al., CVPR 2018): image folders plus list files.

``MSMT17`` is the V2 release (faces blurred) in ``MSMT17_V2/{mask_train_v2,mask_test_v2}``; ``MSMT17_V1`` is
the first release in ``MSMT17_V1/{train,test}``. Both have list files whose lines read
``<identity folder>/<file name> <identity>``, e.g. ``0000/0000_000_01_0303morning_0015_0.jpg 0``, and the
camera is the third ``_``-separated field of the file name (``01`` -> camera 1, cameras 1..15).
train = list_train.txt + list_val.txt (as in the original code), query = list_query.txt,
gallery = list_gallery.txt.
"""
import os

import pandas as pd

from datasets.common import (find_dataset_folder, finalize_splits, layout_message, make_dataframe,
                             strip_image_extensions, warn_on_count_mismatch)

# dataset name -> (folder name, train images folder, test images folder)
VERSIONS = {
    "MSMT17": ("MSMT17_V2", "mask_train_v2", "mask_test_v2"),
    "MSMT17_V1": ("MSMT17_V1", "train", "test"),
}
LIST_FILES = dict(train=("list_train.txt", "list_val.txt"), query=("list_query.txt",),
                  gallery=("list_gallery.txt",))
EXPECTED_COUNTS = {
    "train images (list_train + list_val)": 32621,
    "query images": 11659,
    "gallery images": 82161,
    "train identities": 1041,
}

LAYOUT_TEMPLATE = """\
<root_folder_path>/
└── {folder_name}/
    ├── {train_folder}/{train_padding}train and validation images: 0000/0000_000_01_0303morning_0015_0.jpg, ...
    ├── {test_folder}/{test_padding}query and gallery images: 0000/0000_000_01_0303morning_0036_1.jpg, ...
    ├── list_train.txt      lines "<identity folder>/<file name> <identity>", images in {train_folder}/
    ├── list_val.txt        same format, images in {train_folder}/ (merged into train)
    ├── list_query.txt      same format, images in {test_folder}/
    └── list_gallery.txt    same format, images in {test_folder}/
The camera is the third "_"-separated field of the file name (01 -> camera 1)."""


def get_layout(dataset_name):
    folder_name, train_folder, test_folder = VERSIONS[dataset_name]
    return LAYOUT_TEMPLATE.format(folder_name=folder_name, train_folder=train_folder, test_folder=test_folder,
                                  train_padding=" " * max(1, 19 - len(train_folder)),
                                  test_padding=" " * max(1, 19 - len(test_folder)))


def read_list_file(list_file_path, images_folder, dataset_name, layout):
    """DataFrame of the images listed in one MSMT17 list file (paths checked, IDs cross-checked)."""
    if not os.path.isfile(list_file_path):
        raise FileNotFoundError(layout_message(f"Missing list file {list_file_path}.", dataset_name, layout))
    if not os.path.isdir(images_folder):
        raise FileNotFoundError(layout_message(f"Missing folder {images_folder}.", dataset_name, layout))
    image_file_paths, identity_IDs, camera_IDs = [], [], []
    folder_contents = {}  # one listdir per identity folder instead of one stat per image
    with open(list_file_path, encoding="utf-8") as list_file:
        for line_number, line in enumerate(list_file, start=1):
            if not line.strip():
                continue
            location = f"{list_file_path}, line {line_number}: {line.strip()!r}"
            tokens = line.split()
            relative_parts = tokens[0].replace("\\", "/").split("/") if tokens else []
            fields = strip_image_extensions(relative_parts[-1]).split("_") if relative_parts else []
            try:
                if len(tokens) != 2 or len(relative_parts) != 2 or len(fields) < 3:
                    raise ValueError("malformed line")
                identity_ID = int(tokens[1])
                folder_identity_ID = int(relative_parts[0])
                camera_ID = int(fields[2])
            except ValueError as exception:
                raise ValueError(layout_message(
                    f"Cannot parse {location} (expected '<identity folder>/<file name> <identity>' with a file "
                    f"name like 0000_000_01_0303morning_0015_0.jpg).", dataset_name, layout)) from exception
            if identity_ID != folder_identity_ID:
                raise ValueError(f"{location}: the identity {identity_ID} differs from its folder "
                                 f"{relative_parts[0]}.")
            identity_folder = os.path.join(images_folder, relative_parts[0])
            if identity_folder not in folder_contents:
                folder_contents[identity_folder] = (set(os.listdir(identity_folder))
                                                    if os.path.isdir(identity_folder) else set())
            if relative_parts[1] not in folder_contents[identity_folder]:
                raise FileNotFoundError(layout_message(
                    f"{location}: image {os.path.join(identity_folder, relative_parts[1])} does not exist.",
                    dataset_name, layout))
            image_file_paths.append(os.path.join(identity_folder, relative_parts[1]))
            identity_IDs.append(identity_ID)
            camera_IDs.append(camera_ID)
    if not image_file_paths:
        raise ValueError(layout_message(f"List file {list_file_path} lists no image.", dataset_name, layout))
    return make_dataframe(image_file_paths, identity_IDs, camera_IDs)


def load_msmt17(root_folder_path, dataset_name="MSMT17"):
    """``(train_df, query_df, gallery_df, label_encoder_dict)`` of MSMT17 V2 (``"MSMT17"``) or V1
    (``"MSMT17_V1"``)."""
    if dataset_name not in VERSIONS:
        raise ValueError(f"Unknown MSMT17 version {dataset_name!r}; expected one of {sorted(VERSIONS)}.")
    folder_name, train_folder, test_folder = VERSIONS[dataset_name]
    layout = get_layout(dataset_name)
    required_entries = (train_folder, test_folder) + sum(LIST_FILES.values(), ())
    dataset_folder = find_dataset_folder(root_folder_path, (folder_name,), required_entries, dataset_name, layout)
    images_folders = dict(train=train_folder, query=test_folder, gallery=test_folder)
    dataframes = {}
    for split_name, list_file_names in LIST_FILES.items():
        images_folder = os.path.join(dataset_folder, images_folders[split_name])
        dataframes[split_name] = pd.concat(
            [read_list_file(os.path.join(dataset_folder, list_file_name), images_folder, dataset_name, layout)
             for list_file_name in list_file_names], ignore_index=True)
    warn_on_count_mismatch(dataset_name, {
        "train images (list_train + list_val)": len(dataframes["train"]),
        "query images": len(dataframes["query"]),
        "gallery images": len(dataframes["gallery"]),
        "train identities": dataframes["train"]["identity_ID"].nunique(),
    }, EXPECTED_COUNTS)
    return finalize_splits(dataframes["train"], dataframes["query"], dataframes["gallery"], dataset_name, layout)
