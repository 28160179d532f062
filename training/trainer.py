"""The Trainer: data, models, optimizer and callbacks built from one `RunConfig` through small
``build_*`` seams, then the two training stages (frozen backbone, then all) or evaluation only.

    trainer = Trainer(config)
    trainer.train()      # or trainer.evaluate() for --evaluation_only

Subclass it to change one piece (a loss, a strategy scope, a callback) without copying the rest.

Under a distribution strategy (``--distribution_strategy``) the models, optimizer and centers are
built in its scope, each replica gets whole identities of the PK batch, and only the chief (worker
0) writes the run folder: it keeps a copy of the models outside the strategy, refreshed at each
epoch end, for evaluation and the HDF5 checkpoints, so the other workers never wait for it.
"""
import collections
import json
import os
import shutil
import tempfile
import time
from types import SimpleNamespace

import numpy as np

from applications import get_backbone
from applications.regularization import RegularizationConfig
from applications.reid_model import (build_reid_models, compile_training_model,
                                     load_training_weights, set_backbone_trainable,
                                     transfer_weights)
from callbacks.checkpoint import (ModelSelectionCheckpoint, NaNGuard, ResumeCheckpoint,
                                  ResumeState, checkpoint_num_classes, load_model_weights,
                                  save_model_weights)
from callbacks.evaluator import Evaluator, log_key_prefix, log_key_suffix
from callbacks.history_logger import HistoryLogger
from callbacks.inspection import (InspectGeMPoolingParameters, InspectRegularizationFactors,
                                  ThroughputLogger)
from callbacks.time_budget import TimeBudget
from datasets import load_accumulated_info_of_dataset
from losses.center import CenterLoss
from datasets.image_check import check_image_files
from datasets.splits import apply_testing_size, split_validation
from pipeline.augmentation import AdaptiveL2Augmentor, FlipReIDAugmentor
from pipeline.sampler import PKSampler
from pipeline.training_input import make_training_dataset
from training.config import CONFIG_FILE_NAME, OptionError
from training.distribution import (WorkerRole, check_replica_split, copy_local_weights,
                                   learning_rate_factor, make_strategy, replica_rows,
                                   set_synchronized_batch_normalization)
from training.optimizer import make_optimizer
from utils.files import atomic_write
from utils.learning_rate import EpochSchedule
from utils.run_lock import RunLock
from utils.tf_env import keras, tf
from visualization.training_batch import write_training_batch

CHECKPOINT_FILE_NAME = "training_model.h5"
Stage = collections.namedtuple("Stage", "index name epochs backbone_trainable")
# What a collective op raises when a peer worker is gone (or the health check gave up on it).
PEER_FAILURES = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                 tf.errors.CancelledError, tf.errors.AbortedError)


class WorkerLostError(RuntimeError):
    """A multi-worker run stopped because another worker died or cannot be reached."""


class Trainer:
    """Runs one configuration. ``start_time`` (a ``time.time()``) starts the time budget's
    clock; solution.py passes the process start, so loading TensorFlow counts too.
    ``strategy``: a ``tf.distribute`` strategy (default: the one ``--distribution_strategy``
    names, created here, so create the Trainer before other TensorFlow work)."""

    def __init__(self, config, start_time=None, strategy=None):
        self.config = config
        self.start_time = time.time() if start_time is None else start_time
        self.strategy = strategy if strategy is not None else make_strategy(
            config.run.distribution_strategy, config.run.multi_worker_port_base)
        self.role = WorkerRole.of(self.strategy)
        if self.role.distributed:
            check_replica_split(config.data.identity_num_per_batch, self.role.num_replicas)
            print("Distributed training: {} replicas on {} worker(s); this is worker {}{}.".format(
                self.role.num_replicas, self.role.num_workers, self.role.worker_index,
                " (the chief)" if self.role.is_chief else ""))
        self._worker_folder = None
        self.local_models = None  # the chief's copy outside the strategy (distributed runs)
        self.data = self.models = self.optimizer = self.num_classes = None
        # Owned run-time state: the schedule's horizon follows the time budget's plan.
        self.schedule = EpochSchedule.from_solver(config.solver)
        self.nan_guard = NaNGuard()
        self.best = -np.inf
        self.evaluators, self.selection = [], None
        self.center_losses, self.center_optimizer = {}, None

    @property
    def run_folder(self):
        """Where this process writes: the run folder, or for a worker other than the chief a
        temporary folder of its own (removed at the end)."""
        if self.role.is_chief:
            return self.config.run_folder
        if self._worker_folder is None:
            self._worker_folder = tempfile.mkdtemp(prefix="reid_worker{}_".format(
                self.role.worker_index))
        return self._worker_folder

    @property
    def evaluation_models(self):
        """The models evaluated and saved: the chief's local copy in a distributed run."""
        return self.models if self.local_models is None else self.local_models

    @property
    def checkpoint_path(self):
        return os.path.join(self.run_folder, CHECKPOINT_FILE_NAME)

    # ---------------------------------------------------------------------------- data
    def build_data(self):
        """Loads the splits, applies testing_size / validation_size, checks every image's header
        and builds the sampler."""
        data_config = self.config.data
        print("Loading the annotations of the {} dataset ...".format(data_config.dataset_name))
        train_df, query_df, gallery_df, label_encoder_dict = load_accumulated_info_of_dataset(
            data_config.root_folder_path, data_config.dataset_name)
        label_encoder = label_encoder_dict["identity_ID"]
        valid_query_df = valid_gallery_df = None
        if data_config.validation_size != 0:
            train_df, valid_query_df, valid_gallery_df = split_validation(
                train_df, data_config.validation_size, len(query_df), len(gallery_df))
        if data_config.testing_size == 0:
            query_df = gallery_df = None
        elif data_config.testing_size != 1:
            query_df, gallery_df = apply_testing_size(query_df, gallery_df,
                                                      data_config.testing_size)
        # A cheap header check of every image now, before the run folder is made; the
        # training input decodes the training images again before the first step.
        for what, frames in (("training", (train_df,)), ("evaluation", (
                query_df, gallery_df, valid_query_df, valid_gallery_df))):
            check_image_files([path for frame in frames if frame is not None
                               for path in frame["image_file_path"]], what,
                              workers=data_config.workers)
        sampler = PKSampler(train_df["identity_ID"].to_numpy(),
                            identity_num_per_batch=data_config.identity_num_per_batch,
                            image_num_per_identity=data_config.image_num_per_identity,
                            steps_per_epoch=self.config.solver.steps_per_epoch,
                            use_identity_balancing=data_config.use_identity_balancing_in_training,
                            seed=self.config.run.seed)
        self.data = SimpleNamespace(
            train_df=train_df, label_encoder=label_encoder, sampler=sampler,
            labels=label_encoder.transform(train_df["identity_ID"]).astype(np.int32),
            num_classes=len(label_encoder.classes_), query_df=query_df, gallery_df=gallery_df,
            valid_query_df=valid_query_df, valid_gallery_df=valid_gallery_df)
        return self.data

    def build_augmentor(self):
        data_config, seed = self.config.data, self.config.run.seed
        if data_config.image_augmentor_name == "FlipReIDImageAugmentor":
            return FlipReIDAugmentor(data_config.image_height, data_config.image_width,
                                     data_config.patch_replacement_probability,
                                     data_config.random_erasing_probability, seed=seed)
        return AdaptiveL2Augmentor(data_config.image_height, data_config.image_width,
                                   name=data_config.image_augmentor_name, seed=seed)

    def build_training_dataset(self):
        """The live PK-batch input (every training image is checked before the first batch);
        its first batch is also drawn to ``training_batch.png``. Distributed, every worker
        samples the same global batches (the sampler's seed) and reads only its replicas'
        identities."""
        data_config = self.config.data
        augmentor = (self.build_augmentor() if data_config.use_data_augmentation_in_training
                     else None)
        paths = self.data.train_df["image_file_path"].tolist()
        if self.role.is_chief:
            write_training_batch(
                paths, self.data.labels, self.data.sampler, augmentor,
                os.path.join(self.run_folder, "training_batch.png"), data_config.image_height,
                data_config.image_width, seed=self.config.run.seed,
                identities=self.data.train_df["identity_ID"].to_numpy())

        def make(batch_slices=None):
            return make_training_dataset(
                paths, self.data.labels, self.data.sampler, data_config.image_height,
                data_config.image_width, augmentor=augmentor, workers=data_config.workers,
                cache_images=data_config.cache_images, seed=self.config.run.seed,
                batch_slices=batch_slices)

        if not self.role.distributed:
            return make()
        replicas = self.role.num_replicas
        if self.config.run.seed is None:
            raise OptionError("A distributed run needs --seed: every worker must draw the same "
                              "PK batches.")

        def worker_dataset(context):
            # This worker's replicas take consecutive elements, in replica order.
            local = context.num_replicas_in_sync // context.num_input_pipelines
            first = context.input_pipeline_id * local
            return make([replica_rows(self.config.batch_size, replicas, first + index)
                         for index in range(local)])

        return self.strategy.distribute_datasets_from_function(worker_dataset)

    # --------------------------------------------------------------------------- model
    def build_models(self, num_classes=None):
        """The `ReIDModels` (``num_classes`` defaults to the loaded training identities), in
        the strategy's scope; the chief of a distributed run also builds its local copy."""
        self.num_classes = self.data.num_classes if num_classes is None else int(num_classes)
        with self.strategy.scope():
            self.models = self.make_models(self.num_classes)
            if self.config.loss.center_loss_weight:
                self.build_center_losses(self.num_classes)
        if self.role.distributed and self.config.distribution.sync_batch_normalization:
            set_synchronized_batch_normalization(self.models.training_model)
        if self.role.distributed and self.role.is_chief:
            self.local_models = self.make_models(self.num_classes, backbone_weights=False)
        return self.models

    def sync_local_models(self):
        """Copies the trained weights into the chief's local copy (no collective op)."""
        if self.local_models is not None:
            copy_local_weights(self.strategy, self.models.training_model,
                               self.local_models.training_model)

    def make_models(self, num_classes, backbone_weights=True):
        """New `ReIDModels` of this configuration with ``num_classes`` identities (without
        pretrained backbone weights if not ``backbone_weights``)."""
        if self.config.distribution.mixed_precision:
            # Layers keep the policy they were built under: set it for the build only.
            previous = keras.mixed_precision.global_policy()
            keras.mixed_precision.set_global_policy("mixed_float16")
            try:
                return self._make_models(num_classes, backbone_weights)
            finally:
                keras.mixed_precision.set_global_policy(previous)
        return self._make_models(num_classes, backbone_weights)

    def _make_models(self, num_classes, backbone_weights):
        model_config, run_config = self.config.model, self.config.run
        weights = model_config.backbone_weights
        weights = None if weights.lower() == "none" else weights
        if run_config.evaluation_only or run_config.resume or \
                run_config.pretrained_model_file_path or not backbone_weights:
            weights = None  # every backbone weight comes from the checkpoint
        backbone = get_backbone(model_config.backbone_model_name,
                                input_shape=self.config.input_shape, weights=weights,
                                last_stride=model_config.backbone_last_stride)
        regularization = self.regularization_config()
        models = build_reid_models(
            backbone, num_classes,
            region_num=model_config.region_num, pooling_mode=model_config.pooling_mode,
            min_value=model_config.min_value, max_value=model_config.max_value,
            use_horizontal_flipping_inside_model=(
                model_config.use_horizontal_flipping_inside_model),
            flipping_loss_weight=self.config.loss.flipping_loss_weight,
            regularization=regularization, input_shape=self.config.input_shape,
            classifier_head=model_config.classifier_head,
            evaluation_feature=self.config.evaluation.evaluation_feature,
            circle_loss=self.config.loss.circle_loss_weight > 0)
        if model_config.batch_normalization_momentum is not None:
            set_batch_normalization_momentum(models.training_model,
                                             model_config.batch_normalization_momentum)
        return models

    def regularization_config(self):
        """The L2 terms' factors (a seam: a subclass may return another form, e.g. unfused)."""
        model_config = self.config.model
        return RegularizationConfig(
            kernel=model_config.kernel_regularization_factor,
            bias=model_config.bias_regularization_factor,
            gamma=model_config.gamma_regularization_factor,
            beta=model_config.beta_regularization_factor,
            adaptive=model_config.use_adaptive_l1_l2_regularizer)

    def build_center_losses(self, num_classes):
        """One center loss per branch embedding, with the centers' own SGD."""
        loss_config, models = self.config.loss, self.models
        seed = self.config.run.seed
        self.center_losses = {
            name: CenterLoss(num_classes, size, seed=None if seed is None else seed + index,
                             name=name + "_center_loss")
            for index, (name, size) in enumerate(zip(models.embedding_output_names,
                                                     models.embedding_sizes))}
        optimizer = next(iter(self.center_losses.values())).make_optimizer(
            loss_config.center_learning_rate)
        models.training_model.set_center_losses(self.center_losses,
                                                loss_config.center_loss_weight, optimizer)
        self.center_optimizer = optimizer

    def build_optimizer(self):
        """One optimizer for both stages, as the originals; built on every variable, so the
        ones unfrozen in stage B already have their slots. With mixed precision it is wrapped
        once in a dynamic `LossScaleOptimizer`: one loss scale for the whole run, saved in the
        resume state."""
        solver = self.config.solver
        with self.strategy.scope():
            optimizer = make_optimizer(solver.weight_decay, name=solver.optimizer,
                                       momentum=solver.sgd_momentum,
                                       nesterov=solver.sgd_nesterov)
            if self.config.distribution.mixed_precision:
                optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
            optimizer.build([variable for variable in self.models.training_model.variables
                             if variable.trainable])
        self.optimizer = optimizer
        return self.optimizer

    def learning_rate(self, epoch_index, current_learning_rate=None):
        """The schedule's learning rate of ``epoch_index``, times the scaling rule's factor."""
        distribution = self.config.distribution
        factor = learning_rate_factor(distribution.learning_rate_scaling, self.config.batch_size,
                                      distribution.learning_rate_reference_batch_size)
        return factor * self.schedule(epoch_index, current_learning_rate)

    def compile(self, **compile_kwargs):
        """Compiles the training model for the backbone's current trainable state
        (``compile_kwargs``, e.g. ``jit_compile``, go to Keras' ``compile``)."""
        loss_config = self.config.loss
        margin = "soft" if loss_config.triplet_margin is None else loss_config.triplet_margin
        return compile_training_model(
            self.models, self.optimizer, label_smoothing=loss_config.label_smoothing,
            margin=margin, cosine_scale=loss_config.cosine_scale,
            cosine_margin=loss_config.cosine_margin,
            loss_options=dict(
                hard_factor=loss_config.triplet_hard_factor,
                circle_margin=loss_config.circle_margin, circle_gamma=loss_config.circle_gamma,
                gather_across_replicas=(
                    self.config.distribution.gather_embeddings_across_replicas)),
            loss_weights=loss_weights(self.models, loss_config.triplet_loss_weight,
                                      loss_config.circle_loss_weight),
            **dict(dict(jit_compile=self.config.distribution.jit_compile), **compile_kwargs))

    def checkpoint_metadata(self):
        """What a checkpoint must share with the model it is loaded into."""
        return dict(self.config.checkpoint_metadata_values, num_classes=self.num_classes)

    def load_checkpoint(self, path):
        """Loads a checkpoint into the models. One trained on another class count (another
        dataset) gives every weight but the classifiers', which start afresh (fine-tuning)."""
        classes = checkpoint_num_classes(path)
        if classes is None or classes == self.num_classes:
            return load_model_weights(self.models.training_model, path,
                                      self.checkpoint_metadata(),
                                      load=lambda weights_path: load_training_weights(
                                          self.models, weights_path))
        source = self.make_models(classes)
        metadata = load_model_weights(
            source.training_model, path, dict(self.checkpoint_metadata(), num_classes=classes),
            load=lambda weights_path: load_training_weights(source, weights_path))
        skipped = transfer_weights(source, self.models)
        print("{} was trained on {} identities, this run has {}: loaded every weight but the "
              "classifiers' ({}), which start afresh.".format(
                  path, classes, self.num_classes, ", ".join(skipped)))
        return metadata

    # ----------------------------------------------------------------------- callbacks
    def build_evaluators(self):
        evaluation = self.config.evaluation
        evaluators = []
        for split_name, query_df, gallery_df, every in (
                ("valid", self.data.valid_query_df, self.data.valid_gallery_df,
                 evaluation.evaluate_validation_every_N_epochs),
                ("test", self.data.query_df, self.data.gallery_df,
                 evaluation.evaluate_testing_every_N_epochs)):
            if query_df is None or every == 0:
                continue
            evaluators.append(Evaluator(
                self.evaluation_models.inference_model, split_name, query_df, gallery_df,
                self.config.data.image_height, self.config.data.image_width,
                every_N_epochs=every, epoch_num=self.schedule.epoch_num,
                batch_size=self.config.batch_size,
                use_horizontal_flipping=evaluation.use_horizontal_flipping_in_evaluation,
                use_re_ranking=evaluation.use_re_ranking, metric=evaluation.distance_metric,
                evaluation_options=self.config.evaluation_options,
                output_folder_path=self.run_folder,
                save_data_to_disk=evaluation.save_data_to_disk,
                augmentor=(self.build_augmentor()
                           if evaluation.use_data_augmentation_in_evaluation else None),
                augmentation_num=evaluation.augmentation_num,
                visualize_num=evaluation.visualize_num))
        return evaluators

    def build_callbacks(self, stage, resume_state):
        """The callbacks of ``stage``, in the order Keras runs their epoch ends:

        1. throughput and the NaN guard (per batch; nothing depends on them);
        2. GeM powers and adaptive-L2 factors (stage B): values into the logs;
        3. the time budget (stage B, with a budget): re-plans the epoch count, so the
           evaluators and the schedule below already see the new last epoch;
        4. the evaluators: metrics into the logs;
        5. model selection (stage B): reads the evaluators' metrics;
        6. the resume state: saves the selection's best value with the weights;
        7. the learning-rate schedule, then the history logger, which records everything the
           callbacks above logged.

        In a distributed run the chief first refreshes its local copy of the models, which the
        callbacks of 2., 4. and 5. read; the other workers only keep the NaN guard, the resume
        state (written to their own folder) and the schedule.
        """
        trainable = stage.backbone_trainable
        stage_folder = os.path.join(self.run_folder, stage.name)
        schedule = keras.callbacks.LearningRateScheduler(self.learning_rate,
                                                         verbose=int(self.role.is_chief))
        if not self.role.is_chief:
            self.evaluators, self.selection = [], None
            return [self.nan_guard, ResumeCheckpoint(resume_state, stage.index), schedule]
        self.evaluators = self.build_evaluators()
        models = self.evaluation_models
        callbacks = [ThroughputLogger(self.config.batch_size), self.nan_guard]
        if self.local_models is not None:
            callbacks.insert(0, keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: self.sync_local_models()))
        if trainable:
            callbacks += [InspectGeMPoolingParameters(models.gem_layers),
                          InspectRegularizationFactors(models.regularization_terms,
                                                       stage_folder)]
        if trainable and self.config.solver.time_budget_minutes:
            callbacks.append(self.build_time_budget(self.evaluators))
        callbacks += self.evaluators
        selection = None
        if trainable:
            selection = ModelSelectionCheckpoint(self.checkpoint_path, self.checkpoint_metadata(),
                                                 self.selection_monitor(), self.best,
                                                 model=models.training_model)
            callbacks.append(selection)
        callbacks += [ResumeCheckpoint(resume_state, stage.index, selection), schedule,
                      HistoryLogger(stage_folder)]
        self.selection = selection
        return callbacks

    def selection_monitor(self):
        """Validation mAP if there is a validation split; the test mAP only when asked."""
        names = [evaluator.split_name for evaluator in self.evaluators]
        split = "valid" if "valid" in names else (
            "test" if self.config.evaluation.select_model_on_testing and "test" in names
            else None)
        if split is None:
            return None
        evaluation = self.config.evaluation
        return log_key_prefix(split, evaluation.distance_metric, evaluation.use_re_ranking,
                              log_key_suffix(self.config.evaluation_options)) + "_mAP_score"

    def build_time_budget(self, evaluators):
        """A `TimeBudget` whose plans move the schedule's horizon and the evaluators' last
        epoch."""
        def set_epoch_num(epoch_num):
            self.schedule.epoch_num = epoch_num
            for evaluator in evaluators:
                evaluator.epoch_num = epoch_num

        config = self.config
        # With the flip inside the model, one training image is two forward passes.
        passes = config.evaluation_passes / (
            2 if config.model.use_horizontal_flipping_inside_model else 1)
        evaluation_images = passes * sum(len(evaluator.query_df) + len(evaluator.gallery_df)
                                         for evaluator in evaluators)
        if config.evaluation.use_re_ranking:
            evaluation_images *= 1.5  # sparse re-ranking costs about half the extraction
        deadline = self.start_time + 60 * config.solver.time_budget_minutes
        return TimeBudget(deadline, self.schedule.epoch_num,
                          config.solver.steps_per_epoch * config.batch_size, evaluation_images,
                          listeners=[set_epoch_num])

    # ----------------------------------------------------------------------------- run
    def stages(self):
        solver = self.config.solver
        return [Stage(0, "training_A", solver.freeze_backbone_for_N_epochs, False),
                Stage(1, "training_B", self.schedule.epoch_num, True)]

    def setup(self):
        """Builds whatever is not built yet (data, models, optimizer), so a subclass or a
        benchmark can build a piece its own way first."""
        if self.data is None:
            self.build_data()
        if self.models is None:
            self.build_models()
        if self.optimizer is None:
            self.build_optimizer()

    def train(self):
        """Both stages, resuming from the run folder's state with ``--resume`` (every worker
        of a distributed run reads the chief's)."""
        if self.role.is_chief:
            self._refuse_finished_run()
        self.build_data()  # data errors stop the run before its folder is made
        try:
            with RunLock(self.run_folder):
                self._train()
        finally:
            if self._worker_folder is not None:
                shutil.rmtree(self._worker_folder, ignore_errors=True)

    def _train(self):
        self.setup()
        resume_state = ResumeState(
            os.path.join(self.run_folder, "resume"), self.models.training_model,
            self.optimizer, restore_folder=os.path.join(self.config.run_folder, "resume"),
            center_losses=list(self.center_losses.values()),
            center_optimizer=self.center_optimizer)
        start_stage, start_epoch = self._restore(resume_state)
        dataset = self.build_training_dataset()
        if self.role.is_chief:
            self.config.save(os.path.join(self.run_folder, CONFIG_FILE_NAME))
        print("Perform training ...")
        for stage in self.stages():
            initial_epoch = start_epoch if stage.index == start_stage else 0
            if stage.index < start_stage or initial_epoch >= stage.epochs:
                continue
            self._fit_stage(stage, dataset, initial_epoch, resume_state)
        if self.role.is_chief and not os.path.isfile(self.checkpoint_path):
            for models in {id(self.models): self.models,
                           id(self.evaluation_models): self.evaluation_models}.values():
                set_backbone_trainable(models, True)  # the state checkpoints list in
            self.sync_local_models()
            save_model_weights(self.evaluation_models.training_model, self.checkpoint_path,
                               self.checkpoint_metadata())

    def _refuse_finished_run(self):
        """Refuses a folder that holds a run unless --resume (before anything is written)."""
        holds_run = any(os.path.isfile(os.path.join(self.run_folder, name)) for name in (
            CONFIG_FILE_NAME, os.path.join("resume", "checkpoint")))
        if holds_run and not self.config.run.resume:
            raise OptionError(
                "The output folder {} already holds a run. Pass --resume to continue it, or "
                "choose another --output_folder_path (nothing was changed).".format(
                    self.run_folder))

    def _restore(self, resume_state):
        """(stage, epoch) to start from: the resume state, else stage A's first epoch (after
        loading --pretrained_model_file_path, if given)."""
        if self.config.run.resume and resume_state.exists:
            stage, epoch, self.best = resume_state.restore()
            print("Resuming stage {} at epoch {} from {}.".format(
                stage, epoch + 1, resume_state.latest_checkpoint))
            return stage, epoch
        if self.config.run.pretrained_model_file_path:
            self.load_checkpoint(self.config.run.pretrained_model_file_path)
        return 0, 0

    def _fit_stage(self, stage, dataset, initial_epoch, resume_state):
        print("Stage {}: {} epochs, backbone {}.".format(
            stage.name, stage.epochs, "trainable" if stage.backbone_trainable else "frozen"))
        set_backbone_trainable(self.models, stage.backbone_trainable)
        if self.local_models is not None:  # copies go by position, which trainability orders
            set_backbone_trainable(self.local_models, stage.backbone_trainable)
        self.compile()
        callbacks = self.build_callbacks(stage, resume_state)
        try:
            self.models.training_model.fit(
                dataset, steps_per_epoch=self.config.solver.steps_per_epoch,
                epochs=stage.epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                verbose=2 if self.role.is_chief else 0)
        except PEER_FAILURES as error:
            if self.role.num_workers == 1:
                raise
            raise WorkerLostError(
                "Worker {} of this {}-worker run lost contact with the others: one of them "
                "stopped or cannot be reached ({}: {}). The run's state up to its last finished "
                "epoch is in {}; restart every worker with --resume.".format(
                    self.role.worker_index, self.role.num_workers, type(error).__name__,
                    str(error).strip().splitlines()[0] if str(error).strip() else "",
                    self.config.run_folder)) from error
        if self.selection is not None:
            self.best = self.selection.best
        if self.nan_guard.failure:
            raise FloatingPointError(
                "Training stopped: the {}. The last good state is kept in {}; lower the "
                "learning rate (--learning_rate_base) and pass --resume.".format(
                    self.nan_guard.failure, self.run_folder))
        for evaluator in self.evaluators:
            if evaluator.last_result is not None:
                self.report(evaluator)

    def evaluate(self):
        """Loads --pretrained_model_file_path and evaluates it once (no fit, nothing trained)."""
        evaluation_folder = os.path.join(self.run_folder, "evaluation")
        self.build_data()
        path = self.config.run.pretrained_model_file_path
        with RunLock(self.run_folder):
            classes = checkpoint_num_classes(path)
            if classes is not None and classes != self.data.num_classes:
                print("The checkpoint was trained on {} identities, this dataset has {}: its "
                      "embeddings are evaluated (the classifiers are not used).".format(
                          classes, self.data.num_classes))
            self.build_models(num_classes=classes)
            self.setup()
            self.config.save(os.path.join(evaluation_folder, CONFIG_FILE_NAME))
            self.load_checkpoint(path)
            self.sync_local_models()
            logs = {}
            models = self.evaluation_models
            for callback in (InspectGeMPoolingParameters(models.gem_layers),
                             InspectRegularizationFactors(models.regularization_terms,
                                                          evaluation_folder)):
                callback.on_epoch_end(0, logs)
            self.schedule.epoch_num = 1
            self.evaluators = self.build_evaluators()
            for evaluator in self.evaluators:
                logs.update(evaluator.evaluate())
            HistoryLogger(evaluation_folder).on_epoch_end(0, logs)
            return [self.report(evaluator) for evaluator in self.evaluators]

    def report(self, evaluator):
        """Prints an evaluator's latest metrics and writes them to <split>_metrics.json."""
        result = evaluator.last_result
        cmc = result["cmc"]
        summary = {"split": evaluator.split_name, "mAP": float(result["mAP"]),
                   "rank-1": float(cmc[0]), "rank-5": float(cmc[4]) if len(cmc) > 4 else None,
                   "mINP": float(result["mINP"]), "use_re_ranking": evaluator.use_re_ranking,
                   "use_horizontal_flipping_in_evaluation": evaluator.use_horizontal_flipping,
                   "distance_metric": evaluator.metric,
                   "evaluation_options": evaluator.evaluation_options}
        print("{split}: mAP {mAP:.4f} rank-1 {rank-1:.4f} mINP {mINP:.4f}".format(**summary))
        path = os.path.join(self.run_folder, "{}_metrics.json".format(evaluator.split_name))
        with atomic_write(path, "w") as file:
            json.dump(summary, file, indent=2)
        return summary


def set_batch_normalization_momentum(model, momentum):
    """Sets the momentum of every BatchNormalization layer inside `model`; returns their count."""
    layers = [module for module in model.submodules
              if isinstance(module, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.momentum = momentum
    return len(layers)


def loss_weights(models, triplet_loss_weight, circle_loss_weight=0.0):
    """Weight of each output's loss: triplet on embeddings, 1 on the classifier outputs, the
    circle weight on the circle outputs (if the model has them)."""
    weights = {name: triplet_loss_weight for name in models.embedding_output_names}
    weights.update({name: 1.0 for name in models.softmax_output_names})
    weights.update({name: circle_loss_weight
                    for name in getattr(models, "circle_output_names", [])})
    return weights
