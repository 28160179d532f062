"""Batch-hard triplet loss of Hermans et al., soft margin by default."""
from utils.tf_env import tf, keras
from losses.labels import to_sparse_labels

DISTANCE_EPSILON = 1e-12


def _check_margin(margin):
    if isinstance(margin, str):
        if margin != "soft":
            raise ValueError(f'margin must be "soft" or a number >= 0, got {margin!r}.')
        return margin
    if margin is None or float(margin) < 0:
        raise ValueError(f'margin must be "soft" or a number >= 0, got {margin!r}.')
    return float(margin)


def pairwise_euclidean_distances(embeddings):
    """``sqrt(sum((a_i - a_j)^2) + 1e-12)`` over all pairs, via explicit differences (exact, as in
    the reference; no |a|^2 + |b|^2 - 2ab cancellation)."""
    differences = tf.expand_dims(embeddings, 1) - tf.expand_dims(embeddings, 0)
    return tf.sqrt(tf.reduce_sum(tf.square(differences), axis=-1) + DISTANCE_EPSILON)


def batch_hard_triplet_loss(labels, embeddings, margin="soft"):
    """Per-sample loss (B,): for each anchor, furthest positive (self excluded) minus closest
    negative, through ``softplus`` (``margin="soft"``) or ``max(diff + margin, 0)``.

    ``labels``: identity indices (B,)/(B, 1) or one-hot (B, C). An anchor without negatives gets 0
    (without positives its furthest positive distance is 0, as in the reference).
    """
    margin = _check_margin(margin)
    embeddings = tf.convert_to_tensor(embeddings)
    if not embeddings.dtype.is_floating:
        embeddings = tf.cast(embeddings, tf.float32)
    if embeddings.shape.rank != 2:
        raise ValueError(f"embeddings must be (B, D), got shape {embeddings.shape}.")
    labels = to_sparse_labels(labels)
    distances = pairwise_euclidean_distances(embeddings)
    same_identity = tf.equal(tf.expand_dims(labels, 1), tf.expand_dims(labels, 0))
    is_self = tf.cast(tf.eye(tf.shape(labels)[0]), tf.bool)
    positive_mask = tf.math.logical_xor(same_identity, is_self)
    negative_mask = tf.logical_not(same_identity)
    furthest_positive = tf.reduce_max(
        distances * tf.cast(positive_mask, distances.dtype), axis=1)
    infinity = tf.fill(tf.shape(distances), tf.constant(float("inf"), distances.dtype))
    closest_negative = tf.reduce_min(tf.where(negative_mask, distances, infinity), axis=1)
    difference = furthest_positive - closest_negative
    if margin == "soft":
        losses = tf.nn.softplus(difference)
    else:
        losses = tf.maximum(difference + margin, 0.0)
    has_negative = tf.reduce_any(negative_mask, axis=1)
    return tf.where(has_negative, losses, tf.zeros_like(losses))


class BatchHardTripletLoss(keras.losses.Loss):
    """Keras loss wrapper (mean over the batch) of `batch_hard_triplet_loss`."""

    def __init__(self, margin="soft", name="batch_hard_triplet_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = _check_margin(margin)

    def call(self, y_true, y_pred):
        return batch_hard_triplet_loss(y_true, y_pred, margin=self.margin)

    def get_config(self):
        config = super().get_config()
        config.update(margin=self.margin)
        return config
