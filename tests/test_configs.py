"""Every recipe under configs/ parses with solution.py's flags, passes the checks and builds its
model (at a tiny input size, without downloading weights)."""
import glob
import os

import pytest
from absl import flags

import training.flags  # noqa: F401  (defines the flags)
from conftest import make_config
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


@pytest.mark.parametrize("path", FLAG_FILES, ids=os.path.basename)
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
