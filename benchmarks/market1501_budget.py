"""Market-1501 from scratch within a wall-clock budget (issue 4): wraps one solution.py run.

    python benchmarks/market1501_budget.py --root_folder_path ../shared/datasets [--minutes 60]
        [--config no_flip_inside | configs/NAME.flags] [--evaluations flip_off,re_ranking]
        [-- <extra solution.py flags>]

Runs solution.py with the named configuration (or any Market-1501 recipe file) and ``--time_budget_minutes`` (everything is
inside the budget: imports, loading, training, the final evaluation on the full query/gallery).
Ends by printing one JSON line: mAP, rank-1, rank-5, mINP, minutes, train images/s, backbone,
image size and every flag that differs from solution.py's defaults. ``--evaluations`` then
re-evaluates the saved model outside the budget (flip in evaluation off, re-ranking), one JSON
line each. ``--cpus 0`` pins the run to those cores (ablations ran two at a time, one core each).
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import time

REPOSITORY_PATH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The CPU budget recipe, shared by every configuration: OSNet-x0.25 from scratch at
# Market's native 128x64, PK 16x4, warm-up + cosine fitted to the budget, evaluation only at the
# (fitted) last epoch. The file says why each value was chosen; --minutes and --config set the
# budget and the flip inside the model.
sys.path.insert(0, REPOSITORY_PATH)
from training.config import FLAG_NAMES  # noqa: E402  (TensorFlow-free)
from utils.machine import cpu_description  # noqa: E402  (no TensorFlow)

RECIPE_PATH = os.path.join(REPOSITORY_PATH, "configs", "market1501_cpu_budget.flags")
SET_BY_THIS_SCRIPT = ("time_budget_minutes", "use_horizontal_flipping_inside_model")


def read_flag_file(path):
    """``{flag name: value}`` of an absl flag file (``--name=value``, ``--name``, ``--noname``)."""
    values = {}
    with open(path) as file:
        for line in file:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, separator, value = line.lstrip("-").partition("=")
            if separator:
                values[name] = value
            elif name.startswith("no") and name[2:] in FLAG_NAMES:
                values[name[2:]] = False
            else:
                values[name] = True
    return values


COMMON_FLAGS = {name: value for name, value in read_flag_file(RECIPE_PATH).items()
                if name not in SET_BY_THIS_SCRIPT}
CONFIGS = {
    # FlipReID: flip inside the model, flipping loss, adaptive L2.
    "flipreid": {"use_horizontal_flipping_inside_model": True},
    "flipreid_no_flipping_loss": {"use_horizontal_flipping_inside_model": True,
                                  "flipping_loss_weight": 0.0},
    "flipreid_fixed_l2": {"use_horizontal_flipping_inside_model": True,
                          "use_adaptive_l1_l2_regularizer": False},
    # No flip inside: half the work per image, so twice the epochs in the same budget (the best
    # configuration under a CPU budget: benchmarks/README.md).
    "no_flip_inside": {"use_horizontal_flipping_inside_model": False},
    "no_flip_inside_fixed_l2": {"use_horizontal_flipping_inside_model": False,
                                "use_adaptive_l1_l2_regularizer": False},
    # The default up to OSNet-x0.25 (the recipe was tuned on it).
    "mobilenetv3small": {"use_horizontal_flipping_inside_model": False,
                         "backbone_model_name": "MobileNetV3Small"},
}
EVALUATIONS = {"flip_off": {"use_horizontal_flipping_in_evaluation": False},
               "re_ranking": {"use_re_ranking": True},
               "embedding_feature": {"evaluation_feature": "embedding"},
               "bnneck_feature": {"evaluation_feature": "bnneck"}}


def configuration_flags(config):
    """The flags of ``config``: a name of ``CONFIGS`` (on the budget recipe) or a recipe file."""
    if config in CONFIGS:
        return dict(COMMON_FLAGS, **CONFIGS[config])
    if not config.endswith(".flags") or not os.path.isfile(config):
        sys.exit("--config {!r} is neither one of {} nor a .flags file.".format(
            config, ", ".join(sorted(CONFIGS))))
    values = read_flag_file(config)
    if values.get("dataset_name", "Market1501") != "Market1501":
        sys.exit("--config {} trains on {}; this benchmark is Market-1501's.".format(
            config, values["dataset_name"]))
    values.pop("time_budget_minutes", None)
    return values


def configuration_name(config):
    return os.path.splitext(os.path.basename(config))[0]


def command_line(flag_values):
    arguments = []
    for name, value in flag_values.items():
        if isinstance(value, bool):
            arguments.append("--{}{}".format("" if value else "no", name))
        else:
            arguments += ["--" + name, str(value)]
    return arguments


def solution_flags(arguments):
    """solution.py's flag defaults and the values it runs with for ``arguments``, as two dicts.

    absl parses them as solution.py will, so the extra flags override the configuration's in the
    reported values too, and a misspelt one stops the benchmark before the run."""
    code = ("import json, sys, solution; F = solution.FLAGS; F(['solution.py'] + sys.argv[1:]); "
            "print(json.dumps([{n: F[n].default for n in F}, F.flag_values_dict()]))")
    process = subprocess.run([sys.executable, "-c", code] + list(arguments), cwd=REPOSITORY_PATH,
                             capture_output=True, text=True)
    if process.returncode:
        sys.exit("solution.py does not accept these flags: "
                 + process.stderr.strip().splitlines()[-1])
    return json.loads(process.stdout.strip().splitlines()[-1])


def run_solution(flag_values, extra, cpus, log_path):
    command = [sys.executable, os.path.join(REPOSITORY_PATH, "solution.py")]
    command += command_line(flag_values) + list(extra)
    environment = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    if cpus:
        command = ["taskset", "-c", cpus] + command
        threads = str(len(cpus.split(",")))
        environment.update(TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS=threads,
                           OMP_NUM_THREADS=threads)
    print("Running:", " ".join(command), flush=True)
    start = time.time()
    with open(log_path, "w") as log:
        process = subprocess.run(command, cwd=REPOSITORY_PATH, stdout=log,
                                 stderr=subprocess.STDOUT, env=environment)
    minutes = (time.time() - start) / 60
    if process.returncode:
        sys.exit("solution.py failed (exit {}); see {}".format(process.returncode, log_path))
    return minutes


def train_images_per_second(run_folder):
    """Mean train-step images/s over the epochs after the first (which traces the graph)."""
    path = os.path.join(run_folder, "training_B", "history.csv")
    with open(path) as file:
        rows = list(csv.DictReader(file))
    values = [float(row["train_images_per_second"]) for row in rows
              if row.get("train_images_per_second")]
    values = values[1:] or values
    return sum(values) / len(values), len(rows)


def result_line(run_folder, flag_values, defaults, minutes, extra):
    with open(os.path.join(run_folder, "test_metrics.json")) as file:
        metrics = json.load(file)
    images_per_second, epochs = train_images_per_second(run_folder)
    changed = {name: value for name, value in flag_values.items()
               if name not in ("root_folder_path", "output_folder_path")
               and defaults.get(name) != value}
    return {"mAP": round(100 * metrics["mAP"], 2), "rank-1": round(100 * metrics["rank-1"], 2),
            "rank-5": round(100 * metrics["rank-5"], 2),
            "mINP": round(100 * metrics["mINP"], 2), "minutes": round(minutes, 2),
            "epochs": epochs, "train_images_per_second": round(images_per_second, 1),
            "backbone": flag_values["backbone_model_name"],
            "image_size": "{}x{}".format(flag_values["image_height"], flag_values["image_width"]),
            "flip_in_evaluation": metrics["use_horizontal_flipping_in_evaluation"],
            "re_ranking": metrics["use_re_ranking"],
            "non_default_flags": changed, "extra_flags": list(extra), "cpu": cpu_description()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root_folder_path", required=True,
                        help="Folder holding Market-1501-v15.09.15.")
    parser.add_argument("--minutes", type=float, default=60.0, help="Wall-clock budget.")
    parser.add_argument("--config", default="no_flip_inside",
                        help="One of {}, or a Market-1501 recipe flag file (e.g. "
                             "configs/tiny_baseline_market1501_resnet50.flags), whose "
                             "--time_budget_minutes --minutes replaces.".format(
                                 ", ".join(sorted(CONFIGS))))
    parser.add_argument("--output_folder_path", default=None,
                        help="Default: output/market1501_budget/<config>_<minutes>min.")
    parser.add_argument("--evaluations", default="",
                        help="Comma-separated re-evaluations of the saved model: "
                             + ", ".join(EVALUATIONS))
    parser.add_argument("--cpus", default="", help="taskset core list, e.g. 0 or 0,1.")
    arguments, extra = parser.parse_known_args()
    extra = [argument for argument in extra if argument != "--"]
    if not os.path.isdir(os.path.join(arguments.root_folder_path, "Market-1501-v15.09.15")):
        sys.exit("--root_folder_path {!r} does not hold Market-1501-v15.09.15.".format(
            arguments.root_folder_path))
    configuration = configuration_flags(arguments.config)
    evaluations = [name for name in arguments.evaluations.split(",") if name]
    unknown = sorted(set(evaluations) - set(EVALUATIONS))
    if unknown:
        sys.exit("Unknown --evaluations {}; choose from {}.".format(unknown, sorted(EVALUATIONS)))
    output = arguments.output_folder_path or os.path.join(
        REPOSITORY_PATH, "output", "market1501_budget",
        "{}_{:g}min".format(configuration_name(arguments.config), arguments.minutes))
    if os.path.exists(output):
        sys.exit("{} exists; pass another --output_folder_path.".format(output))

    flag_values = dict(configuration)
    flag_values.update(root_folder_path=os.path.abspath(arguments.root_folder_path),
                       output_folder_path=output, time_budget_minutes=arguments.minutes)
    # What solution.py will run with: the extra flags win over the configuration's.
    defaults, effective = solution_flags(command_line(flag_values) + extra)
    os.makedirs(output)
    minutes = run_solution(flag_values, extra, arguments.cpus, os.path.join(output, "train.log"))
    run_folder = os.path.join(output, "Market1501_" + effective["backbone_model_name"])
    line = dict(result_line(run_folder, effective, defaults, minutes, extra),
                config=configuration_name(arguments.config))
    lines = [line]
    print(json.dumps(line), flush=True)

    for name in evaluations:
        evaluation_flags = dict(flag_values, **EVALUATIONS[name])
        evaluation_flags.update(
            evaluation_only=True, time_budget_minutes=0,
            pretrained_model_file_path=os.path.join(run_folder, "training_model.h5"),
            output_folder_path=os.path.join(output, "evaluation_" + name))
        # The evaluation's own flags come last, so they win over the same flags in `extra`.
        evaluation_minutes = run_solution(evaluation_flags,
                                          extra + command_line(EVALUATIONS[name]), arguments.cpus,
                                          os.path.join(output, "evaluation_{}.log".format(name)))
        with open(os.path.join(evaluation_flags["output_folder_path"],
                               "Market1501_" + effective["backbone_model_name"],
                               "test_metrics.json")) as file:
            metrics = json.load(file)
        evaluation_line = dict(
            config=configuration_name(arguments.config), evaluation=name,
            mAP=round(100 * metrics["mAP"], 2), **{"rank-1": round(100 * metrics["rank-1"], 2)},
            mINP=round(100 * metrics["mINP"], 2),
            evaluation_minutes=round(evaluation_minutes, 2))
        lines.append(evaluation_line)
        print(json.dumps(evaluation_line), flush=True)
    with open(os.path.join(output, "results.jsonl"), "w") as file:
        file.writelines(json.dumps(item) + "\n" for item in lines)
    # The budget run's line comes last: it is the one to compare against the table.
    print(json.dumps(line))


if __name__ == "__main__":
    main()
