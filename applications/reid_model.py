"""FlipReID / AdaptiveL2 re-ID head on a block-wise backbone.

Models built by `build_reid_models` (all share weights):

* ``feature_model``: raw RGB 0..255 image -> list of pooled, clipped embeddings, one per branch:
  ``global`` (C) and ``region_1..region_N`` (C // N each).
* ``inference_model``: image -> ONE tensor, the concatenation of the branch embeddings (e.g.
  2048 + 2 * 1024 = 4096-d for ResNet50), or with ``evaluation_feature="bnneck"`` of their
  BNNeck outputs. It never flips; flip-TTA belongs to feature extraction.
* ``classification_model``: one input per branch -> BNNeck (BN, eps 2e-5) -> Dense (no bias,
  N(0, 0.001)) -> softmax; with a margin head (``classifier_head`` "cosface" / "arcface")
  -> `CosineClassifier` -> cosines, which `MarginCrossEntropy` turns into the loss.
* ``training_model``: image -> ``[<branch>_embedding ..., <branch>_softmax ...]`` (embeddings
  first, as FR). With ``use_horizontal_flipping_inside_model`` the flipped image goes through the
  same ``feature_model``; a `FlippingLoss` layer adds the flipping MSE (weight
  ``flipping_loss_weight``, metric ``flipping``) and the embeddings are the vanilla/flipped mean.

Targets: the losses take SPARSE integer labels (B,) (one-hot (B, C) also works). Keras (tf-keras)
applies one label tensor to every output, so ``fit(images, labels)`` is enough; a dict keyed by
``training_model.output_names`` works too.
"""
import dataclasses
from typing import List, Optional

from utils.tf_env import tf, keras
from applications.layers import (Clip, CosineClassifier, FlippingLoss, GlobalGeMPooling2D,
                                 HorizontalFlip, HorizontalStripe)
from applications.regularization import (RegularizationConfig, attach_regularizers,
                                         regularization_factors)
from losses.classification import MARGIN_KINDS, CategoricalCrossEntropy, MarginCrossEntropy
from applications.training_model import ReIDTrainingModel
from losses.circle import CircleLoss
from losses.triplet import BatchHardTripletLoss

POOLING_MODES = ("GeM", "Average", "Max")
CLASSIFIER_HEADS = ("softmax",) + MARGIN_KINDS
EVALUATION_FEATURES = ("embedding", "bnneck")
EMBEDDING_SUFFIX = "_embedding"
SOFTMAX_SUFFIX = "_softmax"
# Under a mixed_float16 policy, pooling, embeddings, probabilities and the losses they feed stay
# float32 (the backbone computes in float16).
FLOAT32 = dict(dtype="float32")
CIRCLE_SUFFIX = "_circle"  # the same embedding again, for the pairwise circle loss


@dataclasses.dataclass
class ReIDModels:
    """The models of one re-ID network plus the handles the training script needs."""
    training_model: keras.Model
    inference_model: keras.Model
    classification_model: keras.Model
    feature_model: keras.Model
    branch_names: List[str]
    embedding_sizes: List[int]
    backbone_blocks: List[keras.Model]  # blocks[:-1] + the last-block copies, in use
    global_block: keras.Model
    regional_block: Optional[keras.Model]
    gem_layers: List[GlobalGeMPooling2D]
    regularization_terms: list
    flipping_layer: Optional[FlippingLoss] = None
    classifier_head: str = "softmax"

    @property
    def backbone_block_names(self):
        return [block.name for block in self.backbone_blocks]

    @property
    def embedding_output_names(self):
        return [name + EMBEDDING_SUFFIX for name in self.branch_names]

    @property
    def softmax_output_names(self):
        return [name + SOFTMAX_SUFFIX for name in self.branch_names]

    @property
    def circle_output_names(self):
        """The circle-loss outputs (present when built with ``circle_loss=True``)."""
        return [name for name in self.training_model.output_names
                if name.endswith(CIRCLE_SUFFIX)]

    def gem_powers(self):
        """``{"<gem layer name>_power": p}`` (FlipReID's per-epoch log keys)."""
        return {f"{layer.name}_power": float(layer.power.numpy()) for layer in self.gem_layers}

    def regularization_factors(self):
        """Effective adaptive-L2 factors under AdaptiveL2's log keys (empty for fixed L2)."""
        return regularization_factors(self.regularization_terms)


def _pooling_module(tensor, pooling_mode, min_value, max_value, branch_name, gem_layers):
    if pooling_mode == "GeM":
        layer = GlobalGeMPooling2D(name=f"{branch_name}_gem_pooling", **FLOAT32)
        gem_layers.append(layer)
    elif pooling_mode == "Average":
        layer = keras.layers.GlobalAveragePooling2D(name=f"{branch_name}_average_pooling",
                                                    **FLOAT32)
    else:
        layer = keras.layers.GlobalMaxPooling2D(name=f"{branch_name}_max_pooling", **FLOAT32)
    tensor = layer(tensor)
    if min_value is not None and max_value is not None:
        tensor = Clip(min_value, max_value, name=f"{branch_name}_clip", **FLOAT32)(tensor)
    return tensor


def _validate_arguments(backbone, num_classes, region_num, pooling_mode, flipping_loss_weight,
                        regularization, classifier_head, evaluation_feature):
    if not getattr(backbone, "blocks", None):
        raise ValueError("backbone must have a non-empty `blocks` list of Keras models.")
    if not callable(getattr(backbone, "make_last_block_copy", None)):
        raise ValueError("backbone must provide make_last_block_copy(name) to build the two "
                         "independent last-block branches.")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    if int(region_num) < 0:
        raise ValueError(f"region_num must be >= 0 (0 disables the regional branch), got "
                         f"{region_num}.")
    if pooling_mode not in POOLING_MODES:
        raise ValueError(f"pooling_mode must be one of {POOLING_MODES}, got {pooling_mode!r}.")
    if float(flipping_loss_weight) < 0:
        raise ValueError(f"flipping_loss_weight must be >= 0, got {flipping_loss_weight}.")
    if classifier_head not in CLASSIFIER_HEADS:
        raise ValueError(f"classifier_head must be one of {CLASSIFIER_HEADS}, got "
                         f"{classifier_head!r}.")
    if evaluation_feature not in EVALUATION_FEATURES:
        raise ValueError(f"evaluation_feature must be one of {EVALUATION_FEATURES}, got "
                         f"{evaluation_feature!r}.")
    if regularization is not None and not isinstance(regularization, RegularizationConfig):
        raise ValueError("regularization must be a RegularizationConfig or None.")


def _resolve_input_shape(backbone, input_shape):
    if input_shape is None:
        first_shape = getattr(backbone.blocks[0], "input_shape", None)
        if isinstance(first_shape, list):
            first_shape = first_shape[0]
        input_shape = None if first_shape is None else tuple(first_shape[1:])
    if input_shape is None or len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"input_shape must be (height, width, 3), got {input_shape}; pass "
                         "input_shape= explicitly.")
    return tuple(input_shape)


def build_reid_models(backbone, num_classes, region_num=2, pooling_mode="GeM", min_value=0.0,
                      max_value=1.0, use_horizontal_flipping_inside_model=False,
                      flipping_loss_weight=1.0, regularization=None, input_shape=None,
                      classifier_head="softmax", evaluation_feature="embedding", verbose=True,
                      circle_loss=False):
    """Build the feature/inference/classification/training models (see module docstring).

    ``circle_loss``: the training model also outputs each branch's embedding as
    ``<branch>_circle``, so the circle loss gets its own weight and log key.

    ``regularization``: a `RegularizationConfig` (attached to the feature and classification
    models before the training model is assembled) or None for no weight regularisation.
    ``input_shape`` defaults to the first block's input shape.
    """
    _validate_arguments(backbone, num_classes, region_num, pooling_mode, flipping_loss_weight,
                        regularization, classifier_head, evaluation_feature)
    num_classes, region_num = int(num_classes), int(region_num)
    input_shape = _resolve_input_shape(backbone, input_shape)
    blocks = list(backbone.blocks)
    last_block = blocks[-1]

    image = keras.Input(shape=input_shape, name="image")
    tensor = image
    for block in blocks[:-1]:
        tensor = block(tensor)
    global_block = backbone.make_last_block_copy(f"{last_block.name}_global_branch")
    regional_block = (backbone.make_last_block_copy(f"{last_block.name}_regional_branch")
                      if region_num > 0 else None)

    gem_layers, branch_names, embeddings = [], ["global"], []
    global_map = global_block(tensor)
    if global_map.shape.rank != 4:
        raise ValueError(f"The last backbone block must output a 4-D feature map, got "
                         f"{global_map.shape}.")
    channels = global_map.shape[-1]
    embeddings.append(_pooling_module(global_map, pooling_mode, min_value, max_value, "global",
                                      gem_layers))
    if region_num > 0:
        if channels // region_num < 1:
            raise ValueError(f"region_num={region_num} exceeds the {channels} feature channels.")
        regional_map = regional_block(tensor)
        for index in range(region_num):
            branch_name = f"region_{index + 1}"
            branch_names.append(branch_name)
            stripe = HorizontalStripe(index, region_num, name=f"{branch_name}_stripe")(regional_map)
            stripe = keras.layers.Conv2D(channels // region_num, 3, padding="same",
                                         name=f"{branch_name}_conv")(stripe)
            stripe = keras.layers.ReLU(name=f"{branch_name}_relu")(stripe)
            embeddings.append(_pooling_module(stripe, pooling_mode, min_value, max_value,
                                              branch_name, gem_layers))
    embedding_sizes = [int(embedding.shape[-1]) for embedding in embeddings]
    feature_model = keras.Model(image, embeddings, name="feature_model")

    classification_inputs, probabilities, bnnecks = [], [], []
    for branch_name, size in zip(branch_names, embedding_sizes):
        feature = keras.Input(shape=(size,), name=f"{branch_name}_feature")
        classification_inputs.append(feature)
        bnnecks.append(keras.layers.BatchNormalization(epsilon=2e-5,
                                                       name=f"{branch_name}_bnneck"))
        tensor = bnnecks[-1](feature)
        if classifier_head == "softmax":
            tensor = keras.layers.Dense(
                num_classes, use_bias=False,
                kernel_initializer=keras.initializers.RandomNormal(mean=0.0, stddev=0.001),
                name=f"{branch_name}_classifier")(tensor)
            tensor = keras.layers.Activation(
                "softmax", name=f"{branch_name}_classifier_softmax", **FLOAT32)(tensor)
        else:
            tensor = CosineClassifier(num_classes, name=f"{branch_name}_classifier",
                                      **FLOAT32)(tensor)
        probabilities.append(tensor)
    classification_model = keras.Model(classification_inputs, probabilities,
                                       name="classification_model")

    # The BNNeck layers are shared, so "bnneck" features use the trained moving statistics.
    inference_features = (embeddings if evaluation_feature == "embedding" else
                          [layer(embedding) for layer, embedding in zip(bnnecks, embeddings)])
    if len(inference_features) > 1:
        concatenated = keras.layers.Concatenate(name="embedding", **FLOAT32)(inference_features)
    else:
        concatenated = keras.layers.Activation("linear", name="embedding",
                                               **FLOAT32)(inference_features[0])
    inference_model = keras.Model(image, concatenated, name="inference_model")

    terms = attach_regularizers([feature_model, classification_model], regularization,
                                verbose=verbose) if regularization is not None else []

    training_image = keras.Input(shape=input_shape, name="image")
    vanilla = tf.nest.flatten(feature_model(training_image))
    flipping_layer = None
    if use_horizontal_flipping_inside_model:
        flipped_image = HorizontalFlip(name="horizontal_flip")(training_image)
        flipped = tf.nest.flatten(feature_model(flipped_image))
        flipping_layer = FlippingLoss(flipping_loss_weight, name="flipping_loss", **FLOAT32)
        merged = tf.nest.flatten(flipping_layer([vanilla, flipped]))
    else:
        merged = vanilla
    merged_probabilities = tf.nest.flatten(classification_model(merged))
    outputs = [keras.layers.Activation("linear", name=name + EMBEDDING_SUFFIX, **FLOAT32)(tensor)
               for name, tensor in zip(branch_names, merged)]
    outputs += [keras.layers.Activation("linear", name=name + SOFTMAX_SUFFIX, **FLOAT32)(tensor)
                for name, tensor in zip(branch_names, merged_probabilities)]
    if circle_loss:
        outputs += [keras.layers.Activation("linear", name=name + CIRCLE_SUFFIX, **FLOAT32)(tensor)
                    for name, tensor in zip(branch_names, merged)]
    training_model = ReIDTrainingModel(training_image, outputs, name="training_model")

    backbone_blocks = blocks[:-1] + [global_block] + ([regional_block] if regional_block else [])
    return ReIDModels(
        training_model=training_model, inference_model=inference_model,
        classification_model=classification_model, feature_model=feature_model,
        branch_names=branch_names, embedding_sizes=embedding_sizes,
        backbone_blocks=backbone_blocks, global_block=global_block,
        regional_block=regional_block, gem_layers=gem_layers, regularization_terms=terms,
        flipping_layer=flipping_layer, classifier_head=classifier_head)


def set_backbone_trainable(models, trainable):
    """(Un)freeze the backbone blocks and both last-block copies.

    The regional convs, GeM powers, BNNecks and classifiers are untouched. Frozen BN layers run in
    inference mode (tf-keras semantics); θ of frozen layers freeze with them. Recompile afterwards
    (`compile_training_model`).
    """
    if not isinstance(models, ReIDModels):
        raise ValueError("set_backbone_trainable expects the ReIDModels from build_reid_models.")
    for block in models.backbone_blocks:
        block.trainable = bool(trainable)


def load_training_weights(models, path):
    """``training_model.load_weights(path)`` that also accepts HDF5 files saved while the backbone
    had the other trainable state (tf-keras h5 files list each nested model's weights trainable
    first, so the order depends on freezing). TF-checkpoint paths load by object graph anyway."""
    if not isinstance(models, ReIDModels):
        raise ValueError("load_training_weights expects the ReIDModels from build_reid_models.")
    try:
        return models.training_model.load_weights(path)
    except ValueError:
        if not str(path).endswith((".h5", ".hdf5", ".keras")):
            raise
    states = [block.trainable for block in models.backbone_blocks]
    set_backbone_trainable(models, not all(states))
    try:
        return models.training_model.load_weights(path)
    finally:
        for block, state in zip(models.backbone_blocks, states):
            block.trainable = state


def training_losses(training_model, label_smoothing=0.0, margin="soft", classifier_head="softmax",
                    cosine_scale=30.0, cosine_margin=None, hard_factor=0.0, circle_margin=0.25,
                    circle_gamma=128.0, gather_across_replicas=False):
    """``{output name: loss}``: batch-hard triplet on ``*_embedding`` (``margin`` "soft" or a
    number, ``hard_factor`` for harder example mining), CE on ``*_softmax`` (the margin CE on
    the cosines of a "cosface" / "arcface" head), the pairwise circle loss on ``*_circle``.
    ``gather_across_replicas``: the triplet mines in the global batch of a distributed run."""
    losses = {}
    for name in training_model.output_names:
        if name.endswith(EMBEDDING_SUFFIX):
            losses[name] = BatchHardTripletLoss(margin=margin, hard_factor=hard_factor,
                                                gather_across_replicas=gather_across_replicas,
                                                name=f"{name}_triplet")
        elif name.endswith(CIRCLE_SUFFIX):
            losses[name] = CircleLoss(circle_margin, circle_gamma, name=f"{name}_loss")
        elif name.endswith(SOFTMAX_SUFFIX) and classifier_head == "softmax":
            losses[name] = CategoricalCrossEntropy(label_smoothing=label_smoothing,
                                                   name=f"{name}_cross_entropy")
        elif name.endswith(SOFTMAX_SUFFIX):
            losses[name] = MarginCrossEntropy(classifier_head, cosine_scale, cosine_margin,
                                              label_smoothing, name=f"{name}_{classifier_head}")
        else:
            raise ValueError(f"Output {name!r} is not an embedding, softmax or circle output; "
                             "pass a model from build_reid_models.")
    return losses


def compile_training_model(models, optimizer, label_smoothing=0.0, margin="soft",
                           cosine_scale=30.0, cosine_margin=None, loss_options=None,
                           **compile_kwargs):
    """Compile the training model with `training_losses` (each weight 1) + ``model.losses``.

    ``models``: the `ReIDModels`, or the ``training_model`` of a softmax-head one. Targets are
    sparse integer labels (B,), given once (Keras repeats them for every output). A new-style
    Keras optimizer is built on every variable that can ever train (frozen ones included), so the
    same instance can be reused after `set_backbone_trainable` + recompiling, keeping its slots
    and iteration count like the originals' single Adam (such an optimizer only ever updates the
    variables it was built on). ``cosine_scale`` / ``cosine_margin`` (None: the head's usual
    margin) are used by margin heads only; ``loss_options`` are `training_losses`' other
    keyword arguments (hard_factor, circle_margin, circle_gamma, gather_across_replicas).
    Returns the training model.
    """
    training_model = models.training_model if isinstance(models, ReIDModels) else models
    head = models.classifier_head if isinstance(models, ReIDModels) else "softmax"
    if not isinstance(training_model, keras.Model):
        raise ValueError("compile_training_model expects ReIDModels or a Keras training model.")
    if head == "softmax" and any(isinstance(layer, CosineClassifier)
                                 for layer in training_model.submodules):
        # A bare model does not say whether its cosines are for CosFace or ArcFace.
        raise ValueError("This training model has a CosineClassifier head, which needs a margin "
                         "loss (CosFace or ArcFace): pass the ReIDModels from build_reid_models "
                         "instead of its training_model.")
    if isinstance(optimizer, keras.optimizers.Optimizer):
        optimizer.build([variable for variable in training_model.variables if variable.trainable])
    training_model.compile(optimizer=optimizer,
                           loss=training_losses(training_model, label_smoothing, margin, head,
                                                cosine_scale, cosine_margin,
                                                **(loss_options or {})),
                           **compile_kwargs)
    return training_model


def transfer_weights(source, target):
    """Copies the weights of ``source``'s training model into ``target``'s (both `ReIDModels`
    built alike), except the classifier weights whose shape differs (another class count),
    which keep their fresh initialisation. Returns the names of those left out."""
    if not (isinstance(source, ReIDModels) and isinstance(target, ReIDModels)):
        raise ValueError("transfer_weights expects two ReIDModels from build_reid_models.")
    classifier = {weight.ref() for layer in target.classification_model.layers
                  if layer.name.endswith("_classifier") for weight in layer.weights}
    source_weights = source.training_model.weights
    target_weights = target.training_model.weights
    if len(source_weights) != len(target_weights):
        raise ValueError("The models differ in more than their classifier ({} vs {} weights): "
                         "build them with the same backbone and head flags.".format(
                             len(source_weights), len(target_weights)))
    skipped = []
    for source_weight, target_weight in zip(source_weights, target_weights):
        if source_weight.shape == target_weight.shape:
            target_weight.assign(source_weight)
        elif target_weight.ref() in classifier:
            skipped.append(target_weight.name)
        else:
            raise ValueError("Weight {} has shape {} in the checkpoint but {} here: the models "
                             "differ in more than their classifier.".format(
                                 target_weight.name, source_weight.shape, target_weight.shape))
    return skipped


def _is_theta(variable):
    return variable.name.split(":")[0].endswith("_l2_regularization_theta")


def export_inference_model(models):
    """A standalone copy of the inference model without the adaptive-L2 θ variables and L2
    losses, so ``save("x.h5")`` / ``keras.models.load_model(...)`` round-trips (its custom layers
    are registered serialisable; a model with θ attached to its layers has more weights than its
    config rebuilds)."""
    source = models.inference_model if isinstance(models, ReIDModels) else models
    try:
        clone = keras.models.clone_model(source)
    except Exception as error:  # tf2cv-style layers may not rebuild from their config
        raise ValueError(
            "The inference model cannot be rebuilt from its config (some backbone layers are "
            "not serialisable); save weights with save_weights() and rebuild the model with "
            "build_reid_models instead.") from error
    source_weights = [w for w in source.weights if not _is_theta(w)]
    if len(source_weights) != len(clone.weights):
        raise ValueError(f"Cloned inference model has {len(clone.weights)} weights, expected "
                         f"{len(source_weights)}; the backbone blocks must be clonable.")
    for source_weight, clone_weight in zip(source_weights, clone.weights):
        if source_weight.shape != clone_weight.shape:
            raise ValueError(f"Weight mismatch while exporting: {source_weight.name} "
                             f"{source_weight.shape} vs {clone_weight.name} {clone_weight.shape}.")
        clone_weight.assign(source_weight)
    return clone
