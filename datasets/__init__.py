"""Person re-ID datasets: loaders returning ``(train_df, query_df, gallery_df, label_encoder_dict)``.

Each DataFrame has the columns ``image_file_path`` (absolute path), ``identity_ID`` (int64) and ``camera_ID``
(int64); junk images (identity -1) are removed and distractors (identity 0) kept; ``label_encoder_dict`` is
``OrderedDict(identity_ID=LabelEncoder)`` fitted on the train identities only. The expected folder layout of
each dataset is described in ``datasets/README.md`` and repeated in every layout error.

The loaders are imported lazily so that ``import pipeline.sampler`` etc. stay light (no pandas/sklearn).
"""
import importlib

DATASET_NAMES = ("Market1501", "DukeMTMC_reID", "MSMT17", "MSMT17_V1", "CUHK03_labeled", "CUHK03_detected",
                 "Synthetic", "Folder")

# dataset name -> (module, function, extra keyword arguments)
_LOADERS = {
    "Market1501": ("datasets.market1501", "load_market1501", {}),
    "DukeMTMC_reID": ("datasets.dukemtmc_reid", "load_dukemtmc_reid", {}),
    "MSMT17": ("datasets.msmt17", "load_msmt17", {"dataset_name": "MSMT17"}),
    "MSMT17_V1": ("datasets.msmt17", "load_msmt17", {"dataset_name": "MSMT17_V1"}),
    "CUHK03_labeled": ("datasets.cuhk03", "load_cuhk03", {"dataset_name": "CUHK03_labeled"}),
    "CUHK03_detected": ("datasets.cuhk03", "load_cuhk03", {"dataset_name": "CUHK03_detected"}),
    "Synthetic": ("datasets", "load_synthetic", {}),
    "Folder": ("datasets.folder", "load_folder_dataset", {}),
}
assert tuple(_LOADERS) == DATASET_NAMES

# Public names served lazily by __getattr__: name -> module.
_LAZY_ATTRIBUTES = {
    "load_folder_dataset": "datasets.folder",
    "apply_testing_size": "datasets.splits",
    "split_validation": "datasets.splits",
    "DatasetCountWarning": "datasets.common",
    "DEFAULT_FILE_NAME_PATTERN": "datasets.common",
    "IMAGE_EXTENSIONS": "datasets.common",
}


def __getattr__(name):
    if name in _LAZY_ATTRIBUTES:
        return getattr(importlib.import_module(_LAZY_ATTRIBUTES[name]), name)
    raise AttributeError(f"module 'datasets' has no attribute {name!r}")


def load_synthetic(root_folder_path):
    """The synthetic dataset, generated under ``root_folder_path`` on first use, read with the Market-1501
    code (no standard-count warnings)."""
    synthetic = importlib.import_module("datasets.synthetic")  # generator code, imported only when needed
    from datasets.market1501 import LAYOUT_TEMPLATE, read_market_layout

    dataset_folder = synthetic.ensure_synthetic_dataset(root_folder_path)
    layout = LAYOUT_TEMPLATE.format(folder_name=synthetic.FOLDER_NAME)
    return read_market_layout(dataset_folder, dataset_name="Synthetic", layout=layout, expected_counts=None)


def load_accumulated_info_of_dataset(root_folder_path, dataset_name):
    """``(train_df, query_df, gallery_df, label_encoder_dict)`` of ``dataset_name`` under ``root_folder_path``.

    ``dataset_name`` is one of DATASET_NAMES, or several joined by commas (trained on together, see
    ``datasets/combined.py``); for ``"Folder"``, ``root_folder_path`` is the dataset folder itself
    and the default file name pattern is used (see ``load_folder_dataset`` to override it).
    """
    from datasets.combined import check_combination, combine_datasets, dataset_names

    names = dataset_names(dataset_name)
    problem = check_combination(names, DATASET_NAMES)
    if problem:
        raise ValueError(f"dataset_name {dataset_name!r}: {problem}.")
    loaded = []
    for name in names:
        module_name, function_name, kwargs = _LOADERS[name]
        loader = getattr(importlib.import_module(module_name), function_name)
        loaded.append((name, loader(root_folder_path, **kwargs)))
    return loaded[0][1] if len(loaded) == 1 else combine_datasets(loaded)


__all__ = ["DATASET_NAMES", "load_accumulated_info_of_dataset", "load_synthetic"] + list(_LAZY_ATTRIBUTES)
