"""One frozen, grouped run configuration: built once from the flags, checked in one place, saved
as ``config.json`` beside each run and read back by ``--resume`` and ``--evaluation_only``.

    config = RunConfig.from_flag_values(FLAGS.flag_values_dict())
    config.model.backbone_model_name, config.solver.epoch_num, config.batch_size

Groups hold the flags' values under their flag names; assigning to a group or to the
configuration raises `FrozenConfigError`. Run-time state (the time budget's epoch plan, the
learning-rate schedule's horizon) lives in the objects that own it, never here.
"""
import glob
import json
import os
from types import MappingProxyType

from utils.files import atomic_write

CONFIG_FILE_NAME = "config.json"
GROUPS = {
    "data": ("root_folder_path", "dataset_name", "image_height", "image_width",
             "validation_size", "testing_size", "identity_num_per_batch",
             "image_num_per_identity", "use_identity_balancing_in_training",
             "image_augmentor_name", "patch_replacement_probability",
             "random_erasing_probability", "use_data_augmentation_in_training", "workers",
             "cache_images"),
    "model": ("backbone_model_name", "backbone_weights", "backbone_last_stride", "region_num",
              "pooling_mode", "min_value", "max_value", "use_horizontal_flipping_inside_model",
              "classifier_head", "use_adaptive_l1_l2_regularizer",
              "kernel_regularization_factor", "bias_regularization_factor",
              "gamma_regularization_factor", "beta_regularization_factor",
              "batch_normalization_momentum"),
    "loss": ("label_smoothing", "flipping_loss_weight", "triplet_loss_weight", "triplet_margin",
             "triplet_hard_factor", "circle_loss_weight", "circle_margin", "circle_gamma",
             "center_loss_weight", "center_learning_rate", "cosine_scale", "cosine_margin"),
    "solver": ("freeze_backbone_for_N_epochs", "epoch_num", "steps_per_epoch",
               "learning_rate_mode", "learning_rate_start", "learning_rate_end",
               "learning_rate_base", "learning_rate_warmup_epochs",
               "learning_rate_steady_epochs", "learning_rate_drop_factor",
               "learning_rate_lower_bound", "learning_rate_milestones", "learning_rate_gamma",
               "optimizer", "sgd_momentum", "sgd_nesterov", "weight_decay",
               "time_budget_minutes"),
    "evaluation": ("evaluate_validation_every_N_epochs", "evaluate_testing_every_N_epochs",
                   "use_horizontal_flipping_in_evaluation", "use_data_augmentation_in_evaluation",
                   "augmentation_num", "use_re_ranking", "re_ranking_k1", "re_ranking_k2",
                   "re_ranking_lambda", "distance_metric", "use_centroids", "query_expansion_k",
                   "query_expansion_alpha", "evaluation_feature", "save_data_to_disk",
                   "select_model_on_testing", "visualize_num"),
    "distribution": ("sync_batch_normalization", "gather_embeddings_across_replicas",
                     "learning_rate_scaling", "learning_rate_reference_batch_size",
                     "mixed_precision", "jit_compile"),
    # Per invocation: never read back from a saved config.json.
    "run": ("output_folder_path", "pretrained_model_file_path", "evaluation_only", "resume",
            "seed", "deterministic", "verbose_tensorflow", "distribution_strategy",
            "multi_worker_port_base", "intra_op_threads", "inter_op_threads", "opencv_threads"),
}
FLAG_NAMES = tuple(name for names in GROUPS.values() for name in names)
# What a checkpoint's weights depend on: a saved run and an explicit flag must agree on these.
MODEL_SHAPING = ("backbone_model_name", "image_height", "image_width", "region_num",
                 "pooling_mode", "use_adaptive_l1_l2_regularizer", "backbone_last_stride",
                 "classifier_head")


class OptionError(ValueError):
    """A flag value that cannot work; the message names the flag and what is allowed."""


class FrozenConfigError(AttributeError):
    """An assignment to the frozen configuration."""


class ConfigGroup:
    """Read-only attribute view of one group's values."""
    __slots__ = ("_name", "_values")

    def __init__(self, name, values):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_values", MappingProxyType(dict(values)))

    def __getattr__(self, key):
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError("config group {!r} has no {!r}".format(self._name, key)) from None

    def __setattr__(self, key, value=None):
        raise FrozenConfigError("The configuration is frozen: {}.{} cannot be set. Build a new "
                                "one with RunConfig.replace(...).".format(self._name, key))

    __delattr__ = __setattr__

    def as_dict(self):
        return dict(self._values)

    def __eq__(self, other):
        return isinstance(other, ConfigGroup) and self.as_dict() == other.as_dict()

    def __repr__(self):
        return "ConfigGroup({}: {})".format(self._name, dict(self._values))


class RunConfig:
    """The checked configuration of one run, in the groups of ``GROUPS``."""
    __slots__ = tuple(GROUPS)

    def __init__(self, values):
        """``values``: flat ``{flag name: value}``, already checked (use the constructors)."""
        for group, names in GROUPS.items():
            object.__setattr__(self, group, ConfigGroup(group, {n: values[n] for n in names}))

    def __setattr__(self, key, value=None):
        raise FrozenConfigError("The configuration is frozen: {} cannot be set. Build a new "
                                "one with RunConfig.replace(...).".format(key))

    __delattr__ = __setattr__

    # ------------------------------------------------------------------------ constructors
    @classmethod
    def from_flag_values(cls, flag_values):
        """Checks ``{flag name: value}`` (extra keys, e.g. absl's own flags, are ignored)."""
        missing = [name for name in FLAG_NAMES if name not in flag_values]
        if missing:
            raise OptionError("Missing configuration values: {}.".format(", ".join(missing)))
        from training.validation import validate
        return cls(validate({name: flag_values[name] for name in FLAG_NAMES}))

    @classmethod
    def load_values(cls, path):
        """The flat ``{flag name: value}`` saved at ``path`` (unchecked: `resolve` merges them
        with the flags, then checks them)."""
        with open(path) as file:
            saved = json.load(file)
        flat = {name: value for group in saved.values() for name, value in group.items()}
        unknown = sorted(set(flat) - set(FLAG_NAMES))
        if unknown:
            raise OptionError("{} holds values this version does not know: {}. It was written "
                              "by another version of the toolkit.".format(path, ", ".join(unknown)))
        return flat

    def replace(self, **values):
        """A new checked configuration with ``values`` changed."""
        return RunConfig.from_flag_values(dict(self.flat(), **values))

    # -------------------------------------------------------------------------- views
    def flat(self):
        return {name: value for group in GROUPS
                for name, value in getattr(self, group).as_dict().items()}

    def to_dict(self):
        return {group: getattr(self, group).as_dict() for group in GROUPS}

    def save(self, path):
        with atomic_write(path, "w") as file:
            json.dump(self.to_dict(), file, indent=2)
            file.write("\n")

    def describe(self):
        """The configuration as printed at start-up: one line per value, by group."""
        lines = []
        for group, values in self.to_dict().items():
            lines.append("[{}]".format(group))
            lines += ["  {} {}".format(name, value) for name, value in values.items()]
        return "\n".join(lines)

    def __eq__(self, other):
        return isinstance(other, RunConfig) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return "RunConfig({})".format(self.to_dict())

    # -------------------------------------------------------------------- derived values
    @property
    def batch_size(self):
        """Images per training step: P identities x K images."""
        return self.data.identity_num_per_batch * self.data.image_num_per_identity

    @property
    def input_shape(self):
        return (self.data.image_height, self.data.image_width, 3)

    @property
    def run_folder(self):
        """``<output_folder_path>/<dataset>_<backbone>``: where this run writes."""
        return os.path.join(os.path.abspath(self.run.output_folder_path), run_folder_name(
            self.data.dataset_name, self.model.backbone_model_name))

    @property
    def evaluation_passes(self):
        """Forward passes per evaluation image (flip averaging, augmented passes)."""
        return (2 if self.evaluation.use_horizontal_flipping_in_evaluation else 1) * \
            self.evaluation.augmentation_num

    @property
    def evaluation_options(self):
        """The keyword arguments of `metrics.evaluate_features` the evaluation flags set."""
        evaluation = self.evaluation
        return dict(use_centroids=evaluation.use_centroids,
                    query_expansion_k=evaluation.query_expansion_k,
                    query_expansion_alpha=evaluation.query_expansion_alpha,
                    k1=evaluation.re_ranking_k1, k2=evaluation.re_ranking_k2,
                    lambda_value=evaluation.re_ranking_lambda)

    @property
    def checkpoint_metadata_values(self):
        """The model-shaping values a checkpoint records (see `MODEL_SHAPING`)."""
        flat = self.flat()
        return {name: flat[name] for name in MODEL_SHAPING}


def run_folder_name(dataset_name, backbone_model_name):
    """``Market1501_resnet50``; datasets trained on together are joined by "+"."""
    names = "+".join(name.strip() for name in str(dataset_name).split(","))
    return "{}_{}".format(names, backbone_model_name)


def find_saved_config(flag_values):
    """Path of the config.json that ``--resume`` / ``--evaluation_only`` read back, or None.

    Evaluation reads the one beside ``--pretrained_model_file_path``. Resuming reads the run
    folder's: ``--output_folder_path`` is the run folder itself, or its parent holding the run
    of the flags' dataset and backbone, or holding just one run."""
    if flag_values["evaluation_only"] and flag_values["pretrained_model_file_path"]:
        path = os.path.join(os.path.dirname(os.path.abspath(
            flag_values["pretrained_model_file_path"])), CONFIG_FILE_NAME)
        return path if os.path.isfile(path) else None
    if not flag_values["resume"]:
        return None
    output = os.path.abspath(flag_values["output_folder_path"])
    for path in (os.path.join(output, CONFIG_FILE_NAME), os.path.join(output, run_folder_name(
            flag_values["dataset_name"], flag_values["backbone_model_name"]), CONFIG_FILE_NAME)):
        if os.path.isfile(path):
            return path
    runs = sorted(glob.glob(os.path.join(glob.escape(output), "*", CONFIG_FILE_NAME)))
    if len(runs) > 1:
        raise OptionError("--resume: {} holds several runs ({}); pass the one to continue as "
                          "--output_folder_path.".format(output, ", ".join(
                              os.path.dirname(path) for path in runs)))
    return runs[0] if runs else None


def resolve(flag_values, explicit_names=()):
    """The run's `RunConfig`: the flags, or with ``--resume`` / ``--evaluation_only`` the saved
    config.json overridden by the flags given explicitly (``explicit_names``).

    An explicit model-shaping flag that differs from the saved run is an `OptionError` naming
    the flag. Returns ``(config, saved_path or None)``."""
    flag_values = {name: flag_values[name] for name in FLAG_NAMES}
    path = find_saved_config(flag_values)
    if path is None:
        return RunConfig.from_flag_values(flag_values), None
    saved = RunConfig.load_values(path)
    conflicts = ["--{}={} (the run was trained with {})".format(
        name, flag_values[name], saved[name]) for name in MODEL_SHAPING
        if name in explicit_names and flag_values[name] != saved[name]]
    if conflicts:
        raise OptionError("{} conflicts with the saved run {}, whose weights depend on it. Leave "
                          "the flag out (the saved value is used) or train a new run.".format(
                              " and ".join(conflicts), path))
    merged = dict(saved)
    if flag_values["evaluation_only"]:
        merged["testing_size"] = 1.0  # a checkpoint is evaluated on the full test set
    merged.update({name: flag_values[name] for name in explicit_names if name in flag_values})
    merged.update({name: flag_values[name] for name in GROUPS["run"]})
    if flag_values["resume"]:
        # The run folder is <output_folder_path>/<dataset>_<backbone>, whichever form was given.
        merged["output_folder_path"] = os.path.dirname(os.path.dirname(path))
    return RunConfig.from_flag_values(merged), path


def explicit_flag_names(flag_values_object):
    """Names of the configuration's flags given on the command line or in a flag file
    (an alias such as --min_value_in_clipping counts for the flag it stands for)."""
    return {name for name in FLAG_NAMES if flag_values_object[name].present}
