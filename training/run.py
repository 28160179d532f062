"""The steps solution.py calls in order: data, models, the two training stages, evaluation."""
import json
import os
from types import SimpleNamespace

import numpy as np

from training.options import OptionError, seed_everything, validate_options  # noqa: F401
from utils.tf_env import keras

CHECKPOINT_FILE_NAME = "training_model.h5"


# ----------------------------------------------------------------------------------- data
def load_data(options):
    """Loads the splits, applies testing_size / validation_size and builds the sampler."""
    from datasets import load_accumulated_info_of_dataset
    from datasets.sampler import PKSampler
    from datasets.splits import apply_testing_size, split_validation

    print("Loading the annotations of the {} dataset ...".format(options.dataset_name))
    train_df, query_df, gallery_df, label_encoder_dict = load_accumulated_info_of_dataset(
        options.root_folder_path, options.dataset_name)
    label_encoder = label_encoder_dict["identity_ID"]
    valid_query_df = valid_gallery_df = None
    if options.validation_size != 0:
        train_df, valid_query_df, valid_gallery_df = split_validation(
            train_df, options.validation_size, len(query_df), len(gallery_df))
    if options.testing_size == 0:
        query_df = gallery_df = None
    elif options.testing_size != 1:
        query_df, gallery_df = apply_testing_size(query_df, gallery_df, options.testing_size)
    labels = label_encoder.transform(train_df["identity_ID"]).astype(np.int32)
    sampler = PKSampler(train_df["identity_ID"].to_numpy(),
                        identity_num_per_batch=options.identity_num_per_batch,
                        image_num_per_identity=options.image_num_per_identity,
                        steps_per_epoch=options.steps_per_epoch,
                        use_identity_balancing=options.use_identity_balancing_in_training,
                        seed=options.seed)
    return SimpleNamespace(train_df=train_df, labels=labels, label_encoder=label_encoder,
                           num_classes=len(label_encoder.classes_), sampler=sampler,
                           query_df=query_df, gallery_df=gallery_df,
                           valid_query_df=valid_query_df, valid_gallery_df=valid_gallery_df)


def make_augmentor(options):
    from datasets.augmentation import AdaptiveL2Augmentor, FlipReIDAugmentor
    if options.image_augmentor_name == "FlipReIDImageAugmentor":
        return FlipReIDAugmentor(options.image_height, options.image_width,
                                 options.patch_replacement_probability,
                                 options.random_erasing_probability, seed=options.seed)
    return AdaptiveL2Augmentor(options.image_height, options.image_width,
                               name=options.image_augmentor_name, seed=options.seed)


# ---------------------------------------------------------------------------------- model
def checkpoint_metadata(options, num_classes):
    """What a checkpoint must share with the model it is loaded into."""
    return dict(backbone_model_name=options.backbone_model_name, num_classes=int(num_classes),
                image_height=options.image_height, image_width=options.image_width,
                region_num=options.region_num, pooling_mode=options.pooling_mode,
                use_adaptive_l1_l2_regularizer=options.use_adaptive_l1_l2_regularizer,
                backbone_last_stride=options.backbone_last_stride,
                classifier_head=options.classifier_head)


def build_models(options, data):
    from applications import get_backbone
    from applications.regularization import RegularizationConfig
    from applications.reid_model import build_reid_models

    weights = options.backbone_weights
    weights = None if weights.lower() == "none" else weights
    if options.evaluation_only or options.resume:
        weights = None  # every weight comes from the checkpoint
    input_shape = (options.image_height, options.image_width, 3)
    backbone = get_backbone(options.backbone_model_name, input_shape=input_shape,
                            weights=weights, last_stride=options.backbone_last_stride)
    regularization = RegularizationConfig(
        kernel=options.kernel_regularization_factor, bias=options.bias_regularization_factor,
        gamma=options.gamma_regularization_factor, beta=options.beta_regularization_factor,
        adaptive=options.use_adaptive_l1_l2_regularizer)
    models = build_reid_models(
        backbone, data.num_classes, region_num=options.region_num,
        pooling_mode=options.pooling_mode, min_value=options.min_value,
        max_value=options.max_value,
        use_horizontal_flipping_inside_model=options.use_horizontal_flipping_inside_model,
        flipping_loss_weight=options.flipping_loss_weight, regularization=regularization,
        input_shape=input_shape, classifier_head=options.classifier_head,
        evaluation_feature=options.evaluation_feature)
    if options.batch_normalization_momentum is not None:
        set_batch_normalization_momentum(models.training_model,
                                         options.batch_normalization_momentum)
    return models


def set_batch_normalization_momentum(model, momentum):
    """Sets the momentum of every BatchNormalization layer inside `model`; returns their count."""
    layers = [module for module in model.submodules
              if isinstance(module, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.momentum = momentum
    return len(layers)


def loss_weights(models, options):
    """Weight of each output's loss: triplet on embeddings, 1 on softmax outputs."""
    weights = {name: options.triplet_loss_weight for name in models.embedding_output_names}
    weights.update({name: 1.0 for name in models.softmax_output_names})
    return weights


# ------------------------------------------------------------------------------ callbacks
def make_evaluators(options, data, models, epoch_num):
    from callbacks.evaluator import Evaluator
    evaluators = []
    for split_name, query_df, gallery_df, every in (
            ("valid", data.valid_query_df, data.valid_gallery_df,
             options.evaluate_validation_every_N_epochs),
            ("test", data.query_df, data.gallery_df, options.evaluate_testing_every_N_epochs)):
        if query_df is None or every == 0:
            continue
        evaluators.append(Evaluator(
            models.inference_model, split_name, query_df, gallery_df, options.image_height,
            options.image_width, every_N_epochs=every, epoch_num=epoch_num,
            batch_size=options.identity_num_per_batch * options.image_num_per_identity,
            use_horizontal_flipping=options.use_horizontal_flipping_in_evaluation,
            use_re_ranking=options.use_re_ranking,
            output_folder_path=options.output_folder_path,
            save_data_to_disk=options.save_data_to_disk,
            augmentor=make_augmentor(options) if options.use_data_augmentation_in_evaluation
            else None, augmentation_num=options.augmentation_num))
    return evaluators


def selection_monitor(options, evaluators):
    """Validation mAP if there is a validation split; the test mAP only when asked."""
    from callbacks.evaluator import log_key_prefix
    names = [evaluator.split_name for evaluator in evaluators]
    split = "valid" if "valid" in names else (
        "test" if options.select_model_on_testing and "test" in names else None)
    if split is None:
        return None
    return log_key_prefix(split, "cosine", options.use_re_ranking) + "_mAP_score"


def learning_rate_callback(options):
    from utils.learning_rate import learning_rate_schedule

    def schedule(epoch_index, _=None):
        return learning_rate_schedule(
            epoch_index, options.learning_rate_mode, options.learning_rate_start,
            options.learning_rate_end, options.learning_rate_base,
            options.learning_rate_warmup_epochs, options.learning_rate_steady_epochs,
            options.learning_rate_drop_factor, options.learning_rate_lower_bound,
            options.epoch_num)
    return keras.callbacks.LearningRateScheduler(schedule, verbose=1)


def time_budget(options, evaluators):
    """A `TimeBudget` that re-plans options.epoch_num (hence the learning-rate schedule) and
    the evaluators' last epoch."""
    from callbacks.time_budget import TimeBudget

    def set_epoch_num(epoch_num):
        options.epoch_num = epoch_num
        for evaluator in evaluators:
            evaluator.epoch_num = epoch_num

    passes = (2 if options.use_horizontal_flipping_in_evaluation else 1) * \
        options.augmentation_num / (2 if options.use_horizontal_flipping_inside_model else 1)
    evaluation_images = passes * sum(len(evaluator.query_df) + len(evaluator.gallery_df)
                                     for evaluator in evaluators)
    if options.use_re_ranking:
        evaluation_images *= 1.5  # sparse re-ranking costs about half the extraction
    batch_size = options.identity_num_per_batch * options.image_num_per_identity
    return TimeBudget(options.deadline, options.epoch_num, options.steps_per_epoch * batch_size,
                      evaluation_images, listeners=[set_epoch_num])


# ------------------------------------------------------------------------------- training
def prepare_output_folder(options, resume_state):
    if resume_state.exists and not options.resume:
        raise OptionError(
            "The output folder {} already holds a run. Pass --resume to continue it, or "
            "choose another --output_folder_path (nothing was changed).".format(
                options.output_folder_path))
    os.makedirs(options.output_folder_path, exist_ok=True)


def train(options, data, models):
    from applications.reid_model import (compile_training_model, load_training_weights,
                                         set_backbone_trainable)
    from callbacks.checkpoint import (ModelSelectionCheckpoint, NaNGuard, ResumeCheckpoint,
                                      ResumeState, load_model_weights)
    from callbacks.history_logger import HistoryLogger
    from callbacks.inspection import (InspectGeMPoolingParameters,
                                      InspectRegularizationFactors, ThroughputLogger)
    from datasets.pipeline import make_training_dataset
    from training.optimizer import make_optimizer

    training_model = models.training_model
    # One optimizer across both stages, as the originals; built for every variable, so the
    # ones unfrozen in stage B already have their slots.
    optimizer = make_optimizer(options.weight_decay)
    optimizer.build([variable for variable in training_model.variables if variable.trainable])
    resume_state = ResumeState(os.path.join(options.output_folder_path, "resume"),
                               training_model, optimizer)
    prepare_output_folder(options, resume_state)
    metadata = checkpoint_metadata(options, data.num_classes)
    start_stage, start_epoch, best = 0, 0, -np.inf
    if options.resume and resume_state.exists:
        start_stage, start_epoch, best = resume_state.restore()
        print("Resuming stage {} at epoch {} from {}.".format(
            start_stage, start_epoch + 1, resume_state.manager.latest_checkpoint))
    elif options.pretrained_model_file_path:
        load_model_weights(training_model, options.pretrained_model_file_path, metadata,
                           load=lambda path: load_training_weights(models, path))

    augmentor = make_augmentor(options) if options.use_data_augmentation_in_training else None
    dataset = make_training_dataset(
        data.train_df["image_file_path"].tolist(), data.labels, data.sampler,
        options.image_height, options.image_width, augmentor=augmentor,
        workers=options.workers, cache_images=options.cache_images, seed=options.seed)

    checkpoint_path = os.path.join(options.output_folder_path, CHECKPOINT_FILE_NAME)
    stages = [("training_A", options.freeze_backbone_for_N_epochs, False),
              ("training_B", options.epoch_num, True)]
    nan_guard = NaNGuard()
    print("Perform training ...")
    for stage_index, (stage_name, epochs, backbone_trainable) in enumerate(stages):
        initial_epoch = start_epoch if stage_index == start_stage else 0
        if stage_index < start_stage or initial_epoch >= epochs:
            continue
        print("Stage {}: {} epochs, backbone {}.".format(
            stage_name, epochs, "trainable" if backbone_trainable else "frozen"))
        set_backbone_trainable(models, backbone_trainable)
        compile_training_model(models, optimizer, label_smoothing=options.label_smoothing,
                               cosine_scale=options.cosine_scale,
                               cosine_margin=options.cosine_margin,
                               loss_weights=loss_weights(models, options))
        evaluators = make_evaluators(options, data, models, options.epoch_num)
        callbacks = [ThroughputLogger(options.identity_num_per_batch *
                                      options.image_num_per_identity), nan_guard]
        selection = None
        stage_folder = os.path.join(options.output_folder_path, stage_name)
        if backbone_trainable:
            callbacks += [InspectGeMPoolingParameters(models.gem_layers),
                          InspectRegularizationFactors(models.regularization_terms, stage_folder)]
        if backbone_trainable and options.deadline:
            callbacks.append(time_budget(options, evaluators))
        callbacks += evaluators
        if backbone_trainable:
            selection = ModelSelectionCheckpoint(checkpoint_path, metadata,
                                                 selection_monitor(options, evaluators), best)
            callbacks.append(selection)
        callbacks += [ResumeCheckpoint(resume_state, stage_index, selection),
                      learning_rate_callback(options),
                      HistoryLogger(stage_folder)]
        training_model.fit(dataset, steps_per_epoch=options.steps_per_epoch, epochs=epochs,
                           initial_epoch=initial_epoch, callbacks=callbacks, verbose=2)
        if nan_guard.failure:
            raise FloatingPointError(
                "Training stopped: the {}. The last good state is kept in {}; lower the "
                "learning rate (--learning_rate_base) and pass --resume.".format(
                    nan_guard.failure, options.output_folder_path))
        for evaluator in evaluators:
            if evaluator.last_result is not None:
                report(evaluator, options)
    if not os.path.isfile(checkpoint_path):
        from callbacks.checkpoint import save_model_weights
        set_backbone_trainable(models, True)  # checkpoints always list weights in this state
        save_model_weights(training_model, checkpoint_path, metadata)


def report(evaluator, options):
    """Prints the latest metrics of an evaluator and writes them to <split>_metrics.json."""
    result = evaluator.last_result
    summary = {"split": evaluator.split_name, "mAP": float(result["mAP"]),
               "rank-1": float(result["cmc"][0]), "rank-5": float(result["cmc"][4])
               if len(result["cmc"]) > 4 else None, "mINP": float(result["mINP"]),
               "use_re_ranking": evaluator.use_re_ranking,
               "use_horizontal_flipping_in_evaluation": evaluator.use_horizontal_flipping}
    print("{split}: mAP {mAP:.4f} rank-1 {rank-1:.4f} mINP {mINP:.4f}".format(**summary))
    path = os.path.join(options.output_folder_path, "{}_metrics.json".format(
        evaluator.split_name))
    from utils.files import atomic_write
    with atomic_write(path, "w") as file:
        json.dump(summary, file, indent=2)
    return summary


def evaluate_only(options, data, models):
    """Loads --pretrained_model_file_path and evaluates it once (no fit, nothing trained)."""
    from applications.reid_model import load_training_weights
    from callbacks.checkpoint import load_model_weights
    from callbacks.history_logger import HistoryLogger
    from callbacks.inspection import InspectGeMPoolingParameters, InspectRegularizationFactors

    os.makedirs(options.output_folder_path, exist_ok=True)
    load_model_weights(models.training_model, options.pretrained_model_file_path,
                       checkpoint_metadata(options, data.num_classes),
                       load=lambda path: load_training_weights(models, path))
    logs = {}
    evaluation_folder = os.path.join(options.output_folder_path, "evaluation")
    for callback in (InspectGeMPoolingParameters(models.gem_layers),
                     InspectRegularizationFactors(models.regularization_terms, evaluation_folder)):
        callback.on_epoch_end(0, logs)
    evaluators = make_evaluators(options, data, models, epoch_num=1)
    for evaluator in evaluators:
        logs.update(evaluator.evaluate())
    HistoryLogger(evaluation_folder).on_epoch_end(0, logs)
    return [report(evaluator, options) for evaluator in evaluators]
