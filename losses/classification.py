"""Cross-entropy with label smoothing on integer labels, with Keras' categorical semantics.

Equals ``keras.losses.categorical_crossentropy(one_hot(y), p, label_smoothing=ls)``: smoothed target
``onehot*(1-ls) + ls/C``; probabilities renormalised to sum 1 and clipped to ``[1e-7, 1-1e-7]``
before the log. The one-hot matrix is never built, so labels stay (B,) integers.

Also the margin softmax losses on cosines (`MarginCrossEntropy`: CosFace, ArcFace).
"""
import math

from utils.tf_env import tf, keras
from losses.labels import to_sparse_labels


def _check_label_smoothing(label_smoothing):
    label_smoothing = float(label_smoothing)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}.")
    return label_smoothing


def categorical_cross_entropy(labels, probabilities_or_logits, label_smoothing=0.0,
                              from_logits=False):
    """Per-sample cross-entropy (B,); ``labels`` integer (B,)/(B, 1) or one-hot (B, C)."""
    label_smoothing = _check_label_smoothing(label_smoothing)
    predictions = tf.convert_to_tensor(probabilities_or_logits)
    if not predictions.dtype.is_floating:
        predictions = tf.cast(predictions, tf.float32)
    labels = to_sparse_labels(labels)
    if from_logits:
        log_probabilities = tf.nn.log_softmax(predictions, axis=-1)
    else:
        epsilon = keras.backend.epsilon()
        probabilities = predictions / tf.reduce_sum(predictions, axis=-1, keepdims=True)
        log_probabilities = tf.math.log(tf.clip_by_value(probabilities, epsilon, 1.0 - epsilon))
    true_log_probability = tf.gather(log_probabilities, labels, axis=-1, batch_dims=1)
    loss = -(1.0 - label_smoothing) * true_log_probability
    if label_smoothing > 0:
        num_classes = tf.cast(tf.shape(log_probabilities)[-1], log_probabilities.dtype)
        loss -= label_smoothing / num_classes * tf.reduce_sum(log_probabilities, axis=-1)
    return loss


class CategoricalCrossEntropy(keras.losses.Loss):
    """Keras loss wrapper (mean over the batch) of `categorical_cross_entropy`."""

    def __init__(self, label_smoothing=0.0, from_logits=False,
                 name="categorical_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = _check_label_smoothing(label_smoothing)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        return categorical_cross_entropy(y_true, y_pred, self.label_smoothing, self.from_logits)

    def get_config(self):
        config = super().get_config()
        config.update(label_smoothing=self.label_smoothing, from_logits=self.from_logits)
        return config


MARGIN_KINDS = ("cosface", "arcface")
DEFAULT_MARGINS = {"cosface": 0.35, "arcface": 0.5}
# ArcFace's cos(theta + m) falls with theta only while theta + m < pi; from m = pi/2 on the
# fallback covers most of the range. One bound for both heads (and for --cosine_margin).
MAX_MARGIN = math.pi / 2


def resolve_margin(kind, margin=None):
    """The margin of ``kind`` ("cosface" / "arcface"): ``margin`` (checked to lie in
    [0, `MAX_MARGIN`)), or its usual value if None."""
    if kind not in MARGIN_KINDS:
        raise ValueError(f"kind must be one of {MARGIN_KINDS}, got {kind!r}.")
    margin = DEFAULT_MARGINS[kind] if margin is None else float(margin)
    if not 0 <= margin < MAX_MARGIN:
        raise ValueError(f"margin must be in [0, pi/2), got {margin}.")
    return margin


def margin_logits(labels, cosines, kind, scale=30.0, margin=None):
    """Logits of the margin softmax losses from cosines (B, C) and integer labels (B,).

    CosFace (Wang et al. 2018): ``s * (cos - m)`` at the true class. ArcFace (Deng et al. 2019):
    ``s * cos(theta + m)``; where ``theta + m`` would pass pi the logit is ``s * (cos - m sin m)``
    instead (insightface's rule, keeps it decreasing in theta). Other classes: ``s * cos``.
    """
    margin = resolve_margin(kind, margin)
    cosines = tf.convert_to_tensor(cosines)
    labels = to_sparse_labels(labels)
    true_cosine = tf.gather(cosines, labels, axis=-1, batch_dims=1)
    if kind == "cosface":
        target = true_cosine - margin
    else:
        clipped = tf.clip_by_value(true_cosine, -1.0, 1.0)
        sine = tf.sqrt(tf.maximum(1.0 - tf.square(clipped), 0.0))
        target = tf.where(clipped > math.cos(math.pi - margin),
                          clipped * math.cos(margin) - sine * math.sin(margin),
                          clipped - margin * math.sin(margin))
    one_hot = tf.one_hot(labels, tf.shape(cosines)[-1], dtype=cosines.dtype)
    return scale * (cosines + one_hot * tf.expand_dims(target - true_cosine, -1))


class MarginCrossEntropy(keras.losses.Loss):
    """Cross-entropy (with label smoothing) of `margin_logits`; ``y_pred`` are cosines."""

    def __init__(self, kind="cosface", scale=30.0, margin=None, label_smoothing=0.0,
                 name="margin_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = resolve_margin(kind, margin)
        if float(scale) <= 0:
            raise ValueError(f"scale must be > 0, got {scale}.")
        self.kind, self.scale = kind, float(scale)
        self.label_smoothing = _check_label_smoothing(label_smoothing)

    def call(self, y_true, y_pred):
        logits = margin_logits(y_true, y_pred, self.kind, self.scale, self.margin)
        return categorical_cross_entropy(y_true, logits, self.label_smoothing, from_logits=True)

    def get_config(self):
        config = super().get_config()
        config.update(kind=self.kind, scale=self.scale, margin=self.margin,
                      label_smoothing=self.label_smoothing)
        return config
