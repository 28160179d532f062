"""Does the input pipeline limit training? Loader and train-step images/s, side by side.

    python benchmarks/train_input_speed.py --root_folder_path ../shared/datasets [--steps 100]
        [--rounds 4] [-- extra solution.py flags]

Builds the model and training pipeline of the Market-1501 budget benchmark
(`market1501_budget.py`, configuration ``no_flip_inside``; extra solution.py flags after ``--``)
and measures, in one process: the loader alone (iterating the training dataset), ``fit`` on the
live pipeline, and ``fit`` on batches taken from it and held in memory, in alternating rounds.
When the two ``fit`` numbers agree, the input pipeline is not what limits training. Prints one
markdown table.
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

from utils.tf_env import tf  # noqa: E402

MEMORY_BATCHES = 40


def images_per_second(run, images):
    start = time.perf_counter()
    run()
    return images / (time.perf_counter() - start)


def median_and_range(values):
    return "{:.0f} ({:.0f} to {:.0f})".format(np.median(values), min(values), max(values))


def compiled_training_model(config, num_classes, trainer_class=None, **compile_kwargs):
    """The training model of ``config`` (a `RunConfig`), compiled as solution.py does (by
    ``trainer_class``, a `Trainer` subclass, if given)."""
    from training.trainer import Trainer

    trainer = (trainer_class or Trainer)(config)
    trainer.build_models(num_classes)
    trainer.build_optimizer()
    return trainer.compile(**compile_kwargs)


def main():
    import solution
    from market1501_budget import COMMON_FLAGS, CONFIGS, command_line
    from training.config import RunConfig
    from training.trainer import Trainer
    from utils.seeding import seed_everything

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root_folder_path", required=True)
    parser.add_argument("--steps", type=int, default=100, help="Timed steps per measurement.")
    parser.add_argument("--rounds", type=int, default=4, help="Measurements of each input.")
    arguments, extra = parser.parse_known_args()
    flag_values = dict(COMMON_FLAGS, **CONFIGS["no_flip_inside"],
                       root_folder_path=arguments.root_folder_path)
    solution.FLAGS(["solution.py"] + command_line(flag_values) +
                   [argument for argument in extra if argument != "--"])
    options = RunConfig.from_flag_values(solution.FLAGS.flag_values_dict())
    seed_everything(options.run.seed)
    trainer = Trainer(options)
    data = trainer.build_data()
    model = compiled_training_model(options, data.num_classes)
    live = trainer.build_training_dataset()
    batch_size = options.batch_size
    held = list(live.take(MEMORY_BATCHES))
    memory = tf.data.Dataset.from_tensor_slices((tf.stack([images for images, _ in held]),
                                                 tf.stack([labels for _, labels in held])))
    memory = memory.repeat()
    steps = arguments.steps
    iterator = iter(live)
    loader = images_per_second(lambda: [next(iterator) for _ in range(steps)], steps * batch_size)
    speeds = {"live": [], "memory": []}
    # Alternating rounds: on this machine a step's speed jumps between two levels from one
    # minute to the next, on either input, so one round of each could mislead.
    for name, dataset in [("live", live), ("memory", memory)] * arguments.rounds:
        model.fit(dataset, steps_per_epoch=10, epochs=1, verbose=0)  # warm-up, tracing
        speeds[name].append(images_per_second(
            lambda: model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0),
            steps * batch_size))

    print("| backbone | input | batch | loader images/s | fit on the live pipeline images/s, "
          "median (range) | fit on {} batches in memory |".format(MEMORY_BATCHES))
    print("|---|---|---|---|---|---|")
    print("| {} | {}x{} | {} | {:.0f} | {} | {} |".format(
        options.model.backbone_model_name, options.data.image_height, options.data.image_width,
        batch_size,
        loader, median_and_range(speeds["live"]), median_and_range(speeds["memory"])))


if __name__ == "__main__":
    main()
