"""Multi-worker training for real: two solution.py processes on localhost (TF_CONFIG, loopback
ports) against one process with the same global batch; a worker killed mid-run; a restart of
every worker with --resume."""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import TINY_RUN_FLAGS, make_config, make_tiny_run_dataset

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Sync BN and the gathered triplet make the two-worker step the one-process step; what is left
# is float round-off (all-reduce order, BN moments from summed moments) compounded by Adam over
# four steps: measured 1e-4 relative after the second epoch.
RELATIVE_TOLERANCE = 2e-3
DEATH_NOTICE_SECONDS = 120  # MWMS's health check gives up on a silent peer within ~70 s


# ------------------------------------------------------------------------------ the pieces
def test_learning_rate_scaling_rule():
    from training.distribution import learning_rate_factor
    from training.trainer import Trainer
    assert learning_rate_factor("none", 256, 64) == 1.0
    assert learning_rate_factor("linear", 256, 64) == 4.0
    assert learning_rate_factor("sqrt", 256, 64) == 2.0
    trainer = Trainer(make_config(learning_rate_scaling="linear", identity_num_per_batch=32,
                                  image_num_per_identity=4, epoch_num=100))
    for epoch in (0, 5, 50):
        assert trainer.learning_rate(epoch) == pytest.approx(2 * trainer.schedule(epoch))


def test_replicas_get_whole_identities():
    from training.config import OptionError
    from training.distribution import check_replica_split, replica_rows
    assert check_replica_split(16, 4) == 4
    with pytest.raises(OptionError, match="--identity_num_per_batch 6 .* multiple of 4"):
        check_replica_split(6, 4)
    batch = np.repeat(np.arange(4), 2)  # P=4 identities x K=2, identities consecutive
    shares = [batch[replica_rows(8, 2, replica)] for replica in range(2)]
    assert [list(share) for share in shares] == [[0, 0, 1, 1], [2, 2, 3, 3]]


def test_gathered_triplet_equals_the_whole_batch_loss():
    from losses.triplet import batch_hard_triplet_loss
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 2).astype("int32")
    embeddings = rng.normal(size=(8, 5)).astype("float32")
    whole = batch_hard_triplet_loss(labels, embeddings, margin=0.3).numpy()
    for start in (0, 4):
        share = batch_hard_triplet_loss(labels[start:start + 4], embeddings[start:start + 4],
                                        margin=0.3, batch=(labels, embeddings, start)).numpy()
        np.testing.assert_allclose(share, whole[start:start + 4], rtol=1e-6)
    # Mined in its own half only, the share differs (its negatives are fewer).
    own = batch_hard_triplet_loss(labels[:4], embeddings[:4], margin=0.3).numpy()
    assert not np.allclose(own, whole[:4])


def test_cluster_comes_from_tf_config_or_slurm(monkeypatch):
    from types import SimpleNamespace
    from training.config import OptionError
    from training.distribution import WorkerRole, cluster_resolver
    for name in ("TF_CONFIG", "SLURM_PROCID", "SLURM_STEP_NODELIST"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(OptionError, match="TF_CONFIG.*srun"):
        cluster_resolver()
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi: no GPUs to hand out
    for name, value in (("SLURM_PROCID", "1"), ("SLURM_STEP_NODELIST", "node[1-2]"),
                        ("SLURM_STEP_TASKS_PER_NODE", "1(x2)"), ("SLURM_STEP_NUM_TASKS", "2")):
        monkeypatch.setenv(name, value)
    resolver = cluster_resolver(port_base=9000)
    assert resolver.cluster_spec().as_dict() == {"worker": ["node1:9000", "node2:9000"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 1)
    role = WorkerRole.of(SimpleNamespace(cluster_resolver=resolver, num_replicas_in_sync=2))
    assert (role.worker_index, role.num_workers, role.is_chief) == (1, 2, False)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2"]},
                                                "task": {"type": "chief", "index": 0}}))
    resolver = cluster_resolver()
    role = WorkerRole.of(SimpleNamespace(cluster_resolver=resolver, num_replicas_in_sync=2))
    assert (role.worker_index, role.num_workers, role.is_chief) == (0, 2, True)


def test_multi_worker_refuses_what_it_cannot_do():
    from training.config import OptionError
    with pytest.raises(OptionError, match="--time_budget_minutes"):
        make_config(distribution_strategy="multi_worker", time_budget_minutes=60)
    with pytest.raises(OptionError, match="--evaluation_only"):
        make_config(distribution_strategy="multi_worker", evaluation_only=True,
                    pretrained_model_file_path=__file__)


def test_training_input_splits_each_batch_into_replica_elements(tmp_path):
    from PIL import Image
    from pipeline.training_input import make_training_dataset
    paths = []
    for index in range(8):
        path = str(tmp_path / "{}.png".format(index))
        Image.fromarray(np.full((8, 4, 3), index * 10, np.uint8)).save(path)
        paths.append(path)
    labels = np.arange(8) // 2
    batches = [np.arange(8), np.arange(8)[::-1]]
    dataset = make_training_dataset(paths, labels, batches, 8, 4, workers=1, seed=0,
                                    batch_slices=[slice(0, 4), slice(4, 8)])
    elements = [(images.numpy()[:, 0, 0, 0] / 10, element_labels.numpy())
                for images, element_labels in dataset]
    assert [list(rows) for rows, _ in elements] == [[0, 1, 2, 3], [4, 5, 6, 7],
                                                    [7, 6, 5, 4], [3, 2, 1, 0]]
    assert [list(element_labels) for _, element_labels in elements] == [
        [0, 0, 1, 1], [2, 2, 3, 3], [3, 3, 2, 2], [1, 1, 0, 0]]


# ----------------------------------------------------------------------- two real workers
@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return make_tiny_run_dataset(tmp_path_factory.mktemp("tiny_reid"))


def command(root, output, *extra):
    """The end-to-end tiny run, one branch, flip inside, no augmentation, no evaluation."""
    return [sys.executable, os.path.join(REPOSITORY, "solution.py"), *TINY_RUN_FLAGS,
            "--root_folder_path", root, "--output_folder_path", str(output),
            "--region_num", "0", "--evaluate_testing_every_N_epochs", "0",
            "--use_horizontal_flipping_inside_model", "--nouse_data_augmentation_in_training",
            "--batch_normalization_momentum", "0.5", "--deterministic", *extra]


def environment(**extra):
    return dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", **extra)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("localhost", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start_workers(root, output, *extra):
    """Two workers of one multi-worker run; their output is merged into one text stream each."""
    cluster = {"worker": ["localhost:{}".format(port) for port in free_ports(2)]}
    return [subprocess.Popen(
        command(root, output, "--distribution_strategy", "multi_worker", *extra),
        cwd=REPOSITORY, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, env=environment(TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}})))
        for index in range(2)]


def finish(process, timeout=600):
    try:
        return process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise


def history(run_folder):
    with open(os.path.join(run_folder, "training_B", "history.csv")) as file:
        return list(csv.DictReader(file))


LOSS_COLUMNS = ("loss", "global_embedding_loss", "global_softmax_loss", "flipping")


@pytest.fixture(scope="module")
def two_worker_run(tiny_root, tmp_path_factory):
    output = tmp_path_factory.mktemp("two_workers")
    workers = start_workers(tiny_root, output, "--epoch_num", "2", "--sync_batch_normalization",
                            "--gather_embeddings_across_replicas")
    logs = [finish(worker) for worker in workers]
    for index, (worker, log) in enumerate(zip(workers, logs)):
        assert worker.returncode == 0, "worker {} failed:\n{}".format(index, log[-5000:])
    return output / "Folder_MobileNetV3Small", logs


@pytest.mark.slow
def test_two_workers_train_like_one_process(tiny_root, tmp_path, two_worker_run):
    run_folder, logs = two_worker_run
    assert "2 replicas on 2 worker(s); this is worker 0 (the chief)" in logs[0]
    assert "this is worker 1." in logs[1]
    for name in ("training_model.h5", "config.json", "training_batch.png",
                 "training_B/history.csv"):
        assert (run_folder / name).is_file(), name
    assert not any(name.startswith("reid_worker") for name in os.listdir(run_folder))

    single = subprocess.run(command(tiny_root, tmp_path, "--epoch_num", "2"), cwd=REPOSITORY,
                            capture_output=True, text=True, timeout=600, env=environment())
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr[-3000:]
    expected = history(tmp_path / "Folder_MobileNetV3Small")
    measured = history(run_folder)
    assert len(measured) == len(expected) == 2
    for want, got in zip(expected, measured):
        for column in LOSS_COLUMNS:
            np.testing.assert_allclose(float(got[column]), float(want[column]),
                                       rtol=RELATIVE_TOLERANCE, err_msg=column)


@pytest.mark.slow
def test_dead_worker_fails_the_run_and_every_worker_resumes(tiny_root, two_worker_run):
    run_folder, _ = two_worker_run
    # Restart both workers on the finished two-epoch run with a longer schedule; kill worker 1
    # once the chief has trained a resumed epoch.
    workers = start_workers(tiny_root, run_folder.parent, "--resume", "--epoch_num", "100")
    chief_lines = []
    for line in workers[0].stdout:
        chief_lines.append(line)
        if " - loss: " in line:
            break
    else:
        finish(workers[1], timeout=60)
        pytest.fail("the chief stopped before training:\n" + "".join(chief_lines)[-5000:])
    os.killpg(workers[1].pid, signal.SIGKILL)
    workers[1].wait()
    killed = time.time()
    chief_log = "".join(chief_lines) + finish(workers[0], timeout=DEATH_NOTICE_SECONDS)
    noticed = time.time() - killed
    assert workers[0].returncode not in (0, None)
    assert "Resuming stage 1 at epoch 3" in chief_log
    assert "lost contact with the others" in chief_log and "--resume" in chief_log
    assert noticed < DEATH_NOTICE_SECONDS
    # The resumed epochs were appended to the two of the first run; the state is kept.
    epochs = [int(row["epoch"]) for row in history(run_folder)]
    assert epochs[:3] == [1, 2, 3]
    assert (run_folder / "resume" / "checkpoint").is_file()
