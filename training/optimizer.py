"""The optimizer: the originals' Adam by default; AMSGrad or SGD (momentum, Nesterov) as the
PyTorch baselines use them; with ``--weight_decay``, decoupled weight decay of the kernels."""
from utils.tf_env import keras

OPTIMIZER_NAMES = ("adam", "amsgrad", "sgd")
# Weight decay shrinks only convolution and dense kernels: BN's gamma/beta, biases, GeM powers
# and the adaptive-L2 factors stay undecayed (decaying them pulls activations and factors
# towards 0). tf-keras treats every pattern as `re.search` on the variable name, so this one
# matches (= excludes) every variable whose name does not end in "kernel:<n>".
NOT_A_KERNEL = r"^(?!.*kernel(:\d+)?$)"


def make_optimizer(weight_decay=0.0, learning_rate=0.001, name="adam", momentum=0.9,
                   nesterov=False):
    """Adam, AMSGrad or SGD; ``weight_decay`` > 0 adds decoupled weight decay (AdamW for the
    Adam family, SGD's own ``weight_decay`` otherwise).

    Decoupled decay shrinks each kernel by ``learning_rate * weight_decay`` of itself every
    step, so it follows the learning-rate schedule and Adam's per-weight scaling does not
    weaken it. (PyTorch's ``weight_decay`` adds ``weight_decay * w`` to the gradient instead:
    that coupled form is this toolkit's fixed L2 regularizer with factors ``weight_decay / 2``.)
    ``momentum`` and ``nesterov`` are SGD's.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    if name not in OPTIMIZER_NAMES:
        raise ValueError(f"Unknown optimizer {name!r}; use one of {OPTIMIZER_NAMES}.")
    decay = {"weight_decay": weight_decay} if weight_decay else {}
    if name == "sgd":
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        optimizer = keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=nesterov,
                                         **decay)
    else:
        adam = keras.optimizers.AdamW if weight_decay else keras.optimizers.Adam
        optimizer = adam(learning_rate, amsgrad=name == "amsgrad", **decay)
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=[NOT_A_KERNEL])
    return optimizer
