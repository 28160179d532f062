"""Dataset loaders on tiny fake trees of every layout, plus the real Market-1501 when it is present.

Expected rows are written by hand in each test (file name -> identity, camera), never taken from the loaders.
"""
import os
import re
import sys
import types
import warnings
from collections import OrderedDict

import cv2
import numpy as np
import pandas as pd
import pytest

import conftest
import datasets
from datasets.common import DatasetCountWarning

IMAGE_BYTES = {}


def image_bytes(extension):
    """Bytes of a tiny 8x4 image encoded as ``extension`` (cached: one encode per format)."""
    if extension not in IMAGE_BYTES:
        image = np.random.RandomState(0).randint(0, 255, size=(8, 4, 3)).astype(np.uint8)
        encode_extension = ".jpg" if extension.lower() in (".jpg", ".jpeg") else extension.lower()
        success, encoded = cv2.imencode(encode_extension, image)
        assert success
        IMAGE_BYTES[extension] = encoded.tobytes()
    return IMAGE_BYTES[extension]


def write_images(folder, file_names):
    os.makedirs(folder, exist_ok=True)
    for file_name in file_names:
        match = re.search(r"\.(jpg|jpeg|png|bmp)$", file_name, re.IGNORECASE)
        with open(os.path.join(folder, file_name), "wb") as image_file:
            image_file.write(image_bytes("." + match.group(1)))


def write_stray_files(folder):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "Thumbs.db"), "wb") as stray_file:
        stray_file.write(b"\x00\x01thumbs")
    with open(os.path.join(folder, "readme.txt"), "w") as stray_file:
        stray_file.write("not an image")


def expected_frame(folder, rows):
    """Rows (file name, identity, camera) -> expected DataFrame: junk dropped, sorted by file name."""
    rows = sorted(row for row in rows if row[1] != -1)
    return pd.DataFrame({"image_file_path": [os.path.join(os.path.abspath(folder), row[0]) for row in rows],
                         "identity_ID": np.array([row[1] for row in rows], dtype=np.int64),
                         "camera_ID": np.array([row[2] for row in rows], dtype=np.int64)})


def assert_frame(actual, expected):
    assert list(actual.columns) == ["image_file_path", "identity_ID", "camera_ID"]
    assert actual["identity_ID"].dtype == np.int64
    assert actual["camera_ID"].dtype == np.int64
    assert pd.api.types.is_string_dtype(actual["image_file_path"])
    assert all(isinstance(path, str) and os.path.isabs(path) for path in actual["image_file_path"])
    assert list(actual["image_file_path"]) == list(expected["image_file_path"])
    assert list(actual["identity_ID"]) == list(expected["identity_ID"])
    assert list(actual["camera_ID"]) == list(expected["camera_ID"])
    assert list(actual.index) == list(range(len(actual)))


def assert_label_encoder(label_encoder_dict, train_identities):
    assert isinstance(label_encoder_dict, OrderedDict)
    assert list(label_encoder_dict) == ["identity_ID"]
    assert list(label_encoder_dict["identity_ID"].classes_) == sorted(set(train_identities))


# Market-1501 style rows: (file name, identity, camera).
MARKET_ROWS = {
    "bounding_box_train": [("0002_c1s1_000451_03.jpg", 2, 1), ("0002_c2s1_000301_01.jpg", 2, 2),
                           ("0007_c3s3_077419_03.jpg", 7, 3), ("0007_c6s3_077469_02.jpg", 7, 6),
                           ("1488_c1s6_023021_00.jpg.jpg", 1488, 1), ("-1_c1s1_000401_03.jpg", -1, 1)],
    "query": [("0002_c5s1_000401_00.jpg", 2, 5), ("0007_c4s2_000301_00.jpg", 7, 4),
              ("1488_c2s3_065527_00.jpg.jpg", 1488, 2)],
    "bounding_box_test": [("0002_c3s1_000551_01.jpg", 2, 3), ("0007_c1s1_000626_02.jpg", 7, 1),
                          ("0000_c6s1_000601_04.jpg", 0, 6), ("0000_c1s6_023071_04.jpg.jpg", 0, 1),
                          ("-1_c4s6_022316_11.jpg.jpg", -1, 4), ("-1_c1s1_000401_03.jpg", -1, 1),
                          ("1488_c3s3_071344_00.jpg", 1488, 3)],
}


def make_split_tree(dataset_folder, rows_by_folder, with_strays=True):
    for folder_name, rows in rows_by_folder.items():
        write_images(os.path.join(dataset_folder, folder_name), [row[0] for row in rows])
        if with_strays:
            write_stray_files(os.path.join(dataset_folder, folder_name))


def check_market_style(result, dataset_folder, rows_by_folder, folders=("bounding_box_train", "query",
                                                                        "bounding_box_test")):
    train_df, query_df, gallery_df, label_encoder_dict = result
    for actual, folder_name in zip((train_df, query_df, gallery_df), folders):
        assert_frame(actual, expected_frame(os.path.join(dataset_folder, folder_name), rows_by_folder[folder_name]))
    assert_label_encoder(label_encoder_dict, [row[1] for row in rows_by_folder[folders[0]] if row[1] != -1])


def test_dataset_names_and_unknown_name(tmp_path):
    assert datasets.DATASET_NAMES == ("Market1501", "DukeMTMC_reID", "MSMT17", "MSMT17_V1", "CUHK03_labeled",
                                      "CUHK03_detected", "Synthetic", "Folder")
    with pytest.raises(ValueError) as error:
        datasets.load_accumulated_info_of_dataset(str(tmp_path), "Market-1501")
    for name in datasets.DATASET_NAMES:
        assert name in str(error.value)


def test_market1501_parsing_junk_distractors_strays_and_count_warning(tmp_path):
    dataset_folder = tmp_path / "Market-1501-v15.09.15"
    make_split_tree(str(dataset_folder), MARKET_ROWS)
    with pytest.warns(DatasetCountWarning, match="bounding_box_train images has 6 but the standard release "
                                                 "has 12,936"):
        result = datasets.load_accumulated_info_of_dataset(str(tmp_path), "Market1501")
    check_market_style(result, str(dataset_folder), MARKET_ROWS)
    train_df, query_df, gallery_df, _ = result
    assert -1 not in set(train_df["identity_ID"]) | set(gallery_df["identity_ID"])
    assert (gallery_df["identity_ID"] == 0).sum() == 2  # distractors kept
    assert len(gallery_df) == 5 and len(train_df) == 5 and len(query_df) == 3
    assert not any(path.endswith(("Thumbs.db", ".txt")) for df in result[:3] for path in df["image_file_path"])


def test_market1501_accepts_the_dataset_folder_itself_and_all_image_extensions(tmp_path):
    rows = {"bounding_box_train": [("0001_c1s1_000001_00.jpeg", 1, 1), ("0001_c2s1_000001_00.PNG", 1, 2),
                                   ("0003_c3s1_000001_00.bmp", 3, 3)],
            "query": [("0001_c4s1_000001_00.JPG", 1, 4)],
            "bounding_box_test": [("0003_c5s1_000001_00.png", 3, 5)]}
    make_split_tree(str(tmp_path), rows)
    with pytest.warns(DatasetCountWarning):
        result = datasets.load_accumulated_info_of_dataset(str(tmp_path), "Market1501")
    check_market_style(result, str(tmp_path), rows)


def test_dukemtmc_reid(tmp_path):
    rows = {"bounding_box_train": [("0001_c2_f0046182.jpg", 1, 2), ("0001_c8_f0051302.jpg", 1, 8),
                                   ("0005_c5_f0051781.jpg", 5, 5)],
            "query": [("0005_c2_f0046985.jpg", 5, 2)],
            "bounding_box_test": [("0005_c1_f0048110.jpg", 5, 1), ("0006_c7_f0073062.jpg", 6, 7)]}
    dataset_folder = tmp_path / "DukeMTMC-reID"
    make_split_tree(str(dataset_folder), rows)
    with pytest.warns(DatasetCountWarning, match="train identities has 2 but the standard release has 702"):
        result = datasets.load_accumulated_info_of_dataset(str(tmp_path), "DukeMTMC_reID")
    check_market_style(result, str(dataset_folder), rows)


@pytest.mark.parametrize("dataset_name, folder_name, train_folder, test_folder", [
    ("MSMT17", "MSMT17_V2", "mask_train_v2", "mask_test_v2"),
    ("MSMT17_V1", "MSMT17_V1", "train", "test")])
def test_msmt17_list_files(tmp_path, dataset_name, folder_name, train_folder, test_folder):
    dataset_folder = tmp_path / folder_name
    # (list file, images folder, relative path, identity, camera); list order is kept, val appended to train.
    listed = {
        "list_train.txt": [("0000/0000_000_01_0303morning_0015_0.jpg", 0, 1),
                           ("0000/0000_001_15_0303morning_0016_1.jpg", 0, 15),
                           ("0003/0003_000_07_0303noon_0100_2.jpg", 3, 7)],
        "list_val.txt": [("0003/0003_001_02_0303noon_0101_0.jpg", 3, 2)],
        "list_query.txt": [("0012/0012_000_10_0113morning_0001_0.jpg", 12, 10)],
        "list_gallery.txt": [("0012/0012_001_03_0113morning_0002_0.jpg", 12, 3),
                             ("0013/0013_000_11_0113afternoon_0003_1.jpg", 13, 11)],
    }
    images_folder = {"list_train.txt": train_folder, "list_val.txt": train_folder,
                     "list_query.txt": test_folder, "list_gallery.txt": test_folder}
    for list_file_name, rows in listed.items():
        for relative_path, _, _ in rows:
            identity_folder, file_name = relative_path.split("/")
            write_images(str(dataset_folder / images_folder[list_file_name] / identity_folder), [file_name])
        with open(dataset_folder / list_file_name, "w") as list_file:
            list_file.write("".join(f"{path} {identity}\n" for path, identity, _ in rows))
    write_stray_files(str(dataset_folder / train_folder / "0000"))

    with pytest.warns(DatasetCountWarning, match="query images has 1 but the standard release has 11,659"):
        train_df, query_df, gallery_df, label_encoder_dict = datasets.load_accumulated_info_of_dataset(
            str(tmp_path), dataset_name)

    def expected(list_file_names):
        rows = [(str(dataset_folder / images_folder[name] / path), identity, camera)
                for name in list_file_names for path, identity, camera in listed[name]]
        return pd.DataFrame(rows, columns=["image_file_path", "identity_ID", "camera_ID"])

    assert_frame(train_df, expected(["list_train.txt", "list_val.txt"]))
    assert_frame(query_df, expected(["list_query.txt"]))
    assert_frame(gallery_df, expected(["list_gallery.txt"]))
    assert_label_encoder(label_encoder_dict, [0, 3])

    # A listed image that does not exist, an identity that contradicts its folder, a missing list file.
    with open(dataset_folder / "list_query.txt", "a") as list_file:
        list_file.write("0012/0012_000_04_0113morning_0009_0.jpg 12\n")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datasets.load_accumulated_info_of_dataset(str(tmp_path), dataset_name)
    with open(dataset_folder / "list_query.txt", "w") as list_file:
        list_file.write("0012/0012_000_10_0113morning_0001_0.jpg 13\n")
    with pytest.raises(ValueError, match="differs from its folder"):
        datasets.load_accumulated_info_of_dataset(str(tmp_path), dataset_name)
    with open(dataset_folder / "list_query.txt", "w") as list_file:
        list_file.write("0012/0012_000_10_0113morning_0001_0.jpg\n")
    with pytest.raises(ValueError) as error:
        datasets.load_accumulated_info_of_dataset(str(tmp_path), dataset_name)
    assert "line 1" in str(error.value) and "list_gallery.txt" in str(error.value)
    os.remove(dataset_folder / "list_val.txt")
    with pytest.raises(FileNotFoundError) as error:
        datasets.load_accumulated_info_of_dataset(str(tmp_path), dataset_name)
    assert "list_val.txt" in str(error.value) and f"{folder_name}/" in str(error.value)
    assert f"{train_folder}/" in str(error.value)


@pytest.mark.parametrize("dataset_name, sub_folder, top_folder", [
    ("CUHK03_labeled", "labeled", "cuhk03-np"), ("CUHK03_detected", "detected", "cuhk03-np"),
    ("CUHK03_labeled", "labeled", "CUHK03-NP")])
def test_cuhk03_np(tmp_path, dataset_name, sub_folder, top_folder):
    rows = {"bounding_box_train": [("0001_c1_1.png", 1, 1), ("0001_c2_2.png", 1, 2), ("0004_c1_1.png", 4, 1)],
            "query": [("0010_c1_1.png", 10, 1), ("0010_c2_3.png", 10, 2)],
            "bounding_box_test": [("0010_c1_2.png", 10, 1), ("0010_c2_1.png", 10, 2), ("0011_c2_1.png", 11, 2)]}
    other_rows = {name: [("0099_c1_1.png", 99, 1)] for name in rows}  # the other variant must not be read
    other_sub_folder = "detected" if sub_folder == "labeled" else "labeled"
    make_split_tree(str(tmp_path / top_folder / sub_folder), rows, with_strays=sub_folder == "labeled")
    make_split_tree(str(tmp_path / top_folder / other_sub_folder), other_rows)
    expected_train_images = 7368 if sub_folder == "labeled" else 7365
    with pytest.warns(DatasetCountWarning, match=f"has 3 but the standard release has {expected_train_images:,}"):
        result = datasets.load_accumulated_info_of_dataset(str(tmp_path), dataset_name)
    check_market_style(result, str(tmp_path / top_folder / sub_folder), rows)


def test_cuhk03_missing_folder_shows_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        datasets.load_accumulated_info_of_dataset(str(tmp_path), "CUHK03_detected")
    message = str(error.value)
    assert "cuhk03-np/" in message and "detected/" in message and "bounding_box_train/" in message


def test_synthetic_reads_market_layout_without_count_warnings(tmp_path, monkeypatch):
    calls = []

    def ensure_synthetic_dataset(root_folder_path, seed=0, **size_kwargs):
        calls.append(root_folder_path)
        dataset_folder = os.path.join(root_folder_path, "Synthetic-ReID")
        make_split_tree(dataset_folder, MARKET_ROWS)
        return dataset_folder

    fake_module = types.ModuleType("datasets.synthetic")
    fake_module.FOLDER_NAME = "Synthetic-ReID"
    fake_module.ensure_synthetic_dataset = ensure_synthetic_dataset
    monkeypatch.setitem(sys.modules, "datasets.synthetic", fake_module)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetCountWarning)
        result = datasets.load_accumulated_info_of_dataset(str(tmp_path), "Synthetic")
    assert calls == [str(tmp_path)]
    check_market_style(result, str(tmp_path / "Synthetic-ReID"), MARKET_ROWS)


FOLDER_ROWS = {"train": [("0002_c1s1_000451_03.jpg", 2, 1), ("0002_c2_0001.png", 2, 2), ("0005_c3_0001.jpg", 5, 3),
                         ("-1_c1_0001.jpg", -1, 1)],
               "query": [("0005_c1_0002.jpg", 5, 1), ("0009_c12_0001.jpg.jpg", 9, 12)],
               "gallery": [("0005_c2_0003.jpg", 5, 2), ("0009_c4_0002.bmp", 9, 4), ("0000_c4_0003.jpg", 0, 4)]}


def test_folder_dataset_default_pattern(tmp_path):
    make_split_tree(str(tmp_path), FOLDER_ROWS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetCountWarning)
        result = datasets.load_accumulated_info_of_dataset(str(tmp_path), "Folder")
    check_market_style(result, str(tmp_path), FOLDER_ROWS, folders=("train", "query", "gallery"))
    for pattern in (None, datasets.DEFAULT_FILE_NAME_PATTERN):
        again = datasets.load_folder_dataset(str(tmp_path), pattern=pattern)
        check_market_style(again, str(tmp_path), FOLDER_ROWS, folders=("train", "query", "gallery"))


def test_folder_dataset_pattern_override(tmp_path):
    rows = {"train": [("person12_cam3_frame7.jpg", 12, 3), ("person12_cam1_frame9.jpg", 12, 1),
                      ("person4_cam2_frame1.jpg", 4, 2)],
            "query": [("person20_cam1_frame1.jpg", 20, 1)],
            "gallery": [("person20_cam2_frame5.jpg", 20, 2), ("person0_cam2_frame6.jpg", 0, 2)]}
    make_split_tree(str(tmp_path), rows)
    pattern = r"^person(?P<pid>\d+)_cam(?P<camid>\d+)"
    check_market_style(datasets.load_folder_dataset(str(tmp_path), pattern=pattern), str(tmp_path), rows,
                       folders=("train", "query", "gallery"))
    check_market_style(datasets.load_folder_dataset(str(tmp_path), pattern=re.compile(pattern)), str(tmp_path),
                       rows, folders=("train", "query", "gallery"))
    # The default pattern does not read these names: the error names a file and the expected layout.
    with pytest.raises(ValueError) as error:
        datasets.load_accumulated_info_of_dataset(str(tmp_path), "Folder")
    assert "person" in str(error.value) and "train/" in str(error.value) and "gallery/" in str(error.value)
    with pytest.raises(ValueError, match="camid"):
        datasets.load_folder_dataset(str(tmp_path), pattern=r"^person(?P<pid>\d+)")
    with pytest.raises(ValueError, match="Invalid file name pattern"):
        datasets.load_folder_dataset(str(tmp_path), pattern=r"(?P<pid>\d+")


def test_folder_dataset_csv(tmp_path):
    write_images(str(tmp_path / "images"), ["a.jpg", "b.png", "c.jpg", "d.jpg", "e.jpg", "f.jpg"])
    absolute_d = str(tmp_path / "images" / "d.jpg")
    tables = {"train": [("images/a.jpg", 3, 1), ("images/b.png", 3, 2), ("images/c.jpg", 8, 1),
                        ("images/f.jpg", -1, 2)],
              "query": [(absolute_d, 8, 2)],
              "gallery": [("images/e.jpg", 8, 1), ("images/f.jpg", 0, 3)]}
    for split_name, rows in tables.items():
        pd.DataFrame(rows, columns=["image_file_path", "identity_ID", "camera_ID"]).to_csv(
            tmp_path / f"{split_name}.csv", index=False)
    train_df, query_df, gallery_df, label_encoder_dict = datasets.load_accumulated_info_of_dataset(
        str(tmp_path), "Folder")

    def expected(rows):  # CSV order kept, junk dropped
        return pd.DataFrame([(os.path.join(str(tmp_path), path), identity, camera)
                             for path, identity, camera in rows if identity != -1],
                            columns=["image_file_path", "identity_ID", "camera_ID"])

    assert_frame(train_df, expected(tables["train"]))
    assert_frame(query_df, expected(tables["query"]))
    assert_frame(gallery_df, expected(tables["gallery"]))
    assert_label_encoder(label_encoder_dict, [3, 8])

    pd.DataFrame([("images/missing.jpg", 8, 1)], columns=["image_file_path", "identity_ID", "camera_ID"]).to_csv(
        tmp_path / "query.csv", index=False)
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        datasets.load_accumulated_info_of_dataset(str(tmp_path), "Folder")
    pd.DataFrame([("images/d.jpg", 8)], columns=["image_file_path", "identity_ID"]).to_csv(
        tmp_path / "query.csv", index=False)
    with pytest.raises(ValueError, match="camera_ID"):
        datasets.load_accumulated_info_of_dataset(str(tmp_path), "Folder")
    pd.DataFrame([("images/d.jpg", "eight", 1)], columns=["image_file_path", "identity_ID", "camera_ID"]).to_csv(
        tmp_path / "query.csv", index=False)
    with pytest.raises(ValueError, match="identity_ID must hold integers"):
        datasets.load_accumulated_info_of_dataset(str(tmp_path), "Folder")
    pd.DataFrame([("images/d.jpg", 8.5, 1)], columns=["image_file_path", "identity_ID", "camera_ID"]).to_csv(
        tmp_path / "query.csv", index=False)
    with pytest.raises(ValueError, match="identity_ID must hold integers"):
        datasets.load_accumulated_info_of_dataset(str(tmp_path), "Folder")


def test_folder_dataset_mixes_csv_and_folder(tmp_path):
    make_split_tree(str(tmp_path), {"train": FOLDER_ROWS["train"], "gallery": FOLDER_ROWS["gallery"]})
    write_images(str(tmp_path / "q"), ["x.jpg"])
    pd.DataFrame([("q/x.jpg", 5, 7)], columns=["image_file_path", "identity_ID", "camera_ID"]).to_csv(
        tmp_path / "query.csv", index=False)
    train_df, query_df, gallery_df, _ = datasets.load_accumulated_info_of_dataset(str(tmp_path), "Folder")
    assert_frame(train_df, expected_frame(str(tmp_path / "train"), FOLDER_ROWS["train"]))
    assert_frame(query_df, pd.DataFrame({"image_file_path": [str(tmp_path / "q" / "x.jpg")], "identity_ID": [5],
                                         "camera_ID": [7]}))
    assert_frame(gallery_df, expected_frame(str(tmp_path / "gallery"), FOLDER_ROWS["gallery"]))


def assert_names_layout(message, entries):
    assert "Expected layout" in message
    for entry in entries:
        assert entry in message, (entry, message)


MARKET_LAYOUT_ENTRIES = ("Market-1501-v15.09.15/", "bounding_box_train/", "bounding_box_test/", "query/")


def test_missing_dataset_folder_and_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        datasets.load_accumulated_info_of_dataset(str(tmp_path), "Market1501")
    assert_names_layout(str(error.value), MARKET_LAYOUT_ENTRIES)
    with pytest.raises(FileNotFoundError) as error:
        datasets.load_accumulated_info_of_dataset(str(tmp_path / "nowhere"), "DukeMTMC_reID")
    assert_names_layout(str(error.value), ("DukeMTMC-reID/", "bounding_box_train/"))
    with pytest.raises(FileNotFoundError) as error:
        datasets.load_accumulated_info_of_dataset(str(tmp_path), "MSMT17")
    assert_names_layout(str(error.value), ("MSMT17_V2/", "mask_train_v2/", "list_gallery.txt"))
    with pytest.raises(FileNotFoundError) as error:
        datasets.load_accumulated_info_of_dataset(str(tmp_path), "Folder")
    assert_names_layout(str(error.value), ("train/", "query/", "gallery/", "train.csv"))


def test_missing_split_folder(tmp_path):
    make_split_tree(str(tmp_path / "Market-1501-v15.09.15"),
                    {name: MARKET_ROWS[name] for name in ("bounding_box_train", "bounding_box_test")})
    with pytest.raises(FileNotFoundError) as error:
        datasets.load_accumulated_info_of_dataset(str(tmp_path), "Market1501")
    assert "query" in str(error.value).splitlines()[0]
    assert_names_layout(str(error.value), MARKET_LAYOUT_ENTRIES)


def test_empty_split(tmp_path):
    dataset_folder = tmp_path / "Market-1501-v15.09.15"
    make_split_tree(str(dataset_folder), {name: MARKET_ROWS[name] for name in ("bounding_box_train", "query")})
    write_stray_files(str(dataset_folder / "bounding_box_test"))  # only Thumbs.db and a .txt
    with pytest.raises(ValueError) as error:
        datasets.load_accumulated_info_of_dataset(str(tmp_path), "Market1501")
    assert "bounding_box_test" in str(error.value).splitlines()[0] and "no image" in str(error.value)
    assert_names_layout(str(error.value), MARKET_LAYOUT_ENTRIES)


def test_split_with_only_junk_is_empty(tmp_path):
    make_split_tree(str(tmp_path), {"train": FOLDER_ROWS["train"], "query": [("-1_c1_0001.jpg", -1, 1)],
                                    "gallery": FOLDER_ROWS["gallery"]})
    with pytest.raises(ValueError) as error:
        datasets.load_accumulated_info_of_dataset(str(tmp_path), "Folder")
    assert "query split is empty" in str(error.value)
    assert_names_layout(str(error.value), ("train/", "query/", "gallery/"))


def test_unparsable_file_name(tmp_path):
    rows = {name: list(value) for name, value in MARKET_ROWS.items()}
    rows["query"].append(("IMG_0001.jpg", None, None))
    make_split_tree(str(tmp_path / "Market-1501-v15.09.15"), rows)
    with pytest.raises(ValueError) as error, warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetCountWarning)
        datasets.load_accumulated_info_of_dataset(str(tmp_path), "Market1501")
    assert "IMG_0001.jpg" in str(error.value)
    assert_names_layout(str(error.value), MARKET_LAYOUT_ENTRIES)


def test_modules_do_not_import_tensorflow():
    import subprocess
    code = ("import sys, datasets, datasets.common, datasets.market1501, datasets.dukemtmc_reid, datasets.msmt17, "
            "datasets.cuhk03, datasets.folder, datasets.splits; print('tensorflow' in sys.modules)")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert output.stdout.strip() == "False"


MARKET_FOLDER = os.path.join(conftest.SHARED_DATASETS, "Market-1501-v15.09.15")


@pytest.mark.skipif(not os.path.isdir(MARKET_FOLDER), reason="real Market-1501 not available")
def test_real_market1501():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetCountWarning)  # the shared copy is the standard release
        train_df, query_df, gallery_df, label_encoder_dict = datasets.load_accumulated_info_of_dataset(
            conftest.SHARED_DATASETS, "Market1501")
    # Independent reference: list the folders here (only *.jpg, which also matches *.jpg.jpg).
    reference = {}
    for folder_name in ("bounding_box_train", "query", "bounding_box_test"):
        names = sorted(name for name in os.listdir(os.path.join(MARKET_FOLDER, folder_name))
                       if name.endswith(".jpg") and not name.startswith("-1_"))
        reference[folder_name] = names
    assert len(train_df) == 12936 and train_df["identity_ID"].nunique() == 751
    assert len(query_df) == 3368 and query_df["identity_ID"].nunique() == 750
    # 750 test identities + the distractor identity 0 (752 is sometimes stated; the release has
    # 751, as torchreid reports and the listing above confirms).
    assert len(gallery_df) == 15913 and gallery_df["identity_ID"].nunique() == 751
    assert (gallery_df["identity_ID"] == 0).sum() == 2798
    for df, folder_name in zip((train_df, query_df, gallery_df), ("bounding_box_train", "query",
                                                                    "bounding_box_test")):
        assert [os.path.basename(path) for path in df["image_file_path"]] == reference[folder_name]
        assert list(df["identity_ID"]) == [int(name.split("_")[0]) for name in reference[folder_name]]
        assert list(df["camera_ID"]) == [int(name.split("_")[1][1]) for name in reference[folder_name]]
        assert set(df["camera_ID"]) == {1, 2, 3, 4, 5, 6}
        assert df["identity_ID"].dtype == np.int64 and df["camera_ID"].dtype == np.int64
    assert len(label_encoder_dict["identity_ID"].classes_) == 751
    assert sum(path.endswith(".jpg.jpg") for path in query_df["image_file_path"]) == 6
