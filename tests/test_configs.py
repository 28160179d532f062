"""Every recipe under configs/ parses with solution.py's flags, passes the checks and builds its
model (at a tiny input size, without downloading weights)."""
import csv
import glob
import os

import pytest
from absl import flags

import training.flags  # noqa: F401  (defines the flags)
from conftest import make_config, make_tiny_folder_dataset
from training.config import FLAG_NAMES, RunConfig

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAG_FILES = sorted(glob.glob(os.path.join(REPOSITORY, "configs", "*.flags")))
PER_RUN_FLAGS = ("root_folder_path", "output_folder_path", "pretrained_model_file_path",
                 "resume", "evaluation_only")


def parse_flag_file(path):
    """The configuration values solution.py runs with for ``--flagfile path`` alone, and the
    names the file sets."""
    values = flags.FLAGS
    values.unparse_flags()
    try:
        values(["solution.py", "--flagfile=" + path])
        return ({name: values[name].value for name in FLAG_NAMES},
                {name for name in FLAG_NAMES if values[name].present})
    finally:
        values.unparse_flags()


def test_there_are_recipes():
    names = {os.path.basename(path) for path in FLAG_FILES}
    assert {"quick_start.flags", "market1501_cpu_budget.flags",
            "flipreid_market1501_resnesta50.flags", "alr_market1501_resnet50.flags",
            "alr_market1501_resnet101.flags", "alr_market1501_resnet152.flags"} <= names


@pytest.mark.parametrize("path", FLAG_FILES, ids=os.path.basename)
def test_flag_file_parses_and_passes_the_checks(path):
    values, given = parse_flag_file(path)
    assert not given & set(PER_RUN_FLAGS), "a recipe must not fix per-run flags"
    values["root_folder_path"] = REPOSITORY  # any existing folder passes the folder check
    RunConfig.from_flag_values(values)


_BUILT = {}


# ResNet101 / ResNet152 are the ResNet50 code with more blocks, at 2-3 times the build time.
# The baselines' recipes build their models in the training test below.
BUILT_BY_TRAINING = ("tiny_baseline_", "deep_efficient_reid_")
BUILDS = [pytest.param(path, marks=pytest.mark.slow) if "resnet1" in os.path.basename(path)
          else path for path in FLAG_FILES
          if not os.path.basename(path).startswith(BUILT_BY_TRAINING)]


@pytest.mark.parametrize("path", BUILDS, ids=os.path.basename)
def test_flag_file_builds_its_model_at_a_tiny_size(path):
    from training.trainer import Trainer
    values, _ = parse_flag_file(path)
    config = make_config(**dict(values, root_folder_path=REPOSITORY, image_height=64,
                                image_width=32, backbone_weights="none"))
    key = tuple(sorted(config.checkpoint_metadata_values.items())) + (
        config.model.use_horizontal_flipping_inside_model,)
    if key in _BUILT:  # the same model as another recipe's (another dataset)
        return
    models = Trainer(config).build_models(num_classes=5)
    _BUILT[key] = path
    branches = 1 + config.model.region_num
    assert len(models.training_model.outputs) == 2 * branches
    assert (models.flipping_layer is not None) == config.model.use_horizontal_flipping_inside_model
    assert models.training_model.outputs[-1].shape[-1] == 5
    adaptive_factors = models.regularization_factors()
    assert bool(adaptive_factors) == config.model.use_adaptive_l1_l2_regularizer


# The seed baselines' recipes; each trains a few steps on tiny synthetic data. The CUHK03 recipes
# (labeled and detected boxes) are the Market-1501 ones but for --dataset_name, which the tiny
# data replaces: they would train the same model, so only their settings are compared.
# The default run starts one (ResNet50); the larger backbones' two are behind -m slow (their
# models are built at a tiny size by test_flag_file_builds_its_model_at_a_tiny_size).
BASELINE_RECIPES = ["tiny_baseline_market1501_resnet50.flags",
                    pytest.param("deep_efficient_reid_market1501_ibn_resnet50.flags",
                                 marks=pytest.mark.slow),
                    pytest.param("deep_efficient_reid_market1501_efficientnetv2s.flags",
                                 marks=pytest.mark.slow)]
SAME_BUT_DATASET = {"deep_efficient_reid_cuhk03_labeled_ibn_resnet50.flags":
                    "deep_efficient_reid_market1501_ibn_resnet50.flags",
                    "deep_efficient_reid_cuhk03_labeled_efficientnetv2s.flags":
                    "deep_efficient_reid_market1501_efficientnetv2s.flags",
                    "deep_efficient_reid_cuhk03_detected_ibn_resnet50.flags":
                    "deep_efficient_reid_market1501_ibn_resnet50.flags",
                    "deep_efficient_reid_cuhk03_detected_efficientnetv2s.flags":
                    "deep_efficient_reid_market1501_efficientnetv2s.flags"}


def test_recipes_that_differ_only_in_their_dataset():
    for name, twin in SAME_BUT_DATASET.items():
        values, _ = parse_flag_file(os.path.join(REPOSITORY, "configs", name))
        twin_values, _ = parse_flag_file(os.path.join(REPOSITORY, "configs", twin))
        differences = {key for key in values if values[key] != twin_values[key]}
        assert differences == {"dataset_name"}, (name, differences)


@pytest.fixture(scope="module")
def tiny_folder_dataset(tmp_path_factory):
    return make_tiny_folder_dataset(
        tmp_path_factory.mktemp("tiny_recipes"), seed=2, num_train_identities=8,
        num_test_identities=6, num_cameras=2, train_images_per_identity=(2, 3),
        gallery_images_per_camera=(1, 2), max_query_cameras=1, num_distractors=2, num_junk=1,
        family_size=2)


@pytest.mark.parametrize("name", BASELINE_RECIPES)
def test_baseline_recipe_starts_training(name, tiny_folder_dataset, tmp_path):
    from training.trainer import Trainer
    values, _ = parse_flag_file(os.path.join(REPOSITORY, "configs", name))
    values.update(dataset_name="Folder", root_folder_path=tiny_folder_dataset,
                  output_folder_path=str(tmp_path), backbone_weights="none", image_height=64,
                  image_width=32, identity_num_per_batch=4, image_num_per_identity=2,
                  steps_per_epoch=2, epoch_num=1, freeze_backbone_for_N_epochs=0,
                  testing_size=0, workers=1, seed=0)
    config = RunConfig.from_flag_values(values)
    Trainer(config).train()
    with open(os.path.join(config.run_folder, "training_B", "history.csv")) as file:
        history = next(csv.DictReader(file))
    assert float(history["center_loss"]) > 0 and float(history["global_embedding_loss"]) > 0
    assert os.path.isfile(os.path.join(config.run_folder, "training_model.h5"))
