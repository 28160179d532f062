"""Flag checks: bad values stop before any work with a message naming the flag."""
import math

import pytest

import solution  # noqa: F401  (defines the flags)
from absl import flags


def _options(**overrides):
    values = flags.FLAGS
    if not values.is_parsed():
        values(["solution.py"])
    options = values.flag_values_dict()
    options.update(overrides)
    return options


@pytest.fixture
def validate():
    from training.config import RunConfig
    return RunConfig.from_flag_values


def test_defaults_follow_the_originals():
    options = _options()
    # FlipReID's defaults where both originals have the flag, ALR's for its own flags.
    assert options["backbone_model_name"] == "resnet50"
    assert options["kernel_regularization_factor"] == 0.0005
    assert options["use_adaptive_l1_l2_regularizer"] is True
    assert options["use_horizontal_flipping_in_evaluation"] is False
    assert options["epoch_num"] == 1000000 and options["image_height"] == 384
    assert options["validation_size"] == 0.0 and options["label_smoothing"] == 0.0
    assert options["flipping_loss_weight"] == 1.0
    assert options["weight_decay"] == 0.0  # the originals' Adam, no decoupled decay


@pytest.mark.parametrize("flag, value, allowed", [
    ("backbone_model_name", "resnet5O", "resnet50"),
    ("dataset_name", "Market", "Market1501"),
    ("pooling_mode", "gem", "GeM"),
    ("learning_rate_mode", "step", "cosine"),
    ("image_augmentor_name", "Foo", "RandomErasingImageAugmentor"),
    ("classifier_head", "sphereface", "cosface"),
    ("evaluation_feature", "logits", "bnneck"),
])
def test_unknown_choices_name_flag_and_allowed_values(validate, tmp_path, flag, value, allowed):
    with pytest.raises(ValueError) as error:
        validate(_options(root_folder_path=str(tmp_path), **{flag: value}))
    assert "--" + flag in str(error.value) and allowed in str(error.value)


def test_image_below_backbone_minimum(validate, tmp_path):
    with pytest.raises(ValueError, match="--image_height"):
        validate(_options(root_folder_path=str(tmp_path), image_height=8, image_width=8))


def test_negative_and_out_of_range_values(validate, tmp_path):
    with pytest.raises(ValueError, match="--identity_num_per_batch"):
        validate(_options(root_folder_path=str(tmp_path), identity_num_per_batch=0))
    with pytest.raises(ValueError, match="--label_smoothing"):
        validate(_options(root_folder_path=str(tmp_path), label_smoothing=1.5))
    with pytest.raises(ValueError, match="--weight_decay"):
        validate(_options(root_folder_path=str(tmp_path), weight_decay=-0.1))
    for flag, value in (("triplet_margin", -0.1), ("triplet_hard_factor", 1.0),
                        ("circle_margin", 1.0), ("circle_gamma", 0.0),
                        ("circle_loss_weight", -1.0), ("learning_rate_gamma", -0.1),
                        ("intra_op_threads", -1), ("inter_op_threads", -1),
                        ("opencv_threads", -2)):
        with pytest.raises(ValueError, match="--" + flag):
            validate(_options(root_folder_path=str(tmp_path), **{flag: value}))
    with pytest.raises(ValueError, match="--cosine_scale"):
        validate(_options(root_folder_path=str(tmp_path), cosine_scale=0.0))
    for margin in (2.0, math.pi / 2, -0.1):  # the bound is pi/2, as in MarginCrossEntropy
        with pytest.raises(ValueError, match="--cosine_margin"):
            validate(_options(root_folder_path=str(tmp_path), cosine_margin=margin))


def test_evaluation_only_needs_checkpoint_and_full_test_set(validate, tmp_path):
    with pytest.raises(ValueError, match="--pretrained_model_file_path"):
        validate(_options(root_folder_path=str(tmp_path), evaluation_only=True))
    checkpoint = tmp_path / "training_model.h5"
    checkpoint.write_bytes(b"")
    with pytest.raises(ValueError, match="--testing_size"):
        validate(_options(root_folder_path=str(tmp_path), evaluation_only=True,
                          pretrained_model_file_path=str(checkpoint), testing_size=0.5))


def test_missing_root_folder(validate, tmp_path):
    with pytest.raises(ValueError, match="--root_folder_path"):
        validate(_options(root_folder_path=str(tmp_path / "nope")))


def test_sizes_above_one_become_counts(validate, tmp_path):
    options = validate(_options(root_folder_path=str(tmp_path), testing_size=50.0,
                                validation_size=0.25))
    assert options.data.testing_size == 50 and isinstance(options.data.testing_size, int)
    assert options.data.validation_size == 0.25


def test_last_stride_and_time_budget_checks(validate, tmp_path):
    with pytest.raises(ValueError, match="--backbone_last_stride"):
        validate(_options(root_folder_path=str(tmp_path), backbone_last_stride=3))
    with pytest.raises(ValueError, match="--time_budget_minutes"):
        validate(_options(root_folder_path=str(tmp_path), time_budget_minutes=-1))
    # Last stride 2 halves the feature-map rows: 128 // 32 = 4 rows fit 4 stripes, not 5.
    validate(_options(root_folder_path=str(tmp_path), image_height=128, image_width=64,
                      backbone_last_stride=2, region_num=4))
    with pytest.raises(ValueError, match="--region_num"):
        validate(_options(root_folder_path=str(tmp_path), image_height=128, image_width=64,
                          backbone_last_stride=2, region_num=5))


def test_osnet_strides_and_weights(validate, tmp_path):
    # OSNet downsamples 8 times with last stride 1 (16 with 2): 64 // 8 = 8 rows fit 8 stripes.
    options = dict(root_folder_path=str(tmp_path), backbone_model_name="osnet_x0_25",
                   backbone_weights="none", image_height=64, image_width=32)
    validate(_options(**options, region_num=8))
    with pytest.raises(ValueError, match="--region_num"):
        validate(_options(**options, backbone_last_stride=2, region_num=5))
    # No ImageNet weights in Keras format: refused before any data is read.
    with pytest.raises(ValueError, match="--backbone_weights none"):
        validate(_options(**dict(options, backbone_weights="imagenet")))
