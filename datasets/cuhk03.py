"""CUHK03 (Li et al., CVPR 2014) under the new 767/700 protocol of Zhong et al. (CVPR 2017), as CUHK03-NP.

The new protocol's split is defined by ``cuhk03_new_protocol_config_labeled.mat`` and
``cuhk03_new_protocol_config_detected.mat``, released by Zhong et al. with their re-ranking code
(https://github.com/zhunzhong07/person-re-ranking, folder ``evaluation/data/CUHK03``). CUHK03-NP
(same repository, folder ``CUHK03-NP``) is that split materialised as Market-style folders, one set for the
manually labeled boxes and one for the DPM-detected boxes: 767 train identities, 700 test identities, one
query image per test identity and camera. Evaluate it with the standard (Market) metric, not the old
single-shot CUHK03 metric.
"""
from datasets.common import find_dataset_folder, load_split_folders

FOLDER_NAMES = ("cuhk03-np", "CUHK03-NP")
SPLIT_FOLDERS = dict(train="bounding_box_train", query="query", gallery="bounding_box_test")
FILE_NAME_PATTERN = r"^(?P<pid>-?\d+)_c(?P<camid>\d+)"
# dataset name -> (sub-folder of cuhk03-np, standard counts)
VARIANTS = {
    "CUHK03_labeled": ("labeled", {
        "bounding_box_train images": 7368, "bounding_box_test images": 5328, "query images": 1400,
        "train identities": 767}),
    "CUHK03_detected": ("detected", {
        "bounding_box_train images": 7365, "bounding_box_test images": 5332, "query images": 1400,
        "train identities": 767}),
}

LAYOUT = """\
<root_folder_path>/
└── cuhk03-np/                (CUHK03-NP of Zhong et al.; "CUHK03-NP/" is accepted too)
    ├── labeled/              CUHK03_labeled: manually cropped boxes
    │   ├── bounding_box_train/   7,368 images of 767 identities, e.g. 0001_c1_1.png (identity 1, camera 1)
    │   ├── bounding_box_test/    5,328 gallery images of 700 identities
    │   └── query/                1,400 query images
    └── detected/             CUHK03_detected: DPM-detected boxes
        ├── bounding_box_train/   7,365 images
        ├── bounding_box_test/    5,332 images
        └── query/                1,400 images
File names: <identity>_c<camera>_<index>, any of .png/.jpg/.jpeg/.bmp."""


def load_cuhk03(root_folder_path, dataset_name="CUHK03_labeled"):
    """``(train_df, query_df, gallery_df, label_encoder_dict)`` of ``<root>/cuhk03-np/{labeled,detected}``."""
    if dataset_name not in VARIANTS:
        raise ValueError(f"Unknown CUHK03 variant {dataset_name!r}; expected one of {sorted(VARIANTS)}.")
    sub_folder, expected_counts = VARIANTS[dataset_name]
    # Also accept root = cuhk03-np/ itself or root = cuhk03-np/<sub_folder>/ itself.
    folder_names = tuple(f"{folder_name}/{sub_folder}" for folder_name in FOLDER_NAMES) + (sub_folder,)
    dataset_folder = find_dataset_folder(root_folder_path, folder_names, tuple(SPLIT_FOLDERS.values()),
                                         dataset_name, LAYOUT)
    return load_split_folders(dataset_folder, SPLIT_FOLDERS, dataset_name, LAYOUT,
                              pattern=FILE_NAME_PATTERN, expected_counts=expected_counts)
