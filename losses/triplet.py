"""Batch-hard triplet loss of Hermans et al., soft margin by default, with the optional "harder
example mining" factor of person-reid-tiny-baseline (``hard_factor``)."""
from utils.tf_env import tf, keras
from losses.labels import to_embedding_matrix, to_sparse_labels

DISTANCE_EPSILON = 1e-12


def _check_margin(margin):
    if isinstance(margin, str):
        if margin != "soft":
            raise ValueError(f'margin must be "soft" or a number >= 0, got {margin!r}.')
        return margin
    if margin is None or float(margin) < 0:
        raise ValueError(f'margin must be "soft" or a number >= 0, got {margin!r}.')
    return float(margin)


def _check_hard_factor(hard_factor):
    hard_factor = float(hard_factor)
    # At 1 the negative term vanishes and above it flips sign: the loss would pull negatives in.
    if not 0.0 <= hard_factor < 1.0:
        raise ValueError(f"hard_factor must be in [0, 1) (0 = plain batch-hard), got {hard_factor}.")
    return hard_factor


def pairwise_euclidean_distances(embeddings, others=None):
    """``sqrt(sum((a_i - b_j)^2) + 1e-12)`` over all pairs (``others`` default ``embeddings``),
    via explicit differences (exact, as in the reference; no |a|^2 + |b|^2 - 2ab
    cancellation)."""
    others = embeddings if others is None else others
    differences = tf.expand_dims(embeddings, 1) - tf.expand_dims(others, 0)
    return tf.sqrt(tf.reduce_sum(tf.square(differences), axis=-1) + DISTANCE_EPSILON)


def batch_hard_triplet_loss(labels, embeddings, margin="soft", hard_factor=0.0, batch=None):
    """Per-sample loss (B,) of batch-hard mining with harder-example factor ``a = hard_factor``:

        x_i = (1 + a) * max_p d(i, p) - (1 - a) * min_n d(i, n)
        loss_i = softplus(x_i)              if margin == "soft"
        loss_i = max(x_i + margin, 0)       if margin is a number >= 0

    ``d`` is `pairwise_euclidean_distances`; positives exclude the anchor itself. The batch mean
    is person-reid-tiny-baseline's ``TripletLoss(margin, hard_factor)``: it scales
    ``dist_ap *= 1 + a`` and ``dist_an *= 1 - a``, then takes
    ``MarginRankingLoss(dist_an, dist_ap, y=1) = mean(max(0, dist_ap - dist_an + margin))`` or
    ``SoftMarginLoss(dist_an - dist_ap, y=1) = mean(log(1 + exp(dist_ap - dist_an)))`` of the
    scaled distances. ``a = 0`` is plain batch-hard. (The baseline's distances differ by
    ~1e-6: ``sqrt(max(|x|^2 + |y|^2 - 2xy, 1e-12))``, with the anchor among its positives.)

    ``labels``: identity indices (B,)/(B, 1) or one-hot (B, C). An anchor without negatives gets 0
    (without positives its furthest positive distance is 0, as in the reference).

    ``batch``: ``(all labels (N,), all embeddings (N, D), offset)`` when the B anchors are rows
    ``offset .. offset + B - 1`` of a larger batch whose positives and negatives they are mined
    in (one replica's share of the global batch); default: the anchors' own batch.
    """
    margin = _check_margin(margin)
    hard_factor = _check_hard_factor(hard_factor)
    embeddings = to_embedding_matrix(embeddings)
    labels = to_sparse_labels(labels)
    all_labels, all_embeddings, offset = (labels, embeddings, 0) if batch is None else (
        to_sparse_labels(batch[0]), to_embedding_matrix(batch[1]), batch[2])
    distances = pairwise_euclidean_distances(embeddings, all_embeddings)
    same_identity = tf.equal(tf.expand_dims(labels, 1), tf.expand_dims(all_labels, 0))
    rows = tf.range(tf.shape(labels)[0]) + tf.cast(offset, tf.int32)
    is_self = tf.equal(tf.expand_dims(rows, 1), tf.expand_dims(tf.range(tf.shape(all_labels)[0]), 0))
    positive_mask = tf.math.logical_xor(same_identity, is_self)
    negative_mask = tf.logical_not(same_identity)
    furthest_positive = tf.reduce_max(
        distances * tf.cast(positive_mask, distances.dtype), axis=1)
    infinity = tf.fill(tf.shape(distances), tf.constant(float("inf"), distances.dtype))
    closest_negative = tf.reduce_min(tf.where(negative_mask, distances, infinity), axis=1)
    difference = (1.0 + hard_factor) * furthest_positive - (1.0 - hard_factor) * closest_negative
    if margin == "soft":
        losses = tf.nn.softplus(difference)
    else:
        losses = tf.maximum(difference + margin, 0.0)
    has_negative = tf.reduce_any(negative_mask, axis=1)
    return tf.where(has_negative, losses, tf.zeros_like(losses))


class BatchHardTripletLoss(keras.losses.Loss):
    """Keras loss wrapper (mean over the batch) of `batch_hard_triplet_loss`.

    Under a strategy with several replicas, each replica's anchors are mined in its own
    sub-batch, or with ``gather_across_replicas`` in the global batch: the embeddings and labels
    of every replica are gathered (the gather's gradient returns each replica its share), so the
    loss and gradients are those of one device holding the whole batch."""

    def __init__(self, margin="soft", hard_factor=0.0, gather_across_replicas=False,
                 name="batch_hard_triplet_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = _check_margin(margin)
        self.hard_factor = _check_hard_factor(hard_factor)
        self.gather_across_replicas = bool(gather_across_replicas)

    def call(self, y_true, y_pred):
        batch = None
        context = tf.distribute.get_replica_context()
        if self.gather_across_replicas and context is not None and \
                context.num_replicas_in_sync > 1:
            embeddings = to_embedding_matrix(y_pred)
            labels = to_sparse_labels(y_true)
            offset = tf.cast(context.replica_id_in_sync_group, tf.int32) * tf.shape(labels)[0]
            batch = (context.all_gather(labels, axis=0),
                     context.all_gather(embeddings, axis=0), offset)
        return batch_hard_triplet_loss(y_true, y_pred, margin=self.margin,
                                       hard_factor=self.hard_factor, batch=batch)

    def get_config(self):
        config = super().get_config()
        config.update(margin=self.margin, hard_factor=self.hard_factor,
                      gather_across_replicas=self.gather_across_replicas)
        return config
