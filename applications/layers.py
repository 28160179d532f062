"""Serialisable custom layers of the FlipReID / AdaptiveL2 re-ID head.

Everything here is a plain `keras.layers.Layer` subclass with `get_config`, so models using
them can be cloned, saved and reloaded without `Lambda` layers, whose Python closures Keras 3
refuses to deserialise in safe mode.
"""
from utils.tf_env import tf, keras

GEM_EPSILON = 1e-6


def _validate_rank(input_shape, rank, layer_name):
    shape = tf.TensorShape(input_shape)
    if shape.rank is not None and shape.rank != rank:
        raise ValueError(f"{layer_name} expects a {rank}-D input, got shape {shape}.")
    return shape


@keras.utils.register_keras_serializable(package="reid")
class GlobalGeMPooling2D(keras.layers.Layer):
    """Generalised-mean pooling over height and width (channels_last).

    ``(mean_{h,w} max(x, 1e-6)^p)^(1/p)`` with one trainable, unconstrained, unregularised scalar
    power ``p`` (initialised to 1.0, i.e. average pooling of the clamped map), as in FlipReID.
    """

    def __init__(self, initial_power=1.0, trainable_power=True, **kwargs):
        super().__init__(**kwargs)
        self.initial_power = float(initial_power)
        self.trainable_power = bool(trainable_power)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        _validate_rank(input_shape, 4, type(self).__name__)
        self.power = self.add_weight(
            name="power", shape=(), initializer=keras.initializers.Constant(self.initial_power),
            trainable=self.trainable_power)
        super().build(input_shape)

    def call(self, inputs):
        power = tf.cast(self.power, inputs.dtype)
        clamped = tf.maximum(inputs, tf.cast(GEM_EPSILON, inputs.dtype))
        pooled = tf.reduce_mean(tf.pow(clamped, power), axis=[1, 2])
        return tf.pow(pooled, 1.0 / power)

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape)
        return tf.TensorShape([shape[0], shape[-1]])

    def get_config(self):
        config = super().get_config()
        config.update(initial_power=self.initial_power, trainable_power=self.trainable_power)
        return config


@keras.utils.register_keras_serializable(package="reid")
class Clip(keras.layers.Layer):
    """Element-wise clipping to ``[min_value, max_value]``; either bound may be None (no clip)."""

    def __init__(self, min_value=0.0, max_value=1.0, **kwargs):
        super().__init__(**kwargs)
        if min_value is not None and max_value is not None and min_value > max_value:
            raise ValueError(f"Clip needs min_value <= max_value, got {min_value} > {max_value}.")
        self.min_value = None if min_value is None else float(min_value)
        self.max_value = None if max_value is None else float(max_value)

    def call(self, inputs):
        outputs = inputs
        if self.min_value is not None:
            outputs = tf.maximum(outputs, tf.cast(self.min_value, inputs.dtype))
        if self.max_value is not None:
            outputs = tf.minimum(outputs, tf.cast(self.max_value, inputs.dtype))
        return outputs

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(min_value=self.min_value, max_value=self.max_value)
        return config


def stripe_bounds(height, index, region_num):
    """Rows ``[start, stop)`` of stripe ``index``: height ``H // region_num``, last stripe runs to H."""
    region_size = height // region_num
    start = index * region_size
    stop = height if index == region_num - 1 else (index + 1) * region_size
    return start, stop


@keras.utils.register_keras_serializable(package="reid")
class HorizontalStripe(keras.layers.Layer):
    """Slices horizontal stripe ``index`` of ``region_num`` from a (B, H, W, C) map."""

    def __init__(self, index, region_num, **kwargs):
        super().__init__(**kwargs)
        index, region_num = int(index), int(region_num)
        if region_num < 1:
            raise ValueError(f"HorizontalStripe needs region_num >= 1, got {region_num}.")
        if not 0 <= index < region_num:
            raise ValueError(f"HorizontalStripe index must be in [0, {region_num}), got {index}.")
        self.index = index
        self.region_num = region_num
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        shape = _validate_rank(input_shape, 4, type(self).__name__)
        height = shape[1]
        if height is not None and height < self.region_num:
            raise ValueError(
                f"Feature map height {height} is smaller than region_num={self.region_num}; "
                "use a taller input image or a smaller region_num.")
        super().build(input_shape)

    def call(self, inputs):
        height = inputs.shape[1]
        if height is None:
            height = tf.shape(inputs)[1]
            region_size = height // self.region_num
            start = self.index * region_size
            stop = height if self.index == self.region_num - 1 else (self.index + 1) * region_size
        else:
            start, stop = stripe_bounds(height, self.index, self.region_num)
        return inputs[:, start:stop]

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape).as_list()
        if shape[1] is not None:
            start, stop = stripe_bounds(shape[1], self.index, self.region_num)
            shape[1] = stop - start
        return tf.TensorShape(shape)

    def get_config(self):
        config = super().get_config()
        config.update(index=self.index, region_num=self.region_num)
        return config


@keras.utils.register_keras_serializable(package="reid")
class HorizontalFlip(keras.layers.Layer):
    """Mirrors images (B, H, W, C) along the width axis, like ``tf.image.flip_left_right``."""

    def call(self, inputs):
        return tf.reverse(inputs, axis=[2])

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)


@keras.utils.register_keras_serializable(package="reid")
class FlippingLoss(keras.layers.Layer):
    """Flipping loss of FlipReID and the averaged (merged) features.

    Called on ``[vanilla_features, flipped_features]`` (two equally long lists of (B, D)
    tensors). Adds ``weight * sum_branches mean_batch(mean_dim((v - f)^2))`` with ``add_loss`` and
    logs the unweighted sum as metric ``"flipping"``. Returns the list ``(v + f) / 2``.
    """

    def __init__(self, weight=1.0, metric_name="flipping", **kwargs):
        super().__init__(**kwargs)
        weight = float(weight)
        if weight < 0:
            raise ValueError(f"FlippingLoss weight must be >= 0, got {weight}.")
        self.weight = weight
        self.metric_name = metric_name

    @staticmethod
    def _split(inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError("FlippingLoss expects [vanilla_features, flipped_features].")
        vanilla, flipped = inputs
        vanilla = list(vanilla) if isinstance(vanilla, (list, tuple)) else [vanilla]
        flipped = list(flipped) if isinstance(flipped, (list, tuple)) else [flipped]
        if len(vanilla) != len(flipped):
            raise ValueError(f"FlippingLoss got {len(vanilla)} vanilla and {len(flipped)} flipped "
                             "features; they must pair up branch by branch.")
        return vanilla, flipped

    def call(self, inputs):
        vanilla, flipped = self._split(inputs)
        branch_losses = [tf.reduce_mean(tf.reduce_mean(tf.square(v - f), axis=-1))
                         for v, f in zip(vanilla, flipped)]
        flipping_loss = tf.add_n(branch_losses)
        self.add_loss(self.weight * flipping_loss)
        self.add_metric(flipping_loss, name=self.metric_name, aggregation="mean")
        return [(v + f) / 2.0 for v, f in zip(vanilla, flipped)]

    def compute_output_shape(self, input_shape):
        return list(input_shape[0])

    def get_config(self):
        config = super().get_config()
        config.update(weight=self.weight, metric_name=self.metric_name)
        return config


@keras.utils.register_keras_serializable(package="reid")
class CosineClassifier(keras.layers.Layer):
    """Cosine of the angle between each feature and each class weight: (B, D) -> (B, C) in [-1, 1].

    The head of the margin softmax losses (CosFace, ArcFace in `losses.classification`): features
    and class weights are L2-normalised, so only directions are learnt. The weight is called
    ``kernel`` (D, C) like a Dense kernel, so L2 / weight decay treat it the same way.
    """

    def __init__(self, units, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if int(units) < 1:
            raise ValueError(f"CosineClassifier needs units >= 1, got {units}.")
        self.units = int(units)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        shape = _validate_rank(input_shape, 2, self.name)
        self.kernel = self.add_weight(name="kernel", shape=(int(shape[-1]), self.units),
                                      initializer=self.kernel_initializer, trainable=True)
        super().build(input_shape)

    def call(self, inputs):
        features = tf.math.l2_normalize(inputs, axis=-1, epsilon=1e-12)
        weights = tf.math.l2_normalize(self.kernel, axis=0, epsilon=1e-12)
        return tf.matmul(features, weights)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:-1].concatenate([self.units])

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config
