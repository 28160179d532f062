"""Pieces of the Trainer that the end-to-end test does not pin down."""
from types import SimpleNamespace

import pytest

from conftest import make_config
from utils.tf_env import keras


def test_batch_normalization_momentum_reaches_nested_layers():
    from training.trainer import set_batch_normalization_momentum
    inner_input = keras.Input((4,))
    inner = keras.Model(inner_input, keras.layers.BatchNormalization(momentum=0.999)(inner_input))
    outer_input = keras.Input((4,))
    hidden = keras.layers.BatchNormalization(momentum=0.99)(inner(outer_input))
    model = keras.Model(outer_input, keras.layers.Dense(2)(hidden))
    assert set_batch_normalization_momentum(model, 0.9) == 2
    momenta = [layer.momentum for layer in inner.layers + model.layers
               if isinstance(layer, keras.layers.BatchNormalization)]
    assert momenta == [0.9, 0.9]


def test_selection_monitor_prefers_validation_and_never_test_by_default():
    from training.trainer import Trainer
    valid, test = SimpleNamespace(split_name="valid"), SimpleNamespace(split_name="test")

    def monitor(evaluators, **overrides):
        trainer = Trainer(make_config(**overrides))
        trainer.evaluators = evaluators
        return trainer.selection_monitor()

    assert monitor([valid, test]) == "valid_cosine_False_mAP_score"
    assert monitor([test]) is None
    assert monitor([test], select_model_on_testing=True) == "test_cosine_False_mAP_score"
    assert monitor([test], select_model_on_testing=True,
                   use_re_ranking=True) == "test_cosine_True_mAP_score"


def test_learning_rate_schedule_follows_the_originals_default_mode():
    from training.trainer import Trainer
    schedule = Trainer(make_config(epoch_num=200)).schedule
    # Linear warm-up 2e-6 -> 2e-4 over 10 epochs, then / 10 every 30 epochs.
    for epoch, expected in ((0, 2e-6), (1, 2.4e-5), (10, 2e-4), (39, 2e-4), (40, 2e-5),
                            (69, 2e-5), (70, 2e-6)):
        assert abs(schedule(epoch) - expected) < 1e-12, epoch


def test_loss_weights_scale_only_the_triplet_outputs():
    from training.trainer import loss_weights
    models = SimpleNamespace(embedding_output_names=["global_embedding", "region_1_embedding"],
                             softmax_output_names=["global_softmax", "region_1_softmax"])
    assert loss_weights(models, 0.25) == {"global_embedding": 0.25, "region_1_embedding": 0.25,
                                          "global_softmax": 1.0, "region_1_softmax": 1.0}


def test_time_budget_moves_the_schedule_and_evaluators_not_the_config():
    from training.trainer import Trainer
    config = make_config(
        epoch_num=500, steps_per_epoch=10, identity_num_per_batch=4, image_num_per_identity=2,
        use_horizontal_flipping_in_evaluation=True, use_horizontal_flipping_inside_model=True,
        learning_rate_mode="warmup_cosine", learning_rate_base=1e-3,
        learning_rate_warmup_epochs=2, learning_rate_lower_bound=1e-5, time_budget_minutes=10)
    trainer = Trainer(config, start_time=0.0)
    evaluator = SimpleNamespace(query_df=[0] * 30, gallery_df=[0] * 70, epoch_num=500)
    budget = trainer.build_time_budget([evaluator])
    # flip in evaluation doubles the passes, flip inside the model doubles a training image
    assert budget.evaluation_images == 100 and budget.images_per_epoch == 80
    assert budget.deadline == 600.0
    budget.listeners[0](12)
    assert trainer.schedule.epoch_num == 12 and evaluator.epoch_num == 12
    assert config.solver.epoch_num == 500  # the configuration stays as given
    # the schedule now ends its cosine at the planned last epoch
    assert trainer.schedule(11) == 1e-5
    assert [stage.epochs for stage in trainer.stages()] == [20, 12]


def test_build_optimizer_follows_the_solver_flags():
    from training.trainer import Trainer
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    trainer = Trainer(make_config(optimizer="sgd", sgd_momentum=0.5, sgd_nesterov=True,
                                  weight_decay=0.1))
    trainer.models = SimpleNamespace(training_model=model)
    optimizer = trainer.build_optimizer()
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.nesterov
    assert optimizer.momentum == 0.5 and optimizer.weight_decay == 0.1
    trainer = Trainer(make_config(optimizer="amsgrad"))
    trainer.models = SimpleNamespace(training_model=model)
    assert trainer.build_optimizer().amsgrad


def test_triplet_and_circle_flags_reach_the_compiled_losses():
    import numpy as np
    from losses.circle import pairwise_circle_loss
    from losses.triplet import batch_hard_triplet_loss
    from training.trainer import Trainer
    config = make_config(backbone_model_name="MobileNetV3Small", backbone_weights="none",
                         image_height=64, image_width=32, region_num=0, triplet_margin=0.3,
                         triplet_hard_factor=0.2, circle_loss_weight=0.5, circle_margin=0.2,
                         circle_gamma=64.0, batch_normalization_momentum=0.5,
                         # No L2 terms: they are not what is checked, and they make about 40% of
                         # the step's tracing time.
                         use_adaptive_l1_l2_regularizer=False, kernel_regularization_factor=0,
                         bias_regularization_factor=0, gamma_regularization_factor=0,
                         beta_regularization_factor=0)
    trainer = Trainer(config)
    trainer.build_models(num_classes=4)
    trainer.build_optimizer()
    model = trainer.compile()
    assert model.output_names == ["global_embedding", "global_softmax", "global_circle"]
    images = np.random.default_rng(0).uniform(0, 255, (8, 64, 32, 3)).astype("float32")
    labels = np.repeat(np.arange(4), 2).astype("int32")
    embedding, _, circle_input = model(images, training=True)
    expected_triplet = float(np.mean(batch_hard_triplet_loss(labels, embedding, 0.3, 0.2)))
    expected_circle = float(np.mean(pairwise_circle_loss(labels, circle_input, 0.2, 64.0)))
    logs = model.fit(images, labels, batch_size=8, epochs=1, verbose=0).history
    assert logs["global_embedding_loss"][0] == pytest.approx(expected_triplet, rel=1e-4)
    assert logs["global_circle_loss"][0] == pytest.approx(expected_circle, rel=1e-4)
    assert expected_circle > 0
    weights = loss_weights_of(trainer)
    assert weights == {"global_embedding": 1.0, "global_softmax": 1.0, "global_circle": 0.5}


def loss_weights_of(trainer):
    from training.trainer import loss_weights
    return loss_weights(trainer.models, trainer.config.loss.triplet_loss_weight,
                        trainer.config.loss.circle_loss_weight)


def test_evaluation_flags_reach_the_evaluators_and_the_selection_key():
    from training.trainer import Trainer
    config = make_config(use_centroids=True, query_expansion_k=5, re_ranking_k1=10,
                         distance_metric="euclidean", use_re_ranking=True, validation_size=0.1)
    trainer = Trainer(config)
    trainer.data = SimpleNamespace(valid_query_df=[0], valid_gallery_df=[0], query_df=[0],
                                   gallery_df=[0])
    trainer.models = SimpleNamespace(inference_model=None)
    trainer.evaluators = trainer.build_evaluators()
    for evaluator in trainer.evaluators:
        assert evaluator.metric == "euclidean"
        assert evaluator.evaluation_options == dict(
            use_centroids=True, query_expansion_k=5, query_expansion_alpha=3.0, k1=10, k2=6,
            lambda_value=0.3)
    assert trainer.selection_monitor() == "valid_euclidean_True_centroids_aqe5_mAP_score"


def test_center_loss_trains_only_its_centers_with_its_own_optimizer(tmp_path):
    import numpy as np
    from callbacks.checkpoint import ResumeState
    from losses.center import center_loss
    from training.trainer import Trainer
    config = make_config(backbone_model_name="MobileNetV3Small", backbone_weights="none",
                         image_height=64, image_width=32, region_num=0, center_loss_weight=100.0,
                         center_learning_rate=0.5, optimizer="sgd", sgd_momentum=0.0,
                         weight_decay=0.1, batch_normalization_momentum=0.5, seed=3)
    trainer = Trainer(config)
    models = trainer.build_models(num_classes=6)
    trainer.build_optimizer()
    model = trainer.compile()
    centers = trainer.center_losses["global_embedding"].centers
    assert all(variable is not centers for variable in model.trainable_variables)
    images = np.random.default_rng(0).uniform(0, 255, (8, 64, 32, 3)).astype("float32")
    labels = np.repeat(np.arange(4), 2).astype("int32")  # classes 4 and 5 are absent
    start_weights, start_centers = model.get_weights(), centers.numpy().copy()
    embeddings = model(images, training=True)[0].numpy()

    logs = model.fit(images, labels, batch_size=8, epochs=1, verbose=0).history
    # The unweighted center loss is logged; the centers take one plain SGD step on its
    # gradient dL/dc_j = -2/B sum_{i: y_i = j} (x_i - c_j): no weight, no weight decay.
    assert logs["center_loss"][0] == pytest.approx(
        float(center_loss(labels, embeddings, start_centers)), rel=1e-4)
    expected = start_centers.copy()
    for j in range(4):
        members = embeddings[labels == j]
        expected[j] += 0.5 * 2 / 8 * (members - start_centers[j]).sum(axis=0)
    np.testing.assert_allclose(centers.numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(centers.numpy()[4:], start_centers[4:])

    # The model's step includes the weighted center loss: at weight 100 it moves the kernels
    # far from where the compiled losses alone take them.
    conv = [variable for variable in model.weights if variable.name.startswith("Conv/kernel")][0]
    index = [id(variable) for variable in model.weights].index(id(conv))
    heavy = conv.numpy() - start_weights[index]
    model.set_weights(start_weights)
    model.set_center_losses(trainer.center_losses, 0.0, trainer.center_optimizer)
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    without = conv.numpy() - start_weights[index]
    assert np.abs(heavy - without).max() > 0.1 * np.abs(without).max()
    # The resume state keeps the centers.
    state = ResumeState(str(tmp_path), model, trainer.optimizer,
                        center_losses=list(trainer.center_losses.values()),
                        center_optimizer=trainer.center_optimizer)
    state.save(1, 1, 0.0)
    saved = centers.numpy().copy()
    centers.assign(np.zeros_like(saved))
    state.restore()
    np.testing.assert_array_equal(centers.numpy(), saved)
    assert models.training_model is model


@pytest.mark.slow
def test_mixed_precision_keeps_one_loss_scale_and_float32_weights(tmp_path):
    import numpy as np
    from callbacks.checkpoint import ResumeState
    from training.trainer import Trainer
    config = make_config(backbone_model_name="MobileNetV3Small", backbone_weights="none",
                         image_height=64, image_width=32, region_num=0, mixed_precision=True,
                         center_loss_weight=5e-4,
                         batch_normalization_momentum=0.5, seed=0)
    try:
        trainer = Trainer(config)
        models = trainer.build_models(num_classes=4)
        optimizer = trainer.build_optimizer()
        assert isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)
        assert optimizer.dynamic
        model = trainer.compile()
        assert model.optimizer is optimizer  # Keras did not wrap it a second time
        # float16 compute in the backbone; float32 weights (adaptive-L2 factors included),
        # embeddings and probabilities.
        assert any(layer.compute_dtype == "float16" for layer in models.feature_model.submodules
                   if isinstance(layer, keras.layers.Conv2D))
        assert {variable.dtype.name for variable in model.weights} == {"float32"}
        assert models.regularization_terms
        images = np.random.default_rng(0).uniform(0, 255, (8, 64, 32, 3)).astype("float32")
        labels = np.repeat(np.arange(4), 2).astype("int32")
        assert all(output.dtype.name == "float32" for output in model(images))
        state = lambda: (int(optimizer.dynamic_counter.numpy()),  # noqa: E731
                         float(optimizer.loss_scale.numpy()))
        initial = state()
        logs = model.fit(images, labels, batch_size=4, epochs=1, verbose=0).history
        assert np.isfinite(logs["loss"][0]) and "center_loss" in logs
        after_first = state()
        # Two finite steps add two to the counter, or an overflow halved the scale.
        assert after_first == (initial[0] + 2, initial[1]) or after_first[1] < initial[1]
        trainer.compile()  # stage B recompiles: the same scale state goes on
        model.fit(images, labels, batch_size=4, epochs=1, verbose=0)
        after_second = state()
        assert after_second == (after_first[0] + 2, after_first[1]) or \
            after_second[1] < after_first[1]
        assert {variable.dtype.name for variable in model.weights} == {"float32"}
        # The resume state holds the loss scale.
        resume = ResumeState(str(tmp_path), model, optimizer)
        resume.save(1, 1, 0.0)
        optimizer.dynamic_counter.assign(0)
        resume.restore()
        assert state() == after_second
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_regularization_config_follows_the_flags_and_is_a_subclass_seam():
    import dataclasses

    from training.trainer import Trainer

    class PerTensorL2Trainer(Trainer):
        def regularization_config(self):
            return dataclasses.replace(super().regularization_config(), fused=False)

    overrides = dict(backbone_model_name="MobileNetV3Small", backbone_weights="none",
                     image_height=64, image_width=32, kernel_regularization_factor=0.25,
                     gamma_regularization_factor=0.5)
    config = Trainer(make_config(**overrides)).regularization_config()
    assert (config.kernel, config.gamma, config.adaptive, config.fused) == (0.25, 0.5, True, True)
    fused = Trainer(make_config(**overrides)).build_models(num_classes=5).training_model
    per_tensor = PerTensorL2Trainer(make_config(**overrides)).build_models(
        num_classes=5).training_model
    thetas = [len([weight for weight in model.weights if "theta" in weight.name])
              for model in (fused, per_tensor)]
    assert thetas[0] == thetas[1] > 10
    # One loss per regularised tensor instead of one per model.
    assert len(per_tensor.losses) >= thetas[1] > len(fused.losses)
