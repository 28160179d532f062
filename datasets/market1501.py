"""Market-1501 (Zheng et al., ICCV 2015): bounding_box_train / query / bounding_box_test."""
from datasets.common import find_dataset_folder, load_split_folders

DATASET_NAME = "Market1501"
FOLDER_NAME = "Market-1501-v15.09.15"
SPLIT_FOLDERS = dict(train="bounding_box_train", query="query", gallery="bounding_box_test")
# Market names are PPPP_cXsY_FFFFFF_NN.jpg; identity -1 = junk (removed), 0000 = distractor (kept).
FILE_NAME_PATTERN = r"^(?P<pid>-?\d+)_c(?P<camid>\d)"
EXPECTED_COUNTS = {
    "bounding_box_train images": 12936,
    "bounding_box_test images": 19732,  # 15,913 after removing the 3,819 junk images
    "query images": 3368,
    "train identities": 751,
}

LAYOUT_TEMPLATE = """\
<root_folder_path>/
└── {folder_name}/
    ├── bounding_box_train/   train images, e.g. 0002_c1s1_000451_03.jpg (identity 0002, camera 1)
    ├── bounding_box_test/    gallery images (-1_* junk is dropped, 0000_* distractors are kept)
    └── query/                query images
File names: <identity>_c<camera>..., any of .jpg/.jpeg/.png/.bmp."""
LAYOUT = LAYOUT_TEMPLATE.format(folder_name=FOLDER_NAME)


def read_market_layout(dataset_folder, dataset_name=DATASET_NAME, layout=LAYOUT, expected_counts=None):
    """Splits of a folder in Market-1501 layout (also used for the synthetic dataset, without counts)."""
    return load_split_folders(dataset_folder, SPLIT_FOLDERS, dataset_name, layout,
                              pattern=FILE_NAME_PATTERN, expected_counts=expected_counts)


def load_market1501(root_folder_path):
    """``(train_df, query_df, gallery_df, label_encoder_dict)`` of ``<root>/Market-1501-v15.09.15``."""
    dataset_folder = find_dataset_folder(root_folder_path, (FOLDER_NAME,), tuple(SPLIT_FOLDERS.values()),
                                         DATASET_NAME, LAYOUT)
    return read_market_layout(dataset_folder, expected_counts=EXPECTED_COUNTS)
