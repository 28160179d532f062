"""Fixed L2 (FlipReID) and adaptive L2 (AdaptiveL2Regularization).

Terms are attached to already-built layers with the public Keras-2 API:

* adaptive: one trainable scalar θ per regularised tensor, created with ``layer.add_weight`` on
  the layer that owns the tensor (so it is frozen with that layer, saved with the model and trained
  by the same optimizer); the tensor's term is ``amplitude * clip(0.2*θ + 0.5, 0, 1) * sum(w^2)``.
  The slope 0.2 is TF 2.2's ``K.hard_sigmoid``, written out explicitly.
* fixed: ``factor * sum(w^2)`` (Keras ``l2`` semantics, no 1/2).

The terms are added to the model as one fused callable loss per given model (``model.add_loss``):
the factors as one vector, the sums of squares stacked, one dot product. The value is the sum of
the per-tensor terms in fewer ops: ~200 separate terms slowed the first trace (budget model: 38 s
against 31 s fused, 18 s without L2; benchmarks/train_step_speed.py --l2_forms).
`RegularizationTerm.loss` still gives each term alone.

Which tensors: every layer exposing a ``kernel`` (Conv*, Dense; also ``depthwise_kernel`` and
``pointwise_kernel`` of depthwise/separable convs, with the kernel factor) and, for those layers,
their ``bias``; every ``BatchNormalization`` (incl. subclasses such as tf2cv's BatchNorm) ``gamma``
and ``beta``. Instance norms, GeM powers and θ themselves are never regularised. Each variable gets
at most one term, even when several layers expose it.

Callable losses are collected by ``model.losses`` of every enclosing (nested) model regardless of
``trainable`` — like TF 2.2, frozen layers' terms stay in the reported loss but get no gradient.
"""
import dataclasses
import weakref

from utils.tf_env import tf, keras

HARD_SIGMOID_SLOPE = 0.2
KERNEL_PARAMETERS = ("kernel", "depthwise_kernel", "pointwise_kernel")

_BATCH_NORMALIZATION_TYPES = tuple(
    cls for cls in (keras.layers.BatchNormalization,
                    getattr(getattr(keras.layers, "experimental", None),
                            "SyncBatchNormalization", None))
    if cls is not None)

# Layers whose weights must exist before terms can be attached.
_WEIGHTED_TYPES = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D,
                   keras.layers.Conv3D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
                   keras.layers.Conv2DTranspose) + _BATCH_NORMALIZATION_TYPES

# layer -> names of its parameters that already carry a term (attaching twice must not double it).
_REGULARISED = weakref.WeakKeyDictionary()


@dataclasses.dataclass
class RegularizationConfig:
    """Per-parameter-type factors; with ``adaptive`` they are the amplitudes of the adaptive L2.

    FlipReID defaults: 5e-4 each, ``adaptive=False``; AdaptiveL2 defaults: 5e-3 each,
    ``adaptive=True``. A ``None`` factor disables that parameter type. ``fused=False`` adds one
    loss per tensor to its layer instead of one per model (same value; for speed comparisons).
    """
    kernel: float = 0.005
    bias: float = 0.005
    gamma: float = 0.005
    beta: float = 0.005
    adaptive: bool = True
    fused: bool = True

    def factor_for(self, parameter):
        if parameter in KERNEL_PARAMETERS:
            return self.kernel
        return {"bias": self.bias, "gamma": self.gamma, "beta": self.beta}[parameter]

    def attaches(self, factor):
        """As in the originals, adaptive attaches when factor >= 0 (0 too), fixed when > 0."""
        if factor is None:
            return False
        return factor >= 0 if self.adaptive else factor > 0


def _hard_sigmoid(theta):
    """The adaptive factor's fraction of its amplitude: clip(0.2θ + 0.5, 0, 1)."""
    return tf.clip_by_value(HARD_SIGMOID_SLOPE * theta + 0.5, 0.0, 1.0)


@dataclasses.dataclass(eq=False)
class RegularizationTerm:
    """One regularised tensor: ``factor * sum(variable^2)``, factor fixed or adaptive."""
    layer: keras.layers.Layer
    parameter: str
    variable: tf.Variable
    amplitude: float
    theta: tf.Variable = None  # None for fixed L2

    @property
    def adaptive(self):
        return self.theta is not None

    def factor_tensor(self):
        if self.theta is None:
            return tf.constant(self.amplitude, dtype=self.variable.dtype)
        return self.amplitude * _hard_sigmoid(tf.cast(self.theta, self.variable.dtype))

    def effective_factor(self):
        """Current factor as a Python float (amplitude * clip(0.2θ + 0.5, 0, 1) if adaptive)."""
        return float(self.factor_tensor().numpy())

    def loss(self):
        return self.factor_tensor() * tf.reduce_sum(tf.square(self.variable))

    def log_key(self):
        """``{layer.name}_{param}_regularizer_l2_regularization_factor``. The layer
        part is the tensor's name scope with "/" -> "_", which is the layer name for ordinary
        Keras layers and stays unique for tf2cv-style nested layers that reuse short names."""
        return (f"{_variable_scope(self.layer, self.variable).replace('/', '_')}_"
                f"{self.parameter}_regularizer_l2_regularization_factor")


def _as_list(model_or_models):
    return list(model_or_models) if isinstance(model_or_models, (list, tuple)) \
        else [model_or_models]


def iterate_layers(model_or_models):
    """Every Keras layer inside the given models/layers, recursively and each once, in a stable
    order (nested models and tf2cv-style layers that hold sublayers as attributes included)."""
    roots = _as_list(model_or_models)
    seen = set()
    for root in roots:
        if not isinstance(root, keras.layers.Layer):
            raise ValueError(f"Expected Keras models or layers, got {type(root).__name__}.")
        for layer in [root] + list(root.submodules):
            if (not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.metrics.Metric)
                    or id(layer) in seen):
                continue
            seen.add(id(layer))
            yield layer


def _variable_attribute(layer, name):
    value = getattr(layer, name, None)
    return value if isinstance(value, tf.Variable) else None


def _regularisable_parameters(layer):
    """(parameter name, variable) pairs of one layer, following the module docstring rules."""
    parameters = []
    kernels = [(name, _variable_attribute(layer, name)) for name in KERNEL_PARAMETERS]
    kernels = [(name, variable) for name, variable in kernels if variable is not None]
    if kernels:
        parameters.extend(kernels)
        bias = _variable_attribute(layer, "bias")
        if bias is not None and getattr(layer, "use_bias", True):
            parameters.append(("bias", bias))
    if isinstance(layer, _BATCH_NORMALIZATION_TYPES):
        if getattr(layer, "scale", True) and _variable_attribute(layer, "gamma") is not None:
            parameters.append(("gamma", layer.gamma))
        if getattr(layer, "center", True) and _variable_attribute(layer, "beta") is not None:
            parameters.append(("beta", layer.beta))
    return parameters


def _variable_scope(layer, variable):
    """Name scope of a weight ("a/b/conv" for "a/b/conv/kernel:0"), else the layer name."""
    base = variable.name.split(":")[0]
    return base.rsplit("/", 1)[0] if "/" in base else layer.name


def _theta_name_scope(layer, variable):
    # θ is named after its tensor ("<tensor scope>/<param>_l2_regularization_theta") so θ names are
    # unique whenever the weight names are, which HDF5 weight files require.
    return _variable_scope(layer, variable) + "/"


def _fused_loss(terms):
    """One callable for the sum of ``terms``: factors * sums of squares as one dot product."""
    thetas = [term.theta for term in terms if term.adaptive]
    if thetas and len(thetas) != len(terms):
        raise ValueError("A fused L2 loss takes adaptive or fixed terms, not both.")
    # l2_loss is sum(w^2) / 2 in one op whose gradient is one multiply, hence 2 * amplitude.
    doubled_amplitudes = tf.constant([2.0 * term.amplitude for term in terms], tf.float32)
    variables = [term.variable for term in terms]

    def loss():
        halved_sums = tf.stack([tf.nn.l2_loss(tf.cast(variable, tf.float32))
                                for variable in variables])
        factors = doubled_amplitudes
        if thetas:
            theta = tf.stack([tf.cast(value, tf.float32) for value in thetas])
            factors = factors * _hard_sigmoid(theta)
        return tf.reduce_sum(factors * halved_sums)
    return loss


def _root_terms(root, config, seen_layers, seen_variables):
    """New `RegularizationTerm` s of one given model's layers not claimed by an earlier one."""
    terms = []
    for layer in iterate_layers(root):
        if id(layer) in seen_layers:
            continue
        seen_layers.add(id(layer))
        if isinstance(layer, _WEIGHTED_TYPES) and not layer.built:
            raise ValueError(f"Layer {layer.name} is not built yet; call the model on an input "
                             "(or build it) before attach_regularizers.")
        for parameter, variable in _regularisable_parameters(layer):
            amplitude = config.factor_for(parameter)
            if not config.attaches(amplitude) or variable.ref() in seen_variables:
                continue
            seen_variables.add(variable.ref())
            done = _REGULARISED.setdefault(layer, set())
            if parameter in done:
                raise ValueError(
                    f"{layer.name}.{parameter} ({variable.name}) already has an L2 term; "
                    "call attach_regularizers once per model.")
            theta = None
            if config.adaptive:
                with tf.name_scope(_theta_name_scope(layer, variable)):
                    theta = layer.add_weight(
                        name=f"{parameter}_l2_regularization_theta", shape=(),
                        initializer="zeros", trainable=True)
            terms.append(RegularizationTerm(layer=layer, parameter=parameter, variable=variable,
                                            amplitude=float(amplitude), theta=theta))
            done.add(parameter)
    return terms


def attach_regularizers(model_or_models, config, verbose=True):
    """Attach L2 terms to every regularisable tensor of the given (possibly nested) models.

    Returns the list of `RegularizationTerm` (one per tensor). Must be called before the optimizer
    is built so the θ variables are part of the trainable variables.
    """
    if config is None:
        return []
    if not isinstance(config, RegularizationConfig):
        raise ValueError(f"config must be a RegularizationConfig, got {type(config).__name__}.")
    roots = _as_list(model_or_models)
    terms, seen_variables, seen_layers = [], set(), set()
    for root in roots:
        root_terms = _root_terms(root, config, seen_layers, seen_variables)
        if root_terms and config.fused:
            # A tensor's term goes to the first given model that holds it, so nesting one given
            # model in another cannot count a term twice.
            root.add_loss(_fused_loss(root_terms))
        elif root_terms:
            for term in root_terms:
                term.layer.add_loss(term.loss)
        terms.extend(root_terms)
    if verbose:
        counts = {}
        for term in terms:
            counts[term.parameter] = counts.get(term.parameter, 0) + 1
        kind = "adaptive" if config.adaptive else "fixed"
        print(f"Regularization ({kind} L2) terms per parameter: {counts}")
        print(f"Added {len(terms)} regularization terms.")
    return terms


def regularization_factors(terms, include_fixed=False):
    """Effective factors keyed ``{layer.name}_{param}_regularizer_l2_regularization_factor``
    (see `RegularizationTerm.log_key`); a still repeated key gets ``_2``, ``_3``, ...
    Fixed terms are constant, so they are left out unless ``include_fixed``."""
    factors = {}
    for term in terms:
        if not term.adaptive and not include_fixed:
            continue
        key, index = term.log_key(), 2
        while key in factors:
            key = f"{term.log_key()}_{index}"
            index += 1
        factors[key] = term.effective_factor()
    return factors


def regularization_loss(terms):
    """Sum of all terms (a scalar tensor; 0 when there are none)."""
    if not terms:
        return tf.constant(0.0)
    return tf.add_n([term.loss() for term in terms])
