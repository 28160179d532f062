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


# The end-to-end runs' tiny training (solution.py flags without the data and output folders).
TINY_RUN_FLAGS = ["--dataset_name", "Folder", "--backbone_model_name", "MobileNetV3Small",
                  "--backbone_weights", "none", "--image_height", "64", "--image_width", "32",
                  "--region_num", "2", "--identity_num_per_batch", "4",
                  "--image_num_per_identity", "2", "--steps_per_epoch", "2",
                  "--freeze_backbone_for_N_epochs", "0", "--evaluate_testing_every_N_epochs", "2",
                  "--workers", "1", "--seed", "0", "--learning_rate_mode", "constant",
                  "--learning_rate_start", "1e-3", "--learning_rate_end", "1e-3",
                  "--learning_rate_lower_bound", "1e-3"]


def make_tiny_run_dataset(root):
    """The end-to-end runs' dataset: 12 training identities, 10 test identities, 3 cameras."""
    return make_tiny_folder_dataset(
        root, seed=1, num_train_identities=12, num_test_identities=10, num_cameras=3,
        train_images_per_identity=(4, 6), gallery_images_per_camera=(1, 2), max_query_cameras=2,
        num_distractors=5, num_junk=3, family_size=2)


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
