"""Rebuilds a trained run's models from its folder: ``config.json`` says how to build them, the
checkpoint's metadata how many identities it was trained on, the checkpoint holds the weights.

    run = load_run("results/Market1501_resnet50")          # or .../training_model.h5
    run.models.inference_model, run.config, run.fingerprint
"""
import collections
import hashlib
import json
import os

from training.config import CONFIG_FILE_NAME, RunConfig

CHECKPOINT_FILE_NAME = "training_model.h5"
LoadedRun = collections.namedtuple("LoadedRun", "config models checkpoint_path metadata fingerprint")


def locate_run(path):
    """``(config.json, checkpoint)`` paths of a run folder or of a checkpoint inside one."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        folder, checkpoint = path, os.path.join(path, CHECKPOINT_FILE_NAME)
    elif os.path.isfile(path):
        folder, checkpoint = os.path.dirname(path), path
    else:
        raise FileNotFoundError("{} does not exist. Pass a run folder (it holds {} and {}) or "
                                "its checkpoint.".format(path, CONFIG_FILE_NAME,
                                                         CHECKPOINT_FILE_NAME))
    config_path = os.path.join(folder, CONFIG_FILE_NAME)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            "{} has no {} beside it, so its model cannot be rebuilt. Checkpoints written by this "
            "toolkit sit in a run folder with their config.json; for an older checkpoint, run "
            "solution.py --evaluation_only with the flags of its training run once, which "
            "writes one.".format(path, CONFIG_FILE_NAME))
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError("The run folder {} has no {} yet (training has not saved a "
                                "model).".format(folder, CHECKPOINT_FILE_NAME))
    return config_path, checkpoint


def inference_config(config_path):
    """The saved configuration, made loadable anywhere: no ImageNet download (the checkpoint
    holds every weight) and no dataset needed (the root folder is not read)."""
    values = RunConfig.load_values(config_path)
    values.update(backbone_weights="none", pretrained_model_file_path=None,
                  evaluation_only=False, resume=False, deterministic=False)
    if values["dataset_name"] != "Synthetic" and not os.path.isdir(values["root_folder_path"]):
        values["root_folder_path"] = os.path.dirname(config_path)
    return RunConfig.from_flag_values(values)


def file_digest(path, chunk_size=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_fingerprint(config, checkpoint_path):
    """What makes two embeddings comparable: the model-shaping values, the evaluation's flip
    averaging and the checkpoint's bytes (16 hex digits)."""
    shaping = dict(config.checkpoint_metadata_values,
                   evaluation_feature=config.evaluation.evaluation_feature,
                   flip=config.evaluation.use_horizontal_flipping_in_evaluation,
                   checkpoint=file_digest(checkpoint_path))
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


def load_run(path):
    """The run's `LoadedRun`, its training and inference models holding the checkpoint's
    weights."""
    from callbacks.checkpoint import load_model_weights, read_checkpoint_metadata
    from applications.reid_model import load_training_weights
    from training.trainer import Trainer

    config_path, checkpoint_path = locate_run(path)
    config = inference_config(config_path)
    try:
        metadata = read_checkpoint_metadata(checkpoint_path) or {}
    except OSError as error:
        raise ValueError("{} is not an HDF5 weights file ({}).".format(checkpoint_path,
                                                                        error)) from error
    if "num_classes" not in metadata:
        raise ValueError("{} does not record its class count; it was not written by this "
                         "toolkit's training.".format(checkpoint_path))
    trainer = Trainer(config)
    models = trainer.build_models(num_classes=int(metadata["num_classes"]))
    expected = dict(config.checkpoint_metadata_values, num_classes=int(metadata["num_classes"]))
    load_model_weights(models.training_model, checkpoint_path, expected,
                       load=lambda weights_path: load_training_weights(models, weights_path))
    return LoadedRun(config, models, checkpoint_path, metadata,
                     model_fingerprint(config, checkpoint_path))
