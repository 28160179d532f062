"""Label and embedding normalisation shared by the losses."""
from utils.tf_env import tf


def to_sparse_labels(labels):
    """(B,) int32 identity indices from sparse (B,)/(B, 1) labels or one-hot (B, C) labels.

    A rank-2 label tensor whose static last dimension is > 1 is taken as one-hot (argmax).
    """
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 2 and labels.shape[-1] is not None and labels.shape[-1] > 1:
        return tf.argmax(labels, axis=-1, output_type=tf.int32)
    if labels.shape.rank is not None and labels.shape.rank > 2:
        raise ValueError(f"Labels must be (B,), (B, 1) or one-hot (B, C); got shape {labels.shape}.")
    return tf.cast(tf.reshape(labels, [-1]), tf.int32)


def to_embedding_matrix(embeddings):
    """``embeddings`` as a floating (B, D) tensor (integers become float32)."""
    embeddings = tf.convert_to_tensor(embeddings)
    if not embeddings.dtype.is_floating:
        embeddings = tf.cast(embeddings, tf.float32)
    if embeddings.shape.rank != 2:
        raise ValueError(f"embeddings must be (B, D), got shape {embeddings.shape}.")
    return embeddings
