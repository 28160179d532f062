"""Pieces of the Trainer that the end-to-end test does not pin down."""
from types import SimpleNamespace

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
