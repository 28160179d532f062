"""Pairwise circle loss (Sun et al. 2020) on the batch, as fast-reid's ``pairwise_circleloss``."""
from utils.tf_env import tf, keras
from losses.labels import to_embedding_matrix, to_sparse_labels

DEFAULT_MARGIN = 0.25
DEFAULT_GAMMA = 128.0
# fast-reid's logit for masked pairs: exp() of it underflows to exactly 0 in float32 and float64.
MASKED_LOGIT = -99999999.0
# F.normalize's floor on the norm is 1e-12; l2_normalize floors the squared norm.
NORM_EPSILON_SQUARED = 1e-24


def _check_circle_arguments(margin, gamma):
    margin, gamma = float(margin), float(gamma)
    # From m = 1 on, delta_p = 1 - m <= 0 would ask positive pairs only for a cosine <= 0.
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1) (fast-reid uses 0.25), got {margin}.")
    if not gamma > 0.0:
        raise ValueError(f"gamma must be > 0 (fast-reid uses 128), got {gamma}.")
    return margin, gamma


def pairwise_circle_loss(labels, embeddings, margin=DEFAULT_MARGIN, gamma=DEFAULT_GAMMA):
    """Per-sample circle loss (B,); its batch mean is fast-reid's ``pairwise_circleloss``.

    With ``s_ij`` the cosine of the L2-normalised embeddings i and j, ``P_i`` the other samples of
    i's identity (i itself excluded) and ``N_i`` the samples of other identities:

        alpha_p = max(1 + m - s_ip, 0),  alpha_n = max(s_in + m, 0)     (no gradient)
        logit_p = -gamma * alpha_p * (s_ip - (1 - m)),  logit_n = gamma * alpha_n * (s_in - m)
        loss_i = softplus(logsumexp_{p in P_i} logit_p + logsumexp_{n in N_i} logit_n)

    ``alpha`` go through ``tf.stop_gradient`` (fast-reid's ``.detach()``). Pairs outside P_i/N_i get
    the logit -99999999, so an anchor without positives or negatives gets 0 with zero gradient.
    ``labels``: identity indices (B,)/(B, 1) or one-hot (B, C).
    """
    margin, gamma = _check_circle_arguments(margin, gamma)
    embeddings = to_embedding_matrix(embeddings)
    labels = to_sparse_labels(labels)
    normalised = tf.math.l2_normalize(embeddings, axis=1, epsilon=NORM_EPSILON_SQUARED)
    similarities = tf.matmul(normalised, normalised, transpose_b=True)
    same_identity = tf.equal(tf.expand_dims(labels, 1), tf.expand_dims(labels, 0))
    is_self = tf.cast(tf.eye(tf.shape(labels)[0]), tf.bool)
    positive_mask = tf.math.logical_xor(same_identity, is_self)
    negative_mask = tf.logical_not(same_identity)
    # The weights only rescale each pair's pull; differentiating through them is not the loss.
    frozen = tf.stop_gradient(similarities)
    alpha_p = tf.nn.relu(1.0 + margin - frozen)
    alpha_n = tf.nn.relu(frozen + margin)
    masked = tf.fill(tf.shape(similarities), tf.constant(MASKED_LOGIT, similarities.dtype))
    logit_p = tf.where(positive_mask, -gamma * alpha_p * (similarities - (1.0 - margin)), masked)
    logit_n = tf.where(negative_mask, gamma * alpha_n * (similarities - margin), masked)
    return tf.nn.softplus(tf.reduce_logsumexp(logit_p, axis=1)
                          + tf.reduce_logsumexp(logit_n, axis=1))


class CircleLoss(keras.losses.Loss):
    """Keras loss wrapper (mean over the batch) of `pairwise_circle_loss`; ``y_true`` are identity
    labels (B,)/(B, 1) or one-hot, ``y_pred`` the (B, D) embeddings (normalised inside)."""

    def __init__(self, margin=DEFAULT_MARGIN, gamma=DEFAULT_GAMMA, name="circle_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin, self.gamma = _check_circle_arguments(margin, gamma)

    def call(self, y_true, y_pred):
        return pairwise_circle_loss(y_true, y_pred, margin=self.margin, gamma=self.gamma)

    def get_config(self):
        config = super().get_config()
        config.update(margin=self.margin, gamma=self.gamma)
        return config
