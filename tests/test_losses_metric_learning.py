"""Metric-learning losses (hard-margin / harder-example triplet, circle, center) against
brute-force Python loops: values, and gradients against the loops' finite differences."""
import math

import numpy as np
import pytest

from utils.tf_env import tf, keras
from losses import (BatchHardTripletLoss, CenterLoss, CircleLoss, batch_hard_triplet_loss,
                    center_loss, pairwise_circle_loss)

BATCHES = {
    "pk_4x2": [0, 0, 1, 1, 2, 2, 3, 3],
    "shuffled_pk": [3, 1, 3, 0, 1, 0, 2, 2],
    "uneven_with_singleton": [0, 0, 1, 1, 1, 2, 3, 3, 4, 4],  # 2 has no positive
}


def random_embeddings(num, dim=5, seed=0):
    return np.random.RandomState(seed).normal(size=(num, dim))


def numerical_gradient(function, x, step=1e-6):
    """Central differences of the scalar ``function`` at the float64 array ``x``."""
    gradient = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += step
        minus[index] -= step
        gradient[index] = (function(plus) - function(minus)) / (2 * step)
    return gradient


def tape_gradient(loss_function, x):
    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(loss_function(variable))
    return tape.gradient(loss, variable).numpy()


def softplus(z):
    return float(np.logaddexp(0.0, z))


def log_sum_exp(values):
    if not values:
        return -math.inf
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


# --- batch-hard triplet: hard margin and harder example mining -------------------------------

def brute_force_triplet(labels, embeddings, margin, hard_factor=0.0):
    losses = []
    for i in range(len(labels)):
        def distance(j):
            return math.sqrt(sum((a - b) ** 2 for a, b in zip(embeddings[i], embeddings[j]))
                             + 1e-12)
        positives = [distance(j) for j in range(len(labels)) if labels[j] == labels[i] and j != i]
        negatives = [distance(j) for j in range(len(labels)) if labels[j] != labels[i]]
        if not negatives:
            losses.append(0.0)
            continue
        x = (1 + hard_factor) * max(positives, default=0.0) - (1 - hard_factor) * min(negatives)
        losses.append(softplus(x) if margin == "soft" else max(x + margin, 0.0))
    return np.array(losses)


@pytest.mark.parametrize("batch", sorted(BATCHES))
@pytest.mark.parametrize("margin", ["soft", 0.3, 1.0])
@pytest.mark.parametrize("hard_factor", [0.0, 0.2])
def test_triplet_value_and_gradient_match_brute_force(batch, margin, hard_factor):
    labels = np.array(BATCHES[batch])
    embeddings = random_embeddings(len(labels), seed=len(batch))

    def loss(e):
        return batch_hard_triplet_loss(labels, e, margin=margin, hard_factor=hard_factor)

    expected = brute_force_triplet(labels, embeddings, margin, hard_factor)
    np.testing.assert_allclose(loss(embeddings).numpy(), expected, rtol=1e-10, atol=1e-12)
    assert expected.mean() > 0
    gradient = tape_gradient(loss, embeddings)
    reference = numerical_gradient(
        lambda e: brute_force_triplet(labels, e, margin, hard_factor).mean(), embeddings)
    np.testing.assert_allclose(gradient, reference, rtol=1e-5, atol=1e-7)
    assert np.abs(gradient).max() > 1e-3


def test_hard_factor_changes_the_loss_as_the_tiny_baseline_scales_distances():
    labels = np.array(BATCHES["pk_4x2"])
    embeddings = random_embeddings(len(labels), seed=7).astype("float32")
    plain = batch_hard_triplet_loss(labels, embeddings, margin=0.3).numpy()
    harder = batch_hard_triplet_loss(labels, embeddings, margin=0.3, hard_factor=0.2).numpy()
    assert np.all(harder >= plain) and harder.sum() > plain.sum()
    np.testing.assert_allclose(plain, brute_force_triplet(labels, embeddings, 0.3), rtol=1e-5)


def test_triplet_anchor_without_positive_uses_zero_positive_distance():
    labels = np.array([0, 1, 1])
    embeddings = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    losses = batch_hard_triplet_loss(labels, embeddings, margin=3.0, hard_factor=0.5).numpy()
    # anchor 0: 1.5 * 0 - 0.5 * 5 + 3; anchor 1: 1.5 * 5 - 0.5 * 5 + 3; anchor 2: 7.5 - 5 + 3
    np.testing.assert_allclose(losses, [0.5, 8.0, 5.5], atol=1e-5)


def test_triplet_keras_wrapper_and_bad_arguments():
    labels = np.array(BATCHES["pk_4x2"])
    embeddings = random_embeddings(len(labels), seed=3).astype("float32")
    loss = BatchHardTripletLoss(margin=0.3, hard_factor=0.2)
    assert float(loss(labels, embeddings)) == pytest.approx(
        brute_force_triplet(labels, embeddings, 0.3, 0.2).mean(), rel=1e-5)
    assert BatchHardTripletLoss.from_config(loss.get_config()).hard_factor == 0.2
    for hard_factor in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="hard_factor"):
            BatchHardTripletLoss(hard_factor=hard_factor)
    with pytest.raises(ValueError, match="margin"):
        batch_hard_triplet_loss(labels, embeddings, margin=-0.1)


# --- circle loss ------------------------------------------------------------------------------

def cosine_matrix(embeddings):
    rows = [row / max(math.sqrt(sum(v * v for v in row)), 1e-12) for row in embeddings]
    return [[sum(a * b for a, b in zip(u, v)) for v in rows] for u in rows]


def brute_force_circle(labels, embeddings, margin, gamma, weights_from=None):
    """Per-sample circle loss; alpha from ``weights_from``'s cosines (default: the same ones),
    so that differentiating with ``weights_from`` fixed mimics the detached alphas."""
    cosines = cosine_matrix(embeddings)
    frozen = cosine_matrix(embeddings if weights_from is None else weights_from)
    losses = []
    for i in range(len(labels)):
        logit_p, logit_n = [], []
        for j in range(len(labels)):
            if labels[j] == labels[i] and j != i:
                alpha = max(1 + margin - frozen[i][j], 0.0)
                logit_p.append(-gamma * alpha * (cosines[i][j] - (1 - margin)))
            elif labels[j] != labels[i]:
                alpha = max(frozen[i][j] + margin, 0.0)
                logit_n.append(gamma * alpha * (cosines[i][j] - margin))
        losses.append(softplus(log_sum_exp(logit_p) + log_sum_exp(logit_n)))
    return np.array(losses)


@pytest.mark.parametrize("batch", sorted(BATCHES))
@pytest.mark.parametrize("margin, gamma", [(0.25, 128.0), (0.4, 16.0)])
def test_circle_value_matches_brute_force(batch, margin, gamma):
    labels = np.array(BATCHES[batch])
    embeddings = random_embeddings(len(labels), seed=len(batch))
    expected = brute_force_circle(labels, embeddings, margin, gamma)
    got = pairwise_circle_loss(labels, embeddings, margin=margin, gamma=gamma).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    assert expected.mean() > 1.0
    got32 = pairwise_circle_loss(labels, embeddings.astype("float32"), margin, gamma).numpy()
    np.testing.assert_allclose(got32, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch", ["pk_4x2", "uneven_with_singleton"])
@pytest.mark.parametrize("gamma", [128.0, 16.0])
def test_circle_gradient_treats_the_weights_as_constants(batch, gamma):
    labels = np.array(BATCHES[batch])
    embeddings = random_embeddings(len(labels), dim=4, seed=11)
    gradient = tape_gradient(lambda e: pairwise_circle_loss(labels, e, 0.25, gamma), embeddings)
    detached = numerical_gradient(
        lambda e: brute_force_circle(labels, e, 0.25, gamma, weights_from=embeddings).mean(),
        embeddings)
    np.testing.assert_allclose(gradient, detached, rtol=1e-5, atol=1e-6)
    # Differentiating through alpha too gives a different gradient: stop_gradient matters.
    through_alpha = numerical_gradient(
        lambda e: brute_force_circle(labels, e, 0.25, gamma).mean(), embeddings)
    assert np.abs(gradient - through_alpha).max() > 1e-2 * np.abs(through_alpha).max()


def test_circle_anchor_without_positive_or_negative_gives_zero():
    embeddings = random_embeddings(5, seed=2)
    losses = pairwise_circle_loss(np.array([0, 0, 1, 1, 2]), embeddings).numpy()
    assert losses[4] == 0.0 and np.all(losses[:4] > 0)
    gradient = tape_gradient(lambda e: pairwise_circle_loss(np.zeros(4), e), embeddings[:4])
    assert float(tf.reduce_sum(pairwise_circle_loss(np.zeros(4), embeddings[:4]))) == 0.0
    np.testing.assert_array_equal(gradient, np.zeros_like(gradient))


def test_circle_is_scale_invariant_and_accepts_label_formats():
    labels = np.array(BATCHES["shuffled_pk"])
    embeddings = random_embeddings(len(labels), seed=5).astype("float32")
    expected = pairwise_circle_loss(labels, embeddings).numpy()
    np.testing.assert_allclose(pairwise_circle_loss(labels, 7.0 * embeddings).numpy(), expected,
                               rtol=1e-4)
    one_hot = np.eye(4, dtype="float32")[labels]
    for label_tensor in (labels.reshape(-1, 1), one_hot):
        np.testing.assert_allclose(pairwise_circle_loss(label_tensor, embeddings).numpy(),
                                   expected, rtol=1e-6)


def test_circle_keras_wrapper_and_bad_arguments():
    labels = np.array(BATCHES["pk_4x2"])
    embeddings = random_embeddings(len(labels), seed=9)
    loss = CircleLoss()
    assert (loss.margin, loss.gamma) == (0.25, 128.0)
    assert float(loss(labels, embeddings)) == pytest.approx(
        brute_force_circle(labels, embeddings, 0.25, 128.0).mean(), rel=1e-10)
    assert CircleLoss.from_config(CircleLoss(0.3, 64).get_config()).gamma == 64.0
    for margin in (-0.1, 1.0):
        with pytest.raises(ValueError, match="margin"):
            CircleLoss(margin=margin)
    with pytest.raises(ValueError, match="gamma"):
        pairwise_circle_loss(labels, embeddings, gamma=0.0)


# --- center loss ------------------------------------------------------------------------------

def brute_force_center(labels, features, centers):
    total = 0.0
    for label, feature in zip(labels, features):
        squared = sum((x - c) ** 2 for x, c in zip(feature, centers[label]))
        total += min(max(squared, 1e-12), 1e12)
    return total / len(labels)


def hand_center_gradient(labels, features, centers):
    gradient = np.zeros_like(centers)
    for label, feature in zip(labels, features):
        gradient[label] -= 2.0 / len(labels) * (feature - centers[label])
    return gradient


@pytest.mark.parametrize("batch", sorted(BATCHES))
def test_center_loss_value_and_gradients_match_brute_force(batch):
    labels = np.array(BATCHES[batch])
    generator = np.random.RandomState(4)
    features = generator.normal(size=(len(labels), 3))
    centers = generator.normal(size=(7, 3))
    expected = brute_force_center(labels, features, centers)
    assert float(center_loss(labels, features, centers)) == pytest.approx(expected, rel=1e-12)
    feature_gradient = tape_gradient(lambda f: center_loss(labels, f, centers), features)
    np.testing.assert_allclose(
        feature_gradient,
        numerical_gradient(lambda f: brute_force_center(labels, f, centers), features),
        rtol=1e-6, atol=1e-9)
    center_variable = tf.Variable(centers)
    with tf.GradientTape() as tape:
        value = center_loss(labels, features, center_variable)
    center_gradient = tf.convert_to_tensor(tape.gradient(value, center_variable)).numpy()
    np.testing.assert_allclose(center_gradient, hand_center_gradient(labels, features, centers),
                               rtol=1e-12, atol=1e-15)


def test_center_loss_clamps_each_sample_and_checks_labels():
    centers = np.array([[1.0, 2.0], [0.0, 0.0]])
    features = np.array([[1.0, 2.0], [3.0, 4.0]])  # sample 0 sits on its center
    assert float(center_loss([0, 1], features, centers)) == pytest.approx((1e-12 + 25.0) / 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes"):
        center_loss([0, 2], features, centers)


def test_center_optimizer_step_moves_only_the_batch_centers_by_lr_times_gradient():
    center = CenterLoss(num_classes=6, feat_dim=3, seed=1)
    labels = np.array(BATCHES["shuffled_pk"])  # classes 0-3; 4 and 5 absent
    features = np.random.RandomState(8).normal(size=(len(labels), 3)).astype("float32")
    before = center.centers.numpy().copy()
    optimizer = center.make_optimizer()
    with tf.GradientTape() as tape:
        value = center(labels, features)
    gradients = tape.gradient(value, [center.centers])
    optimizer.apply_gradients(zip(gradients, [center.centers]))
    after = center.centers.numpy()
    expected_gradient = hand_center_gradient(labels, features, before)
    np.testing.assert_allclose(after, before - 0.5 * expected_gradient, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(after[4:], before[4:])
    for j in range(4):
        mean = features[labels == j].mean(axis=0)
        # lr 0.5, B = 8, two samples per class: c <- c + 0.25 * (mean - c)
        np.testing.assert_allclose(after[j], before[j] + 0.25 * (mean - before[j]), rtol=1e-5)
        assert np.linalg.norm(after[j] - mean) < np.linalg.norm(before[j] - mean)


def test_center_initialisation_is_seeded_standard_normal_and_arguments_are_checked():
    first = CenterLoss(200, 50, seed=3).centers.numpy()
    np.testing.assert_array_equal(first, CenterLoss(200, 50, seed=3).centers.numpy())
    assert not np.array_equal(first, CenterLoss(200, 50, seed=4).centers.numpy())
    assert first.shape == (200, 50) and first.dtype == np.float32
    assert abs(first.mean()) < 0.02 and abs(first.std() - 1.0) < 0.02
    with pytest.raises(ValueError, match="num_classes"):
        CenterLoss(0, 4)
    with pytest.raises(ValueError, match="feat_dim"):
        CenterLoss(3, 2.5)
    with pytest.raises(ValueError, match="learning_rate"):
        CenterLoss(3, 2).make_optimizer(learning_rate=0.0)


# --- the keras Loss classes inside compile / fit ----------------------------------------------

@pytest.mark.parametrize("make_loss, reference", [
    (lambda: BatchHardTripletLoss(margin=0.3, hard_factor=0.2),
     lambda y, e: brute_force_triplet(y, e, 0.3, 0.2).mean()),
    (lambda: CircleLoss(), lambda y, e: brute_force_circle(y, e, 0.25, 128.0).mean()),
])
def test_loss_classes_train_a_dense_model_for_one_step(make_loss, reference):
    tf.keras.utils.set_random_seed(0)
    labels = np.array(BATCHES["shuffled_pk"])
    inputs = np.random.RandomState(0).normal(size=(len(labels), 4)).astype("float32")
    model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=make_loss())
    kernel = model.layers[-1].kernel.numpy().copy()
    expected = reference(labels, model(inputs).numpy().astype("float64"))
    history = model.fit(inputs, labels, batch_size=len(labels), epochs=1, shuffle=False,
                        verbose=0)
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-4)
    assert not np.allclose(model.layers[-1].kernel.numpy(), kernel)
