"""Which thread settings train fastest on this CPU: one short solution.py run per setting.

    python benchmarks/thread_speed.py [--flagfile configs/quick_start.flags]
        [--root_folder_path data] [--epochs 3] [--steps 30] [--rounds 1]
        [--settings "default; opencv_threads=0; inter_op_threads=1; workers=1,opencv_threads=0"]

Each setting (``;``-separated; each a ``,``-separated list of solution.py flags ``name=value``
and environment variables ``NAME=value`` (upper case, e.g. ``TF_ENABLE_ONEDNN_OPTS=0``), or
``default``) trains the recipe for ``--epochs`` x ``--steps`` with no evaluation, in its own
process (TensorFlow's pools are fixed when its runtime starts). Reported: train images/s (median
of the epochs after the first, which traces the graph), the process's user and system CPU
seconds and the system share, which grows when threads outnumber the cores and spin or switch.
Rounds alternate the settings, so a machine whose speed drifts affects all alike. Prints one
markdown table; the CPU model heads it, since the best setting differs between CPU makes.
"""
import argparse
import csv
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPOSITORY_PATH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPOSITORY_PATH)
from utils.machine import cpu_description  # noqa: E402  (no TensorFlow)
DEFAULT_SETTINGS = ("default; TF_ENABLE_ONEDNN_OPTS=0; opencv_threads=0; inter_op_threads=1; "
                    "intra_op_threads=1; workers=1; workers=1,opencv_threads=0; "
                    "workers=1,opencv_threads=0,inter_op_threads=1")


def parse_settings(text):
    """``"default; a=1,B=2"`` -> ``[("default", [], {}), ("a=1, B=2", ["--a=1"], {"B": "2"})]``:
    lower-case names are solution.py flags, upper-case ones environment variables."""
    settings = []
    for item in text.split(";"):
        item = item.strip()
        if not item:
            continue
        if item == "default":
            settings.append(("default", [], {}))
            continue
        pairs = [pair.strip() for pair in item.split(",") if pair.strip()]
        flags, environment = [], {}
        for pair in pairs:
            if "=" not in pair:
                raise SystemExit("--settings: {!r} is not name=value.".format(pair))
            name, value = pair.split("=", 1)
            if name.isupper():
                environment[name] = value
            else:
                flags.append("--" + pair)
        settings.append((", ".join(pairs), flags, environment))
    return settings


def run_once(arguments, flags, environment, output_folder):
    """(images/s of the epochs after the first, user CPU s, system CPU s, wall s)."""
    command = [sys.executable, os.path.join(REPOSITORY_PATH, "solution.py"),
               "--flagfile", arguments.flagfile, "--root_folder_path", arguments.root_folder_path,
               "--output_folder_path", output_folder, "--epoch_num", str(arguments.epochs),
               "--steps_per_epoch", str(arguments.steps), "--testing_size", "0",
               "--evaluate_testing_every_N_epochs", str(arguments.epochs + 1),
               "--time_budget_minutes", "0"] + flags
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    process = subprocess.run(command, cwd=REPOSITORY_PATH, capture_output=True, text=True,
                             env=dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", **environment))
    wall = time.time() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode:
        raise SystemExit("solution.py failed with {}:\n{}".format(
            " ".join(flags) or "the default settings", process.stderr[-3000:]))
    histories = [os.path.join(root, name) for root, _, names in os.walk(output_folder)
                 for name in names if name == "history.csv"]
    with open(histories[0]) as file:
        speeds = [float(row["train_images_per_second"]) for row in csv.DictReader(file)]
    speeds = speeds[1:] or speeds
    return (statistics.median(speeds), after.ru_utime - before.ru_utime,
            after.ru_stime - before.ru_stime, wall)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flagfile", default=os.path.join(REPOSITORY_PATH, "configs",
                                                           "quick_start.flags"))
    parser.add_argument("--root_folder_path", default=os.path.join(REPOSITORY_PATH, "data"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--settings", default=DEFAULT_SETTINGS)
    arguments = parser.parse_args()
    if arguments.epochs < 2:
        parser.error("--epochs must be at least 2 (the first traces the graph).")
    settings = parse_settings(arguments.settings)
    results = {name: [] for name, _, _ in settings}
    with tempfile.TemporaryDirectory() as folder:
        for round_index in range(arguments.rounds):
            for index, (name, flags, environment) in enumerate(settings):
                output = os.path.join(folder, "r{}_s{}".format(round_index, index))
                results[name].append(run_once(arguments, flags, environment, output))
                print("round {} | {}: {:.0f} images/s".format(
                    round_index + 1, name, results[name][-1][0]), file=sys.stderr, flush=True)
    print("{} ({} cores), {}, {} epochs x {} steps, {} round(s)\n".format(
        cpu_description(), os.cpu_count(), os.path.basename(arguments.flagfile), arguments.epochs,
        arguments.steps, arguments.rounds))
    print("| setting | train images/s (median over rounds) | user CPU s | system CPU s | "
          "system share | wall s |")
    print("|---|---|---|---|---|---|")
    for name, _, _ in settings:
        speed, user, system, wall = (statistics.median(column) for column in zip(*results[name]))
        print("| {} | {:.0f} | {:.0f} | {:.0f} | {:.0%} | {:.0f} |".format(
            name, speed, user, system, system / max(user + system, 1e-9), wall))


if __name__ == "__main__":
    main()
