"""What a train step costs: the budget benchmark's model and its variants on in-memory batches.

    python benchmarks/train_step_speed.py [--steps 60] [--rounds 3] [--xla] [--mixed_bfloat16]
                                          [--mixed_float16] [--identities_per_batch 32,...]
                                          [--l2_forms] [--extras_only] [--config NAME]

Builds, in one process, the Market-1501 budget benchmark's training model
(`market1501_budget.py`, configuration ``--config``, default ``no_flip_inside``: OSNet-x0.25;
``mobilenetv3small`` for the tables measured before it; 751 classes) and variants of it
(global branch only, fixed or no L2), plus a bare Keras MobileNetV3Small + average pooling + BN
+ classifier trained with cross-entropy alone (what a minimal script would train). Each gets
the same random uint8-range batch of 16x4 images held in memory, so the input pipeline plays no
part; the models run in alternating rounds because this machine's step speed jumps between
levels from one minute to the next. ``--xla`` adds the default model compiled with
``jit_compile=True``, ``--mixed_bfloat16`` the default model built under Keras' mixed_bfloat16
policy (bfloat16 compute, float32 variables), ``--mixed_float16`` the default model with
``--mixed_precision`` (float16 compute, dynamic loss scale), ``--identities_per_batch`` the default model at
other P of the PK batch (K stays 4, the same images per round), ``--l2_forms`` the default model
with one L2 loss per tensor (the form before they were fused into one loss per model) and
without L2; ``--extras_only`` times only the
default model and these. Prints one markdown table (images/s, median and range over the rounds;
the seconds of each model's first fit, which traces the step).
"""
import argparse
import os
import sys
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from utils.tf_env import keras, tf  # noqa: E402

NUM_CLASSES = 751  # Market-1501's training identities
NO_L2 = {name + "_regularization_factor": 0.0 for name in ("kernel", "bias", "gamma", "beta")}
VARIANTS = [
    ("re-ID model, two stripes, adaptive L2 (the budget benchmark's)", {}),
    ("re-ID model, two stripes, fixed L2", {"use_adaptive_l1_l2_regularizer": False}),
    ("re-ID model, global branch only (`--region_num 0`), adaptive L2", {"region_num": 0}),
    ("re-ID model, global branch only, no L2",
     dict(NO_L2, region_num=0, use_adaptive_l1_l2_regularizer=False)),
]


def per_tensor_l2_trainer():
    """A `Trainer` whose adaptive L2 is one loss per tensor (the unfused form)."""
    import dataclasses

    from training.trainer import Trainer

    class PerTensorL2Trainer(Trainer):
        def regularization_config(self):
            return dataclasses.replace(super().regularization_config(), fused=False)

    return PerTensorL2Trainer


def bare_keras_model(options):
    backbone = keras.applications.MobileNetV3Small(
        input_shape=options.input_shape, include_top=False,
        weights=None)
    tensor = keras.layers.GlobalAveragePooling2D()(backbone.output)
    tensor = keras.layers.BatchNormalization()(tensor)
    probabilities = keras.layers.Dense(NUM_CLASSES, activation="softmax",
                                       use_bias=False)(tensor)
    model = keras.Model(backbone.input, probabilities)
    model.compile(optimizer=keras.optimizers.Adam(options.solver.learning_rate_base),
                  loss="sparse_categorical_crossentropy")
    return model


def main():
    import solution
    from market1501_budget import COMMON_FLAGS, CONFIGS, command_line
    from train_input_speed import compiled_training_model, images_per_second, median_and_range
    from training.config import RunConfig
    from utils.seeding import seed_everything

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="Timed steps per round.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds of each model.")
    parser.add_argument("--xla", action="store_true",
                        help="Add the default model with jit_compile=True (slow to compile).")
    parser.add_argument("--mixed_bfloat16", action="store_true",
                        help="Add the default model under the mixed_bfloat16 policy.")
    parser.add_argument("--mixed_float16", action="store_true",
                        help="Add the default model with --mixed_precision (mixed_float16, "
                             "dynamic loss scale).")
    parser.add_argument("--identities_per_batch", default="",
                        help="Comma-separated P values: the default model at these batch sizes.")
    parser.add_argument("--l2_forms", action="store_true",
                        help="Add the default model with one L2 loss per tensor (the form before "
                             "the fused loss) and the default model without L2.")
    parser.add_argument("--extras_only", action="store_true",
                        help="Leave out the other variants and the bare Keras model.")
    parser.add_argument("--config", default="no_flip_inside", choices=sorted(CONFIGS),
                        help="The budget benchmark's configuration to time (mobilenetv3small: "
                             "the default model up to OSNet, of the tables until then).")
    arguments = parser.parse_args()
    # No data is read; any existing folder passes the option check.
    flag_values = dict(COMMON_FLAGS, **CONFIGS[arguments.config], root_folder_path=REPO_ROOT)
    solution.FLAGS(["solution.py"] + command_line(flag_values))
    base = solution.FLAGS.flag_values_dict()
    seed_everything(0)

    variants = VARIANTS[:1] if arguments.extras_only else list(VARIANTS)
    for value in filter(None, arguments.identities_per_batch.split(",")):
        variants.append((f"re-ID model, two stripes, adaptive L2, PK {int(value)}x"
                         f"{base['image_num_per_identity']}",
                         {"identity_num_per_batch": int(value)}))
    models, batch_sizes = {}, {}
    for name, overrides in variants:
        variant_options = RunConfig.from_flag_values(dict(base, **overrides))
        models[name] = compiled_training_model(variant_options, NUM_CLASSES)
        batch_sizes[name] = variant_options.batch_size
    options = RunConfig.from_flag_values(base)
    if arguments.xla:
        models["re-ID model, two stripes, adaptive L2, `jit_compile=True` (XLA)"] = \
            compiled_training_model(options, NUM_CLASSES, jit_compile=True)
    if arguments.mixed_bfloat16:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        models["re-ID model, two stripes, adaptive L2, mixed_bfloat16 policy"] = \
            compiled_training_model(options, NUM_CLASSES)
        keras.mixed_precision.set_global_policy("float32")
    if arguments.mixed_float16:
        models["re-ID model, two stripes, adaptive L2, `--mixed_precision` (mixed_float16)"] = \
            compiled_training_model(options.replace(mixed_precision=True), NUM_CLASSES)
    if arguments.l2_forms:
        models["re-ID model, two stripes, adaptive L2 as one loss per tensor"] = \
            compiled_training_model(options, NUM_CLASSES, trainer_class=per_tensor_l2_trainer())
        models["re-ID model, two stripes, no L2"] = compiled_training_model(
            RunConfig.from_flag_values(dict(base, **NO_L2, use_adaptive_l1_l2_regularizer=False)),
            NUM_CLASSES)
    if not arguments.extras_only:
        models["bare Keras MobileNetV3Small + pooling + BN + classifier, cross-entropy only"] = \
            bare_keras_model(options)

    batch_size = options.batch_size
    height, width, images_per_identity = (options.data.image_height, options.data.image_width,
                                          options.data.image_num_per_identity)
    batch_sizes = {name: batch_sizes.get(name, batch_size) for name in models}
    generator = np.random.default_rng(0)
    datasets_by_size = {}
    for size in sorted(set(batch_sizes.values())):  # one batch per size, shared by its models
        images = generator.integers(0, 256, (size, height, width, 3))
        labels = np.repeat(np.arange(size // images_per_identity), images_per_identity)
        datasets_by_size[size] = tf.data.Dataset.from_tensors(
            (images.astype("float32"), labels)).repeat()
    datasets = {name: datasets_by_size[size] for name, size in batch_sizes.items()}
    first_fit_seconds = {}
    for name, model in models.items():
        start = time.perf_counter()
        model.fit(datasets[name], steps_per_epoch=5, epochs=1, verbose=0)  # tracing
        first_fit_seconds[name] = time.perf_counter() - start
    speeds = {name: [] for name in models}
    for _ in range(arguments.rounds):
        for name, model in models.items():
            steps = arguments.steps * batch_size // batch_sizes[name]
            speeds[name].append(images_per_second(
                lambda: model.fit(datasets[name], steps_per_epoch=steps, epochs=1, verbose=0),
                steps * batch_sizes[name]))

    print("| model ({} {}x{}, batch {}, {} cores) | train images/s, median (range) "
          "| first fit: trace + 5 steps (s) |".format(
              options.model.backbone_model_name, height, width, batch_size, os.cpu_count()))
    print("|---|---|---|")
    for name, values in speeds.items():
        print("| {} | {} | {:.1f} |".format(name, median_and_range(values),
                                            first_fit_seconds[name]))


if __name__ == "__main__":
    main()
