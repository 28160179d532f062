"""Triplet and cross-entropy losses against brute-force Python loops."""
import math

import numpy as np
import pytest

from utils.tf_env import tf, keras
from losses import (BatchHardTripletLoss, CategoricalCrossEntropy, MarginCrossEntropy,
                    batch_hard_triplet_loss, categorical_cross_entropy, margin_logits)


def brute_force_triplet(labels, embeddings, margin="soft"):
    losses = []
    for i in range(len(labels)):
        def distance(j):
            return math.sqrt(sum((float(a) - float(b)) ** 2
                                 for a, b in zip(embeddings[i], embeddings[j])) + 1e-12)
        positives = [distance(j) for j in range(len(labels)) if labels[j] == labels[i] and j != i]
        negatives = [distance(j) for j in range(len(labels)) if labels[j] != labels[i]]
        if not negatives:
            losses.append(0.0)
            continue
        difference = max(positives, default=0.0) - min(negatives)
        losses.append(math.log1p(math.exp(difference)) if margin == "soft"
                      else max(difference + margin, 0.0))
    return np.array(losses)


def brute_force_cross_entropy(labels, probabilities, label_smoothing):
    losses = []
    for label, row in zip(labels, probabilities):
        total = sum(row)
        loss = 0.0
        for c, p in enumerate(row):
            p = min(max(p / total, 1e-7), 1 - 1e-7)
            target = (1.0 if c == label else 0.0) * (1 - label_smoothing) + label_smoothing / len(row)
            loss -= target * math.log(p)
        losses.append(loss)
    return np.array(losses)


@pytest.fixture
def batch():
    rng = np.random.RandomState(3)
    labels = np.array([0, 0, 1, 1, 1, 2, 3, 3, 4, 4])  # 2 has no positive
    embeddings = rng.uniform(0, 1, size=(len(labels), 7)).astype("float32")
    return labels, embeddings


@pytest.mark.parametrize("margin", ["soft", 0.3, 0.0])
def test_triplet_matches_brute_force(batch, margin):
    labels, embeddings = batch
    got = batch_hard_triplet_loss(labels, embeddings, margin=margin).numpy()
    np.testing.assert_allclose(got, brute_force_triplet(labels, embeddings, margin), rtol=1e-5,
                               atol=1e-6)


def test_triplet_label_formats_agree(batch):
    labels, embeddings = batch
    expected = brute_force_triplet(labels, embeddings)
    one_hot = np.eye(5, dtype="float32")[labels]
    for label_tensor in (labels.reshape(-1, 1), one_hot, labels.astype("int64")):
        np.testing.assert_allclose(batch_hard_triplet_loss(label_tensor, embeddings).numpy(),
                                   expected, rtol=1e-5)


def test_triplet_all_same_identity_is_zero_with_finite_gradient():
    embeddings = tf.Variable(np.random.RandomState(0).rand(4, 3).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(batch_hard_triplet_loss(np.zeros(4), embeddings))
    assert float(loss) == 0.0
    assert np.all(np.isfinite(tape.gradient(loss, embeddings).numpy()))


def test_triplet_identical_embeddings_have_finite_gradient():
    embeddings = tf.Variable(np.ones((4, 3), "float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(batch_hard_triplet_loss(np.array([0, 0, 1, 1]), embeddings))
    assert float(loss) == pytest.approx(math.log(2.0), rel=1e-5)  # softplus(0)
    assert np.all(np.isfinite(tape.gradient(loss, embeddings).numpy()))


def test_triplet_keras_wrapper_is_batch_mean(batch):
    labels, embeddings = batch
    loss = BatchHardTripletLoss()(labels.reshape(-1, 1), embeddings)
    assert float(loss) == pytest.approx(brute_force_triplet(labels, embeddings).mean(), rel=1e-5)
    with pytest.raises(ValueError, match="margin"):
        BatchHardTripletLoss(margin="hard")


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.5])
def test_cross_entropy_matches_brute_force_and_keras(label_smoothing):
    rng = np.random.RandomState(1)
    probabilities = rng.dirichlet(np.ones(6), size=5).astype("float32")
    probabilities[0] = [1, 0, 0, 0, 0, 0]  # saturated row exercises the [1e-7, 1-1e-7] clip
    labels = np.array([1, 0, 5, 2, 2])
    expected = brute_force_cross_entropy(labels, probabilities, label_smoothing)
    got = categorical_cross_entropy(labels, probabilities, label_smoothing).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    keras_value = keras.losses.categorical_crossentropy(
        tf.constant(np.eye(6, dtype="float32")[labels]), tf.constant(probabilities),
        label_smoothing=label_smoothing).numpy()
    np.testing.assert_allclose(got, keras_value, rtol=1e-5)
    wrapper = CategoricalCrossEntropy(label_smoothing)(labels.reshape(-1, 1), probabilities)
    assert float(wrapper) == pytest.approx(expected.mean(), rel=1e-5)


def test_cross_entropy_from_logits():
    logits = np.random.RandomState(2).randn(4, 5).astype("float32")
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([4, 0, 1, 1])
    np.testing.assert_allclose(
        categorical_cross_entropy(labels, logits, 0.1, from_logits=True).numpy(),
        brute_force_cross_entropy(labels, probabilities, 0.1), rtol=1e-4)


def test_cross_entropy_rejects_bad_label_smoothing():
    with pytest.raises(ValueError, match="label_smoothing"):
        categorical_cross_entropy([0], [[1.0, 0.0]], label_smoothing=1.5)


def brute_force_margin_loss(labels, cosines, kind, scale, margin, label_smoothing):
    """Per-sample margin softmax CE from the papers' formulas, one scalar at a time."""
    losses = []
    for label, row in zip(labels, cosines):
        logits = []
        for j, cosine in enumerate(row):
            if j == label and kind == "cosface":
                cosine = cosine - margin
            elif j == label:
                theta = math.acos(cosine)
                cosine = (math.cos(theta + margin) if theta + margin <= math.pi
                          else cosine - margin * math.sin(margin))
            logits.append(scale * cosine)
        log_normaliser = math.log(sum(math.exp(v) for v in logits))
        log_probabilities = [v - log_normaliser for v in logits]
        smoothed = [label_smoothing / len(row) + (1 - label_smoothing) * (j == label)
                    for j in range(len(row))]
        losses.append(-sum(t * lp for t, lp in zip(smoothed, log_probabilities)))
    return np.array(losses)


@pytest.mark.parametrize("kind, margin", [("cosface", None), ("arcface", None),
                                          ("arcface", 0.3)])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_margin_cross_entropy_matches_the_papers_formulas(kind, margin, label_smoothing):
    generator = np.random.RandomState(4)
    cosines = generator.uniform(-0.99, 0.99, (6, 5)).astype("float32")
    cosines[0, 2] = -0.98  # arcface: theta + m passes pi, the fallback branch
    labels = np.array([2, 0, 4, 1, 1, 3])
    expected_margin = {"cosface": 0.35, "arcface": 0.5}[kind] if margin is None else margin
    expected = brute_force_margin_loss(labels, cosines.astype("float64"), kind, 16.0,
                                       expected_margin, label_smoothing)
    loss = MarginCrossEntropy(kind, scale=16.0, margin=margin, label_smoothing=label_smoothing,
                              reduction="none")
    np.testing.assert_allclose(loss(labels, cosines).numpy(), expected, rtol=1e-4)
    one_hot = np.eye(5, dtype="float32")[labels]
    np.testing.assert_allclose(loss(one_hot, cosines).numpy(), expected, rtol=1e-4)


def test_margin_logits_change_only_the_true_class():
    cosines = np.array([[0.5, 0.2, -0.1]], "float32")
    logits = margin_logits(np.array([0]), cosines, "cosface", scale=10.0, margin=0.35).numpy()
    np.testing.assert_allclose(logits, [[1.5, 2.0, -1.0]], rtol=1e-6)
    logits = margin_logits(np.array([1]), cosines, "arcface", scale=1.0, margin=0.5).numpy()
    np.testing.assert_allclose(logits, [[0.5, math.cos(math.acos(0.2) + 0.5), -0.1]], rtol=1e-5)


def test_margin_cross_entropy_rejects_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        MarginCrossEntropy("sphereface")
    with pytest.raises(ValueError, match="scale"):
        MarginCrossEntropy("cosface", scale=0.0)
    for margin in (2.0, math.pi / 2, -0.1):  # [0, pi/2) for both heads and margin_logits
        with pytest.raises(ValueError, match="margin"):
            MarginCrossEntropy("arcface", margin=margin)
        with pytest.raises(ValueError, match="margin"):
            margin_logits(np.array([0]), np.zeros((1, 2), "float32"), "cosface", margin=margin)
    assert MarginCrossEntropy("cosface", margin=1.57).margin == 1.57
