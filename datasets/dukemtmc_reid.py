"""DukeMTMC-reID (Zheng et al., ICCV 2017): Market-style folders, names PPPP_cX_fFFFFFFF.jpg."""
from datasets.common import find_dataset_folder, load_split_folders

DATASET_NAME = "DukeMTMC_reID"
FOLDER_NAME = "DukeMTMC-reID"
SPLIT_FOLDERS = dict(train="bounding_box_train", query="query", gallery="bounding_box_test")
FILE_NAME_PATTERN = r"^(?P<pid>-?\d+)_c(?P<camid>\d+)"
EXPECTED_COUNTS = {
    "bounding_box_train images": 16522,
    "bounding_box_test images": 17661,  # includes the 408 distractor identities
    "query images": 2228,
    "train identities": 702,
}

LAYOUT = f"""\
<root_folder_path>/
└── {FOLDER_NAME}/
    ├── bounding_box_train/   train images, e.g. 0001_c2_f0046182.jpg (identity 0001, camera 2)
    ├── bounding_box_test/    gallery images
    └── query/                query images
File names: <identity>_c<camera>_..., any of .jpg/.jpeg/.png/.bmp."""


def load_dukemtmc_reid(root_folder_path):
    """``(train_df, query_df, gallery_df, label_encoder_dict)`` of ``<root>/DukeMTMC-reID``."""
    dataset_folder = find_dataset_folder(root_folder_path, (FOLDER_NAME,), tuple(SPLIT_FOLDERS.values()),
                                         DATASET_NAME, LAYOUT)
    return load_split_folders(dataset_folder, SPLIT_FOLDERS, DATASET_NAME, LAYOUT,
                              pattern=FILE_NAME_PATTERN, expected_counts=EXPECTED_COUNTS)
