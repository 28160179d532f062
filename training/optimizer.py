"""The optimizer: the originals' Adam, or AdamW when ``--weight_decay`` is set."""
from utils.tf_env import keras

# AdamW decays only convolution and dense kernels: BN's gamma/beta, biases, GeM powers and the
# adaptive-L2 factors stay undecayed (decaying them pulls activations and factors towards 0).
# tf-keras treats every pattern as `re.search` on the variable name, so this one matches
# (= excludes) every variable whose name does not end in "kernel:<n>".
NOT_A_KERNEL = r"^(?!.*kernel(:\d+)?$)"


def make_optimizer(weight_decay=0.0, learning_rate=0.001):
    """Adam (weight_decay 0, as the originals) or AdamW with decoupled ``weight_decay``.

    AdamW shrinks each kernel by ``learning_rate * weight_decay`` of itself every step, so the
    decay follows the learning-rate schedule. Unlike an L2 term in the loss, Adam's per-weight
    scaling does not weaken it.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    if not weight_decay:
        return keras.optimizers.Adam(learning_rate)
    optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    optimizer.exclude_from_weight_decay(var_names=[NOT_A_KERNEL])
    return optimizer
