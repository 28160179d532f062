"""The scripts/slurm/ jobs on a real single-node Slurm started on this machine
(tests/slurm_cluster.py): the tiny training run through train_single_node.sbatch, and a two-worker
run through train_multi_node.sbatch (both workers on this node, SlurmClusterResolver giving them
consecutive ports). Skipped, with the reason, only where Slurm and munge are not installed or
cannot start (Debian: apt-get install slurm-wlm munge, as .ci/run does)."""
import os
import socket
import sys

import pytest

from conftest import TINY_RUN_FLAGS, make_tiny_run_dataset
from slurm_cluster import SlurmCluster, SlurmUnavailable

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(REPOSITORY, "scripts", "slurm")
JOB_TIMEOUT = 300  # seconds; a tiny run takes about 40 s, two workers on 2 CPUs about a minute

# The end-to-end tiny run (conftest), as a flag file: the jobs take their recipe from FLAGFILE.
TINY_FLAGS = "".join("{}={}\n".format(name, value) for name, value in
                     zip(TINY_RUN_FLAGS[::2], TINY_RUN_FLAGS[1::2])) + "--epoch_num=2\n"
RUN_FILES = ("training_model.h5", "config.json", "test_metrics.json")
# This machine has no GPU gres and may have only 2 CPUs: the sbatch options the tests override.
SMALL_ALLOCATION = ("--gres=none", "--cpus-per-task=1", "--time=15")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slurm")
    try:
        slurm = SlurmCluster(folder).start()
    except SlurmUnavailable as error:
        print("Slurm test cluster unavailable: {}".format(error))
        pytest.skip("Slurm test cluster unavailable: {}".format(error))
    try:
        yield slurm
    finally:
        slurm.stop()


@pytest.fixture(scope="module")
def tiny_job_environment(tmp_path_factory):
    """FLAGFILE / DATASETS / PYTHON for the jobs: the tiny dataset and its flag file."""
    root = make_tiny_run_dataset(tmp_path_factory.mktemp("tiny_reid"))
    flag_file = tmp_path_factory.mktemp("flags") / "tiny.flags"
    flag_file.write_text(TINY_FLAGS)
    return {"FLAGFILE": str(flag_file), "DATASETS": root, "PYTHON": sys.executable,
            "NO_ALBUMENTATIONS_UPDATE": "1"}


def consecutive_free_ports(count=2):
    """A port p with p .. p+count-1 free (the workers of one node listen on consecutive ports)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                sockets.append(socket.socket())
                sockets[-1].bind(("", port))
            return base
        except OSError:
            continue
        finally:
            for probe in sockets:
                probe.close()
    raise RuntimeError("no {} consecutive free ports".format(count))


def run_job(cluster, script, log_folder, environment, sbatch_options, arguments):
    """Submits ``script`` from the repository root (its logs go to ``log_folder``), waits for it
    and checks it completed; returns (job fields, stdout log text)."""
    log_folder.mkdir(exist_ok=True)
    job_id = cluster.submit(os.path.join(SCRIPTS, script), *arguments, cwd=REPOSITORY,
                            environment=environment,
                            sbatch_options=["--chdir", str(log_folder), *sbatch_options])
    info = cluster.wait(job_id, JOB_TIMEOUT)
    logs = {}
    for suffix in ("out", "err"):
        path = log_folder / "{}-{}.{}".format(info["JobName"], job_id, suffix)
        assert path.is_file(), "job {} left no {} (log folder: {})".format(
            job_id, path.name, sorted(os.listdir(log_folder)))
        logs[suffix] = path.read_text(errors="replace")
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), (
        "job {} ended {} with exit code {}.\n--- stdout ---\n{}\n--- stderr ---\n{}".format(
            job_id, info["JobState"], info["ExitCode"], logs["out"][-3000:],
            logs["err"][-6000:]))
    return info, logs["out"]


def check_run_folder(output):
    run_folder = output / "Folder_MobileNetV3Small"
    for name in RUN_FILES:
        assert (run_folder / name).is_file(), "{} missing from {}: {}".format(
            name, run_folder, sorted(os.listdir(run_folder)) if run_folder.is_dir() else None)


def test_single_node_training_job(cluster, tiny_job_environment, tmp_path):
    output = tmp_path / "output"
    environment = dict(tiny_job_environment, OUTPUT=str(output))
    info, log = run_job(cluster, "train_single_node.sbatch", tmp_path / "logs", environment,
                        SMALL_ALLOCATION, ["--distribution_strategy=default"])
    assert info["JobName"] == "reid-train" and info["NumNodes"] == "1"
    assert log.count("Using command") == 1 and "--resume" in log and "All done!" in log
    check_run_folder(output)


@pytest.mark.slow
def test_two_worker_training_job(cluster, tiny_job_environment, tmp_path):
    output = tmp_path / "output"
    environment = dict(tiny_job_environment, OUTPUT=str(output),
                       PORT_BASE=str(consecutive_free_ports(2)))
    # Both tasks on this one node: the script's one task per node becomes two.
    info, log = run_job(cluster, "train_multi_node.sbatch", tmp_path / "logs", environment,
                        ["--nodes=1", "--ntasks=2", "--ntasks-per-node=2", *SMALL_ALLOCATION],
                        [])
    assert info["JobName"] == "reid-train-multi" and info["NumTasks"] == "2"
    assert log.count("Using command") == 2, "expected a solution.py per task:\n" + log[-3000:]
    assert "--distribution_strategy=multi_worker" in log
    check_run_folder(output)
