"""Re-ID head (models, inference feature, losses) on a tiny fake backbone at 64x32."""
import numpy as np
import pytest

from utils.tf_env import keras
from applications.layers import HorizontalFlip
from applications.regularization import RegularizationConfig
from applications.reid_model import (build_reid_models, compile_training_model,
                                     export_inference_model, load_training_weights,
                                     set_backbone_trainable)

INPUT_SHAPE = (64, 32, 3)
CHANNELS = 24  # last-block channels; its map is 16x8


class FakeBackbone:
    """Backbone interface of applications.get_backbone: blocks, feature_channels,
    frozen_block_names, make_last_block_copy(name)."""

    def __init__(self, seed=0):
        keras.utils.set_random_seed(seed)
        image = keras.Input(INPUT_SHAPE)
        x = keras.layers.Rescaling(1 / 255.0, name="fake_init_rescale")(image)
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False,
                                name="fake_init_conv")(x)
        x = keras.layers.BatchNormalization(name="fake_init_bn")(x)
        init_block = keras.Model(image, keras.layers.ReLU(name="fake_init_relu")(x), name="fake_init")
        stage_input = keras.Input(init_block.output_shape[1:])
        y = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="fake_stage1_conv")(stage_input)
        y = keras.layers.BatchNormalization(name="fake_stage1_bn")(y)
        stage1 = keras.Model(stage_input, keras.layers.ReLU(name="fake_stage1_relu")(y),
                             name="fake_stage1")
        self._last_input_shape = stage1.output_shape[1:]
        self.blocks = [init_block, stage1, self._build_last_block("fake_stage2")]
        self.feature_channels = CHANNELS
        self.frozen_block_names = [block.name for block in self.blocks]

    def _build_last_block(self, name):
        inputs = keras.Input(self._last_input_shape)
        z = keras.layers.Conv2D(CHANNELS, 3, padding="same", name=f"{name}_conv")(inputs)
        z = keras.layers.BatchNormalization(name=f"{name}_bn")(z)
        return keras.Model(inputs, keras.layers.ReLU(name=f"{name}_relu")(z), name=name)

    def make_last_block_copy(self, name):
        copy = self._build_last_block(name)
        copy.set_weights(self.blocks[-1].get_weights())
        return copy


def images(num=16, seed=0):
    return np.random.RandomState(seed).uniform(0, 255, (num,) + INPUT_SHAPE).astype("float32")


LABELS = np.repeat(np.arange(4), 4)  # P=4 identities x K=4 images


def build(seed=0, **kwargs):
    kwargs.setdefault("input_shape", INPUT_SHAPE)
    return build_reid_models(FakeBackbone(seed), num_classes=6, verbose=False, **kwargs)


@pytest.mark.parametrize("region_num, pooling_mode", [(2, "GeM"), (3, "Average"), (0, "Max")])
def test_output_shapes_and_names(region_num, pooling_mode):
    models = build(region_num=region_num, pooling_mode=pooling_mode)
    regional = region_num * (CHANNELS // region_num) if region_num else 0
    assert models.inference_model(images(2)).shape == (2, CHANNELS + regional)
    branches = ["global"] + [f"region_{i + 1}" for i in range(region_num)]
    assert models.training_model.output_names == ([f"{b}_embedding" for b in branches]
                                                  + [f"{b}_softmax" for b in branches])
    outputs = models.training_model(images(2), training=False)
    sizes = [CHANNELS] + [CHANNELS // max(region_num, 1)] * region_num
    assert [tuple(o.shape) for o in outputs] == [(2, s) for s in sizes] + [(2, 6)] * len(sizes)
    np.testing.assert_allclose(np.sum(outputs[-1].numpy(), axis=1), 1.0, rtol=1e-5)
    assert len(models.gem_layers) == (len(branches) if pooling_mode == "GeM" else 0)
    assert models.regional_block is None if region_num == 0 else models.regional_block is not None


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="pooling_mode"):
        build(pooling_mode="Median")
    with pytest.raises(ValueError, match="region_num"):
        build(region_num=-1)


def test_last_block_copies_are_independent_with_equal_initial_weights():
    backbone = FakeBackbone()
    models = build_reid_models(backbone, 6, input_shape=INPUT_SHAPE, verbose=False)
    original, global_block, regional_block = (backbone.blocks[-1], models.global_block,
                                              models.regional_block)
    assert global_block.name == "fake_stage2_global_branch"
    assert regional_block.name == "fake_stage2_regional_branch"
    used = {v.ref() for v in models.inference_model.weights}
    assert not any(v.ref() in used for v in original.weights)
    for g, r, o in zip(global_block.weights, regional_block.weights, original.weights):
        assert g.ref() != r.ref()
        np.testing.assert_array_equal(g.numpy(), r.numpy())
        np.testing.assert_array_equal(g.numpy(), o.numpy())
    global_block.weights[0].assign(global_block.weights[0] + 1.0)
    np.testing.assert_array_equal(regional_block.weights[0].numpy(), original.weights[0].numpy())


def test_inference_model_matches_manual_head_and_never_flips():
    models = build(region_num=2)
    x = images(3)
    trunk = x
    for block in models.backbone_blocks[:-2]:
        trunk = block(trunk, training=False)
    global_map = models.global_block(trunk, training=False).numpy()
    regional_map = models.regional_block(trunk, training=False).numpy()
    expected = [np.clip(np.mean(np.maximum(global_map, 1e-6), axis=(1, 2)), 0, 1)]  # GeM p=1
    for index, (start, stop) in enumerate([(0, 8), (8, 16)]):
        conv = models.feature_model.get_layer(f"region_{index + 1}_conv")
        stripe = np.maximum(conv(regional_map[:, start:stop]).numpy(), 0.0)
        expected.append(np.clip(np.mean(np.maximum(stripe, 1e-6), axis=(1, 2)), 0, 1))
    got = models.inference_model(x, training=False).numpy()
    np.testing.assert_allclose(got, np.concatenate(expected, axis=1), rtol=1e-4, atol=1e-6)
    assert not any(isinstance(layer, HorizontalFlip) for layer in models.inference_model.layers)
    flipped = models.inference_model(x[:, :, ::-1], training=False).numpy()
    assert not np.allclose(got, flipped)


def test_bnneck_evaluation_feature_is_the_bnneck_of_each_embedding():
    models = build(region_num=2, evaluation_feature="bnneck")
    x = images(3)
    embeddings = [t.numpy() for t in models.feature_model(x, training=False)]
    expected = []
    for name, embedding in zip(models.branch_names, embeddings):
        gamma, beta, mean, variance = models.classification_model.get_layer(
            f"{name}_bnneck").get_weights()
        gamma, beta, mean = gamma + 0.5, beta + 0.25, mean + 0.1  # not the identity
        models.classification_model.get_layer(f"{name}_bnneck").set_weights(
            [gamma, beta, mean, variance])
        expected.append(gamma * (embedding - mean) / np.sqrt(variance + 2e-5) + beta)
    got = models.inference_model(x, training=False).numpy()
    np.testing.assert_allclose(got, np.concatenate(expected, axis=1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("head", ["cosface", "arcface"])
def test_margin_head_outputs_cosines_and_trains(head):
    models = build(region_num=1, classifier_head=head)
    compile_training_model(models, keras.optimizers.Adam(1e-3), cosine_scale=8.0,
                           run_eagerly=True)
    outputs = dict(zip(models.training_model.output_names,
                       models.training_model(images(16), training=False)))
    for name in models.softmax_output_names:
        cosines = outputs[name].numpy()
        assert cosines.shape == (16, 6) and np.all(np.abs(cosines) <= 1 + 1e-5)
    history = models.training_model.fit(images(16), LABELS, epochs=8, batch_size=16, verbose=0)
    key = "global_softmax_loss"
    assert history.history[key][-1] < history.history[key][0]
    # A bare training model does not say which margin loss its cosines need.
    with pytest.raises(ValueError, match="CosineClassifier"):
        compile_training_model(models.training_model, keras.optimizers.Adam(1e-3))
    with pytest.raises(ValueError, match="classifier_head"):
        build(classifier_head="sphereface")
    with pytest.raises(ValueError, match="evaluation_feature"):
        build(evaluation_feature="logits")


def test_flip_inside_model_merges_features_and_adds_weighted_flipping_loss():
    models = build(use_horizontal_flipping_inside_model=True, flipping_loss_weight=2.5)
    x = images(4, seed=1)
    vanilla = [t.numpy() for t in models.feature_model(x, training=False)]
    flipped = [t.numpy() for t in models.feature_model(x[:, :, ::-1].copy(), training=False)]
    outputs = models.training_model(x, training=False)
    for output, v, f in zip(outputs[:3], vanilla, flipped):
        np.testing.assert_allclose(output.numpy(), (v + f) / 2, rtol=1e-5, atol=1e-7)
    probabilities = models.classification_model([(v + f) / 2 for v, f in zip(vanilla, flipped)],
                                                 training=False)
    for output, p in zip(outputs[3:], probabilities):
        np.testing.assert_allclose(output.numpy(), p.numpy(), rtol=1e-5, atol=1e-7)
    hand = sum(np.mean(np.mean((v - f) ** 2, axis=1)) for v, f in zip(vanilla, flipped))
    assert hand > 0
    assert len(models.training_model.losses) == 1  # no regularisation here
    assert float(models.training_model.losses[0]) == pytest.approx(2.5 * hand, rel=1e-4)


def variable_values(variables):
    return {v.name: v.numpy().copy() for v in variables}


def test_training_freeze_unfreeze_with_adaptive_l2():
    models = build(use_horizontal_flipping_inside_model=True,
                   regularization=RegularizationConfig(adaptive=True))
    model = models.training_model
    # 3 blocks (conv+bias... see FakeBackbone): 9 kernels, 5 biases, 7 gammas, 7 betas
    assert len(models.regularization_terms) == 28
    factors = models.regularization_factors()
    assert list(factors.values()) == pytest.approx([0.0025] * 28)
    for key in ("fake_stage2_global_branch_conv_kernel", "fake_stage2_regional_branch_bn_beta",
                "region_2_conv_bias", "global_bnneck_gamma", "region_1_classifier_kernel"):
        assert f"{key}_regularizer_l2_regularization_factor" in factors
    x = images(16, seed=2)
    optimizer = keras.optimizers.Adam(1e-3)
    compile_training_model(models, optimizer)  # graph mode once: callable losses in tf.function
    history = model.fit(x, LABELS, epochs=4, batch_size=16, verbose=0).history
    assert all(np.isfinite(history["loss"])) and history["loss"][-1] < history["loss"][0]
    assert history["flipping"][0] > 0
    per_output = sum(history[f"{name}_loss"][0] for name in model.output_names)
    assert history["loss"][0] > per_output + history["flipping"][0]  # L2 terms are included

    set_backbone_trainable(models, False)
    head_layers = (["global_gem_pooling", "region_1_gem_pooling", "region_2_gem_pooling"]
                   + [f"region_{i}_conv" for i in (1, 2)]
                   + [f"{b}_{kind}" for b in ("global", "region_1", "region_2")
                      for kind in ("bnneck", "classifier")])
    expected = {layer.name for layer in models.feature_model.layers + models.classification_model.layers
                if layer.name in head_layers}
    assert len(expected) == len(head_layers)
    trainable_owners = {v.name.split("/")[0] for v in model.trainable_variables}
    assert trainable_owners == expected
    # kernel+bias+2θ per regional conv, power per GeM, γ β 2θ per BNNeck, kernel+θ per classifier
    assert len(model.trainable_variables) == 2 * 4 + 3 + 3 * 4 + 3 * 2
    backbone_variables = [v for block in models.backbone_blocks for v in block.weights]
    before = variable_values(backbone_variables)
    head_before = variable_values(model.trainable_variables)
    compile_training_model(models, optimizer, run_eagerly=True)  # eager: no retracing cost
    # Reported loss = per-output losses + flipping + every L2 term, frozen ones included (TF 2.2).
    logs = model.evaluate(x, LABELS, batch_size=16, verbose=0, return_dict=True)
    l2 = sum(float(term.loss()) for term in models.regularization_terms)
    expected_loss = sum(logs[f"{name}_loss"] for name in model.output_names) + logs["flipping"] + l2
    assert logs["loss"] == pytest.approx(expected_loss, rel=1e-4)
    model.fit(x, LABELS, epochs=2, batch_size=16, verbose=0)
    for name, value in variable_values(backbone_variables).items():
        np.testing.assert_array_equal(value, before[name])  # incl. θ and BN moving statistics
    assert any(not np.array_equal(v.numpy(), head_before[v.name]) for v in model.trainable_variables)

    set_backbone_trainable(models, True)
    compile_training_model(models, optimizer, run_eagerly=True)  # same Adam instance goes on
    model.fit(x, LABELS, epochs=1, batch_size=16, verbose=0)
    assert int(optimizer.iterations.numpy()) == 7
    changed = [name for name, value in variable_values(backbone_variables).items()
               if not np.array_equal(value, before[name])]
    assert any("theta" in name for name in changed) and any("kernel:0" in name for name in changed)


@pytest.mark.parametrize("file_name", ["weights.h5", "checkpoint"])
def test_save_and_load_weights_round_trip(tmp_path, file_name):
    config = RegularizationConfig(adaptive=True)
    source = build(seed=0, use_horizontal_flipping_inside_model=True, regularization=config)
    for index, term in enumerate(source.regularization_terms):
        term.theta.assign(-0.05 * index)
    for layer in source.gem_layers:
        layer.power.assign(2.5)
    path = str(tmp_path / file_name)
    set_backbone_trainable(source, False)  # saved in stage A, loaded unfrozen: h5 order differs
    source.training_model.save_weights(path)
    target = build(seed=1, use_horizontal_flipping_inside_model=True, regularization=config)
    x = images(3, seed=3)
    assert not np.allclose(target.inference_model(x).numpy(), source.inference_model(x).numpy())
    load_training_weights(target, path)
    assert all(block.trainable for block in target.backbone_blocks)
    np.testing.assert_allclose(target.inference_model(x).numpy(),
                               source.inference_model(x).numpy(), rtol=1e-6)
    for got, want in zip(target.training_model(x), source.training_model(x)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
    assert target.regularization_factors() == pytest.approx(source.regularization_factors())
    assert target.gem_powers() == pytest.approx({f"{n}_gem_pooling_power": 2.5
                                                 for n in ("global", "region_1", "region_2")})


@pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")
def test_exported_inference_model_saves_and_loads_as_full_h5(tmp_path):
    models = build(regularization=RegularizationConfig(adaptive=True))
    for term in models.regularization_terms:
        term.theta.assign(-1.0)
    models.gem_layers[0].power.assign(3.0)
    set_backbone_trainable(models, False)  # weight order must survive a partly frozen model
    exported = export_inference_model(models)
    assert not any("theta" in w.name for w in exported.weights) and exported.losses == []
    path = str(tmp_path / "inference_model.h5")
    exported.save(path)
    loaded = keras.models.load_model(path, compile=False)
    x = images(2, seed=4)
    np.testing.assert_allclose(loaded(x).numpy(), models.inference_model(x).numpy(), rtol=1e-6)
