"""FlipReID + Adaptive L2 person re-identification: flags, data, model, train, evaluate.

    python solution.py --flagfile configs/quick_start.flags --root_folder_path data
    python solution.py --dataset_name Market1501 --use_horizontal_flipping_inside_model
    python solution.py --evaluation_only --pretrained_model_file_path RUN/training_model.h5

The flags are defined in ``training/flags.py``; recipes are flag files under ``configs/``.
"""
import os
import sys
import time

START_TIME = time.time()  # the --time_budget_minutes clock starts before TensorFlow loads
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
if "--verbose_tensorflow" in sys.argv:  # read before TensorFlow loads and logs
    os.environ["REID_VERBOSE_TENSORFLOW"] = "1"
from utils.tf_env import tf  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)

from absl import app, logging  # noqa: E402

from training import config as run_config  # noqa: E402
from training.flags import FLAGS  # noqa: E402
from training.trainer import Trainer, WorkerLostError  # noqa: E402
from utils.seeding import seed_everything  # noqa: E402
from utils.threads import set_threads, thread_counts  # noqa: E402


def main(_):
    if not FLAGS.verbose_tensorflow:
        logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines, e.g. at each checkpoint
    try:
        run_solution()
    except (ValueError, FileNotFoundError, FloatingPointError, WorkerLostError) as error:
        if os.environ.get("REID_DEBUG"):
            raise
        sys.exit("Error: {} (set REID_DEBUG=1 for the traceback)".format(error))


def run_solution():
    print("Using command {}".format(" ".join(sys.argv)))
    config, saved_path = run_config.resolve(FLAGS.flag_values_dict(),
                                            run_config.explicit_flag_names(FLAGS))
    if saved_path:
        print("Read the saved configuration {} (flags given override it).".format(saved_path))
    print("Configuration:\n" + config.describe())
    set_threads(config.run.intra_op_threads, config.run.inter_op_threads,
                config.run.opencv_threads)
    print("Threads (0: TensorFlow's choice): {}".format(thread_counts()))
    seed_everything(config.run.seed, config.run.deterministic)

    trainer = Trainer(config, start_time=START_TIME)
    if config.run.evaluation_only:
        trainer.evaluate()
    else:
        trainer.train()
    print("All done!")


if __name__ == "__main__":
    app.run(main)
