"""Center loss (Wen et al. 2016) as the bag-of-tricks baseline (reid-strong-baseline) uses it: the
centers are a variable of their own, stepped by a separate plain SGD."""
from utils.tf_env import tf, keras
from losses.labels import to_sparse_labels

CLAMP_MIN, CLAMP_MAX = 1e-12, 1e12
DEFAULT_CENTER_LEARNING_RATE = 0.5  # BoT's SOLVER.CENTER_LR


def center_loss(labels, features, centers):
    """Scalar ``(1/B) * sum_i clip(||x_i - c_{y_i}||^2, 1e-12, 1e12)`` (BoT's ``CenterLoss``).

    ``labels``: identity indices (B,)/(B, 1) or one-hot (B, C), each in [0, num_classes);
    ``features`` (B, D), cast to the centers' dtype; ``centers`` (num_classes, D). Outside the clip
    range a sample's gradient is 0, as with torch's ``clamp``. Gradient w.r.t. a center:
    ``dL/dc_j = -(2/B) * sum_{i: y_i = j} (x_i - c_j)``; 0 for classes absent from the batch.
    """
    centers = tf.convert_to_tensor(centers)
    features = tf.convert_to_tensor(features)
    if features.shape.rank != 2:
        raise ValueError(f"features must be (B, D), got shape {features.shape}.")
    features = tf.cast(features, centers.dtype)
    labels = to_sparse_labels(labels)
    num_classes = tf.shape(centers)[0]
    # tf.gather on GPU silently returns zeros for an out-of-range class instead of failing.
    with tf.control_dependencies([
            tf.debugging.assert_non_negative(labels, message="center_loss: labels must be >= 0"),
            tf.debugging.assert_less(labels, num_classes,
                                     message="center_loss: labels must be < num_classes")]):
        own_centers = tf.gather(centers, labels)
    squared_distances = tf.reduce_sum(tf.square(features - own_centers), axis=1)
    return tf.reduce_mean(tf.clip_by_value(squared_distances, CLAMP_MIN, CLAMP_MAX))


class CenterLoss(tf.Module):
    """Owns the centers (``.centers``: trainable ``tf.Variable`` (num_classes, feat_dim), drawn
    from N(0, 1) like BoT's ``torch.randn``; ``seed`` makes them reproducible).

    ``center(labels, features)`` is `center_loss` on them. The centers belong to no model: step
    them only with `make_optimizer`'s SGD, so the main optimizer (and its weight decay) never
    sees them, on the gradient of the UNWEIGHTED center loss::

        with tf.GradientTape() as tape:
            value = center(labels, features)        # the model's loss adds weight * value
        gradients = tape.gradient(value, [center.centers])
        center_optimizer.apply_gradients(zip(gradients, [center.centers]))

    BoT adds ``weight * value`` to the model's loss and multiplies the centers' gradient by
    ``1 / weight`` before its center SGD step, which is the same update:
    ``c_j <- c_j - lr * dL/dc_j`` with ``dL/dc_j = -(2/B) * sum_{i: y_i = j} (x_i - c_j)``.
    """

    def __init__(self, num_classes, feat_dim, seed=None, dtype=tf.float32, name="center_loss"):
        super().__init__(name=name)
        for argument, value in (("num_classes", num_classes), ("feat_dim", feat_dim)):
            if int(value) != value or value < 1:
                raise ValueError(f"{argument} must be a positive integer, got {value!r}.")
        self.num_classes, self.feat_dim = int(num_classes), int(feat_dim)
        shape = (self.num_classes, self.feat_dim)
        if seed is None:
            initial = tf.random.normal(shape, dtype=dtype)
        else:
            initial = tf.random.stateless_normal(shape, seed=[int(seed), 0], dtype=dtype)
        with self.name_scope:
            self.centers = tf.Variable(initial, trainable=True, name="centers")

    def __call__(self, labels, features):
        return center_loss(labels, features, self.centers)

    def make_optimizer(self, learning_rate=DEFAULT_CENTER_LEARNING_RATE):
        """Plain SGD (no momentum, no weight decay) for ``[self.centers]``."""
        if not float(learning_rate) > 0:
            raise ValueError(f"learning_rate must be > 0 (BoT uses 0.5), got {learning_rate}.")
        return keras.optimizers.SGD(learning_rate=float(learning_rate))
