"""Checks every configuration value before any work starts; errors name the flag and the
allowed values. The allowed values are the implementing modules' own constants."""
import os

from applications import (BACKBONE_NAMES, backbone_has_imagenet_weights,
                          backbone_min_input_size, backbone_output_stride)
from applications.reid_model import CLASSIFIER_HEADS, EVALUATION_FEATURES, POOLING_MODES
from datasets import DATASET_NAMES
from datasets.combined import SEPARATOR, check_combination, dataset_names
from losses.classification import MAX_MARGIN
from pipeline.augmentation import IMAGE_AUGMENTOR_NAMES
from metrics.distances import METRICS
from training.config import OptionError
from training.distribution import LEARNING_RATE_SCALINGS, STRATEGIES
from training.optimizer import OPTIMIZER_NAMES
from utils.learning_rate import LEARNING_RATE_MODES

CHOICES = {"backbone_model_name": BACKBONE_NAMES,
           "pooling_mode": POOLING_MODES, "learning_rate_mode": LEARNING_RATE_MODES,
           "image_augmentor_name": IMAGE_AUGMENTOR_NAMES, "classifier_head": CLASSIFIER_HEADS,
           "evaluation_feature": EVALUATION_FEATURES, "optimizer": OPTIMIZER_NAMES,
           "distance_metric": METRICS, "distribution_strategy": STRATEGIES,
           "learning_rate_scaling": LEARNING_RATE_SCALINGS}
POSITIVE = ("image_height", "image_width", "identity_num_per_batch", "image_num_per_identity",
            "steps_per_epoch", "workers", "augmentation_num", "cosine_scale", "circle_gamma",
            "re_ranking_k1", "re_ranking_k2", "center_learning_rate",
            "learning_rate_reference_batch_size", "multi_worker_port_base")
NON_NEGATIVE = ("region_num", "freeze_backbone_for_N_epochs", "epoch_num", "testing_size",
                "validation_size", "label_smoothing", "flipping_loss_weight",
                "triplet_loss_weight", "weight_decay", "evaluate_testing_every_N_epochs",
                "evaluate_validation_every_N_epochs", "time_budget_minutes",
                "kernel_regularization_factor", "bias_regularization_factor",
                "gamma_regularization_factor", "beta_regularization_factor",
                "learning_rate_gamma", "circle_loss_weight", "query_expansion_k",
                "center_loss_weight", "visualize_num", "intra_op_threads", "inter_op_threads")
PROBABILITIES = ("patch_replacement_probability", "random_erasing_probability",
                 "label_smoothing")


def validate(values):
    """Returns a checked, normalised copy of the flat ``{flag name: value}``."""
    values = dict(values)
    problem = check_combination(dataset_names(values["dataset_name"]), DATASET_NAMES)
    if problem:
        raise OptionError("--dataset_name={!r}: {}.".format(values["dataset_name"], problem))
    values["dataset_name"] = SEPARATOR.join(dataset_names(values["dataset_name"]))
    for name, allowed in CHOICES.items():
        if values[name] not in allowed:
            raise OptionError("--{}={!r} is not supported; allowed values: {}.".format(
                name, values[name], ", ".join(allowed)))
    for name in POSITIVE + NON_NEGATIVE:
        value = values[name]
        if value < 0 or (value == 0 and name in POSITIVE):
            raise OptionError("--{} must be {} (got {}).".format(
                name, "> 0" if name in POSITIVE else ">= 0", value))
    for name in PROBABILITIES:
        if not 0 <= values[name] <= 1:
            raise OptionError("--{} must be in [0, 1] (got {}).".format(name, values[name]))
    if values["opencv_threads"] < -1:
        raise OptionError("--opencv_threads must be -1 (OpenCV's default) or >= 0 (got {})."
                          .format(values["opencv_threads"]))
    _check_ranges(values)
    values["learning_rate_milestones"] = _milestones(values["learning_rate_milestones"])
    _check_input_size(values)
    # The originals' convention: sizes above 1 are absolute counts.
    for name in ("testing_size", "validation_size"):
        values[name] = int(values[name]) if values[name] > 1 else values[name]
    if not values["use_data_augmentation_in_evaluation"] and values["augmentation_num"] != 1:
        print("Set augmentation_num to 1 since use_data_augmentation_in_evaluation is False.")
        values["augmentation_num"] = 1
    _check_run(values)
    return values


def _check_ranges(values):
    margin = values["cosine_margin"]
    if margin is not None and not 0 <= margin < MAX_MARGIN:
        raise OptionError("--cosine_margin must be in [0, pi/2 = {:.4f}) (got {}).".format(
            MAX_MARGIN, margin))
    if values["triplet_margin"] is not None and values["triplet_margin"] < 0:
        raise OptionError("--triplet_margin must be >= 0, or unset for the soft margin (got "
                          "{}).".format(values["triplet_margin"]))
    for name in ("triplet_hard_factor", "circle_margin"):
        if not 0 <= values[name] < 1:
            raise OptionError("--{} must be in [0, 1) (got {}).".format(name, values[name]))
    if not 0 <= values["re_ranking_lambda"] <= 1:
        raise OptionError("--re_ranking_lambda must be in [0, 1] (got {}).".format(
            values["re_ranking_lambda"]))
    if not 0 <= values["sgd_momentum"] < 1:
        raise OptionError("--sgd_momentum must be in [0, 1) (got {}).".format(
            values["sgd_momentum"]))
    momentum = values["batch_normalization_momentum"]
    if momentum is not None and not 0 <= momentum < 1:
        raise OptionError("--batch_normalization_momentum must be in [0, 1) (got {}).".format(
            momentum))
    if values["min_value"] is not None and values["max_value"] is not None and \
            values["min_value"] >= values["max_value"]:
        raise OptionError("--min_value ({}) must be below --max_value ({}).".format(
            values["min_value"], values["max_value"]))
    if values["backbone_last_stride"] not in (1, 2):
        raise OptionError("--backbone_last_stride must be 1 (re-ID default) or 2 (the "
                          "backbone's own), got {}.".format(values["backbone_last_stride"]))
    if values["deterministic"] and values["seed"] is None:
        raise OptionError("--deterministic needs --seed (unseeded runs differ anyway).")


def _milestones(milestones):
    """Sorted epoch numbers from a list of ints or of strings (absl's DEFINE_list)."""
    try:
        epochs = sorted(int(str(epoch).strip()) for epoch in milestones)
    except ValueError:
        raise OptionError("--learning_rate_milestones must be whole epoch numbers separated by "
                          "commas, e.g. 40,70 (got {}).".format(",".join(map(str, milestones))))
    if any(epoch < 0 for epoch in epochs):
        raise OptionError("--learning_rate_milestones must be >= 0 (got {}).".format(epochs))
    return epochs


def _check_input_size(values):
    height, width = values["image_height"], values["image_width"]
    min_height, min_width = backbone_min_input_size(values["backbone_model_name"])
    if height < min_height or width < min_width:
        raise OptionError(
            "--image_height x --image_width = {}x{} is below the minimum {}x{} of "
            "--backbone_model_name {}.".format(height, width, min_height, min_width,
                                               values["backbone_model_name"]))
    rows = height // backbone_output_stride(values["backbone_model_name"],
                                            values["backbone_last_stride"])
    if values["region_num"] > 0 and rows < values["region_num"]:
        raise OptionError(
            "--region_num {} needs at least {} feature-map rows, but --image_height {} gives "
            "only about {}. Lower --region_num or raise --image_height.".format(
                values["region_num"], values["region_num"], height, rows))


def _check_run(values):
    if values["evaluation_only"]:
        if not values["pretrained_model_file_path"]:
            raise OptionError("--evaluation_only needs --pretrained_model_file_path (the "
                              "training_model.h5 of a training run).")
        if values["testing_size"] != 1:
            raise OptionError("--evaluation_only evaluates the full test set: pass "
                              "--testing_size 1.0 (got {}).".format(values["testing_size"]))
    path = values["pretrained_model_file_path"]
    if path and not os.path.isfile(path):
        raise OptionError("--pretrained_model_file_path {!r} does not exist.".format(path))
    if values["distribution_strategy"] == "multi_worker":
        if values["evaluation_only"]:
            raise OptionError("--evaluation_only runs in one process: drop "
                              "--distribution_strategy multi_worker (or use mirrored).")
        if values["time_budget_minutes"]:
            raise OptionError("--time_budget_minutes is not supported with --distribution_strategy "
                              "multi_worker: each worker's clock would plan its own epoch count "
                              "(and learning rates). Give --epoch_num instead.")
    weights = values["backbone_weights"]
    if weights.lower() not in ("imagenet", "none") and not os.path.isfile(weights):
        raise OptionError("--backbone_weights must be imagenet, none or an existing .h5 file "
                          "(got {!r}).".format(weights))
    if weights.lower() == "imagenet" and not backbone_has_imagenet_weights(
            values["backbone_model_name"]):
        raise OptionError("--backbone_model_name {} has no ImageNet weights in Keras format: "
                          "train it from scratch with --backbone_weights none, or pass a local "
                          ".h5 file of its weights.".format(values["backbone_model_name"]))
    if dataset_names(values["dataset_name"]) != ["Synthetic"] and not os.path.isdir(values["root_folder_path"]):
        raise OptionError("--root_folder_path {!r} is not a folder. Point it at the folder "
                          "that holds the dataset folder (e.g. the parent of "
                          "Market-1501-v15.09.15).".format(values["root_folder_path"]))
