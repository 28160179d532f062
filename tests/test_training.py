"""Pieces of training/run.py that the end-to-end test does not pin down."""
from types import SimpleNamespace

from utils.tf_env import keras


def test_batch_normalization_momentum_reaches_nested_layers():
    from training.run import set_batch_normalization_momentum
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
    from training.run import selection_monitor
    valid, test = SimpleNamespace(split_name="valid"), SimpleNamespace(split_name="test")
    options = SimpleNamespace(select_model_on_testing=False, use_re_ranking=False)
    assert selection_monitor(options, [valid, test]) == "valid_cosine_False_mAP_score"
    assert selection_monitor(options, [test]) is None
    options.select_model_on_testing = True
    assert selection_monitor(options, [test]) == "test_cosine_False_mAP_score"
    options.use_re_ranking = True
    assert selection_monitor(options, [test]) == "test_cosine_True_mAP_score"


def test_learning_rate_callback_uses_the_spec_schedule():
    from training.run import learning_rate_callback
    options = SimpleNamespace(
        learning_rate_mode="default", learning_rate_start=2e-4, learning_rate_end=2e-4,
        learning_rate_base=2e-4, learning_rate_warmup_epochs=10,
        learning_rate_steady_epochs=30, learning_rate_drop_factor=10,
        learning_rate_lower_bound=2e-6, epoch_num=200)
    schedule = learning_rate_callback(options).schedule
    for epoch, expected in ((0, 2e-6), (1, 2.4e-5), (10, 2e-4), (39, 2e-4), (40, 2e-5),
                            (69, 2e-5), (70, 2e-6)):
        assert abs(schedule(epoch) - expected) < 1e-12, epoch


def test_loss_weights_scale_only_the_triplet_outputs():
    from training.run import loss_weights
    models = SimpleNamespace(embedding_output_names=["global_embedding", "region_1_embedding"],
                             softmax_output_names=["global_softmax", "region_1_softmax"])
    weights = loss_weights(models, SimpleNamespace(triplet_loss_weight=0.25))
    assert weights == {"global_embedding": 0.25, "region_1_embedding": 0.25,
                       "global_softmax": 1.0, "region_1_softmax": 1.0}


def test_time_budget_wiring_updates_schedule_and_evaluators():
    from training.run import learning_rate_callback, time_budget
    options = SimpleNamespace(
        deadline=1000.0, epoch_num=500, steps_per_epoch=10, identity_num_per_batch=4,
        image_num_per_identity=2, use_horizontal_flipping_in_evaluation=True,
        use_horizontal_flipping_inside_model=True, augmentation_num=1, use_re_ranking=False,
        learning_rate_mode="warmup_cosine", learning_rate_start=0.0, learning_rate_end=0.0,
        learning_rate_base=1e-3, learning_rate_warmup_epochs=2, learning_rate_steady_epochs=1,
        learning_rate_drop_factor=10, learning_rate_lower_bound=1e-5)
    evaluator = SimpleNamespace(query_df=[0] * 30, gallery_df=[0] * 70, epoch_num=500)
    budget = time_budget(options, [evaluator])
    # flip in evaluation doubles the passes, flip inside the model doubles a training image
    assert budget.evaluation_images == 100 and budget.images_per_epoch == 80
    budget.listeners[0](12)
    assert options.epoch_num == 12 and evaluator.epoch_num == 12
    # the schedule now ends its cosine at the planned last epoch
    assert learning_rate_callback(options).schedule(11) == 1e-5
