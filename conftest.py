"""Test-wide setup: the repository root is importable and TensorFlow uses tf-keras."""
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

SHARED_DATASETS = os.environ.get(
    "REID_SHARED_DATASETS",
    os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "shared", "datasets")))


def default_config_values(**overrides):
    """solution.py's flag defaults (the flags parsed with no argument) with ``overrides``."""
    from absl import flags
    import training.flags  # noqa: F401  (defines the flags)
    values = flags.FLAGS
    if not values.is_parsed():
        values(["solution.py"])
    result = {name: values[name].default for name in values}
    result.update(overrides)
    return result


def make_config(**overrides):
    """A checked `RunConfig` of the flag defaults with ``overrides`` (root folder: this repo,
    which passes the folder check)."""
    from training.config import RunConfig
    overrides.setdefault("root_folder_path", os.path.dirname(os.path.abspath(__file__)))
    return RunConfig.from_flag_values(default_config_values(**overrides))


def make_tiny_folder_dataset(root, **generator_arguments):
    """A small synthetic dataset under ``root`` in the "Folder" layout (train/query/gallery
    links to the generated Market-style folders); returns ``root`` as a string."""
    from datasets.synthetic import generate_dataset
    generated = os.path.join(str(root), "generated")
    generate_dataset(generated, **generator_arguments)
    for split, folder in (("train", "bounding_box_train"), ("query", "query"),
                          ("gallery", "bounding_box_test")):
        os.symlink(os.path.join(generated, folder), os.path.join(str(root), split))
    return str(root)
