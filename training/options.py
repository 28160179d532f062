"""Checks every flag before any work starts; errors name the flag and the allowed values."""
import os
import random
from types import SimpleNamespace

import numpy as np

from utils.learning_rate import LEARNING_RATE_MODES

POOLING_MODES = ("Average", "Max", "GeM")
IMAGE_AUGMENTOR_NAMES = ("FlipReIDImageAugmentor", "RandomErasingImageAugmentor",
                         "BaseImageAugmentor")


class OptionError(ValueError):
    """A flag value that cannot work; the message names the flag and what is allowed."""


def _choice(options, name, allowed):
    if getattr(options, name) not in allowed:
        raise OptionError("--{}={!r} is not supported; allowed values: {}.".format(
            name, getattr(options, name), ", ".join(allowed)))


def _positive(options, *names, allow_zero=False):
    for name in names:
        value = getattr(options, name)
        if value < 0 or (value == 0 and not allow_zero):
            raise OptionError("--{} must be {} (got {}).".format(
                name, ">= 0" if allow_zero else "> 0", value))


def validate_options(flag_values):
    """Returns a namespace of checked, normalised options (sizes cast as the originals do)."""
    from applications import BACKBONE_NAMES, backbone_min_input_size
    from datasets import DATASET_NAMES
    from applications.reid_model import CLASSIFIER_HEADS, EVALUATION_FEATURES
    from losses.classification import MAX_MARGIN

    options = SimpleNamespace(**flag_values)
    _choice(options, "dataset_name", DATASET_NAMES)
    _choice(options, "backbone_model_name", BACKBONE_NAMES)
    _choice(options, "pooling_mode", POOLING_MODES)
    _choice(options, "learning_rate_mode", LEARNING_RATE_MODES)
    _choice(options, "image_augmentor_name", IMAGE_AUGMENTOR_NAMES)
    _choice(options, "classifier_head", CLASSIFIER_HEADS)
    _choice(options, "evaluation_feature", EVALUATION_FEATURES)
    _positive(options, "image_height", "image_width", "identity_num_per_batch",
              "image_num_per_identity", "steps_per_epoch", "workers", "augmentation_num")
    _positive(options, "region_num", "freeze_backbone_for_N_epochs", "epoch_num",
              "testing_size", "validation_size", "label_smoothing", "flipping_loss_weight",
              "triplet_loss_weight", "weight_decay",
              "evaluate_testing_every_N_epochs", "evaluate_validation_every_N_epochs",
              allow_zero=True)
    for name in ("kernel", "bias", "gamma", "beta"):
        _positive(options, name + "_regularization_factor", allow_zero=True)
    for name in ("patch_replacement_probability", "random_erasing_probability",
                 "label_smoothing"):
        if not 0 <= getattr(options, name) <= 1:
            raise OptionError("--{} must be in [0, 1] (got {}).".format(
                name, getattr(options, name)))
    _positive(options, "cosine_scale")
    if options.cosine_margin is not None and not 0 <= options.cosine_margin < MAX_MARGIN:
        raise OptionError("--cosine_margin must be in [0, pi/2 = {:.4f}) (got {}).".format(
            MAX_MARGIN, options.cosine_margin))
    if options.batch_normalization_momentum is not None and \
            not 0 <= options.batch_normalization_momentum < 1:
        raise OptionError("--batch_normalization_momentum must be in [0, 1) (got {}).".format(
            options.batch_normalization_momentum))
    if options.min_value is not None and options.max_value is not None and \
            options.min_value >= options.max_value:
        raise OptionError("--min_value ({}) must be below --max_value ({}).".format(
            options.min_value, options.max_value))

    min_height, min_width = backbone_min_input_size(options.backbone_model_name)
    if options.image_height < min_height or options.image_width < min_width:
        raise OptionError(
            "--image_height x --image_width = {}x{} is below the minimum {}x{} of "
            "--backbone_model_name {}.".format(options.image_height, options.image_width,
                                               min_height, min_width,
                                               options.backbone_model_name))
    if options.backbone_last_stride not in (1, 2):
        raise OptionError("--backbone_last_stride must be 1 (re-ID default) or 2 (the "
                          "backbone's own), got {}.".format(options.backbone_last_stride))
    _positive(options, "time_budget_minutes", allow_zero=True)
    if options.region_num > 0:
        _check_region_num(options)

    # The originals' convention: sizes above 1 are absolute counts.
    for name in ("testing_size", "validation_size"):
        value = getattr(options, name)
        setattr(options, name, int(value) if value > 1 else value)

    if not options.use_data_augmentation_in_evaluation and options.augmentation_num != 1:
        print("Set augmentation_num to 1 since use_data_augmentation_in_evaluation is False.")
        options.augmentation_num = 1
    if options.evaluation_only:
        if not options.pretrained_model_file_path:
            raise OptionError("--evaluation_only needs --pretrained_model_file_path (the "
                              "training_model.h5 of a training run).")
        if options.testing_size != 1:
            raise OptionError("--evaluation_only evaluates the full test set: pass "
                              "--testing_size 1.0 (got {}).".format(options.testing_size))
    if options.pretrained_model_file_path and \
            not os.path.isfile(options.pretrained_model_file_path):
        raise OptionError("--pretrained_model_file_path {!r} does not exist.".format(
            options.pretrained_model_file_path))
    if options.backbone_weights.lower() not in ("imagenet", "none") and \
            not os.path.isfile(options.backbone_weights):
        raise OptionError("--backbone_weights must be imagenet, none or an existing .h5 file "
                          "(got {!r}).".format(options.backbone_weights))
    if options.dataset_name != "Synthetic" and not os.path.isdir(options.root_folder_path):
        raise OptionError("--root_folder_path {!r} is not a folder. Point it at the folder "
                          "that holds the dataset folder (e.g. the parent of "
                          "Market-1501-v15.09.15).".format(options.root_folder_path))
    options.output_folder_path = os.path.join(
        os.path.abspath(options.output_folder_path),
        "{}_{}".format(options.dataset_name, options.backbone_model_name))
    return options


def _check_region_num(options):
    # The backbones reduce the height 16 times with last stride 1, 32 times with 2.
    reduction = 16 * options.backbone_last_stride
    if options.image_height // reduction < options.region_num:
        raise OptionError(
            "--region_num {} needs at least {} feature-map rows, but --image_height {} gives "
            "only about {}. Lower --region_num or raise --image_height.".format(
                options.region_num, options.region_num, options.image_height,
                options.image_height // reduction))


def seed_everything(seed):
    """Seeds Python, NumPy and TensorFlow; the sampler and augmentor take their own seeds."""
    if seed is None:
        return
    from utils.tf_env import tf
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
