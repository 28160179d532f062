"""Run-folder lock: refusal while the holder lives, take-over of stale locks, safe release."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from utils.run_lock import (LOCK_FILE_NAME, RunFolderLockedError, RunLock, StaleRunLockWarning,
                            process_start_time)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Locks the folder argv[1], says so, waits for "go" on stdin if argv[2] == "race" (then reports
# whether it won), and holds the lock until stdin closes or it is killed.
HOLDER = textwrap.dedent("""
    import sys, warnings
    sys.path.insert(0, {root!r})
    from utils.run_lock import RunLock, RunFolderLockedError
    warnings.simplefilter("ignore")
    lock = RunLock(sys.argv[1])
    if sys.argv[2] == "race":
        print("ready", flush=True)
        sys.stdin.readline()
        try:
            lock.acquire()
            print("won", flush=True)
        except RunFolderLockedError:
            print("refused", flush=True)
            sys.exit()
    else:
        lock.acquire()
        print("locked", flush=True)
    sys.stdin.read()
""").format(root=REPO_ROOT)


def start_holder(folder, mode="hold"):
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), mode],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(folder, **fields):
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": "2024-01-01T00:00:00",
              "command": ["train.py"], "process_start_time": None, "slurm_job_id": None}
    record.update(fields)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_FILE_NAME)
    with open(path, "w") as file:
        json.dump(record, file)
    return path


def read_lock(folder):
    with open(os.path.join(folder, LOCK_FILE_NAME)) as file:
        return json.load(file)


def test_live_holder_refuses_then_dead_holder_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    holder = start_holder(folder)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderLockedError) as refused:
            RunLock(folder).acquire()
        message = str(refused.value)
        for expected in (f"process {holder.pid} ", socket.gethostname(), str(folder), "started",
                         "Wait for that run", os.path.join(str(folder), LOCK_FILE_NAME)):
            assert expected in message
        assert read_lock(folder)["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()
        holder.stdin.close()
        holder.stdout.close()
    lock = RunLock(folder)
    with pytest.warns(StaleRunLockWarning, match=f"stale lock of process {holder.pid} on "):
        lock.acquire()
    assert lock.held and read_lock(folder)["pid"] == os.getpid()
    lock.release()
    assert not os.path.exists(lock.path)


def test_record_contents_and_folder_creation(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    with RunLock(tmp_path / "new" / "run") as lock:
        record = read_lock(lock.folder)
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert record["command"] == sys.argv and record["slurm_job_id"] == "777"
    assert record["process_start_time"] == process_start_time(os.getpid())
    assert "T" in record["started"]
    assert os.listdir(lock.folder) == []  # released, no temporary files left


def test_same_process_cannot_lock_twice(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunFolderLockedError, match="is this process"):
            RunLock(tmp_path).acquire()


def test_live_pid_on_another_host_is_refused(tmp_path):
    write_lock(tmp_path, host="other-node-7")
    with pytest.raises(RunFolderLockedError, match="other-node-7") as refused:
        RunLock(tmp_path).acquire()
    assert f"process {os.getpid()} " in str(refused.value)
    assert "delete the lock file" in str(refused.value)
    # Another host's lock is refused even when its pid does not exist here.
    write_lock(tmp_path, host="other-node-7", pid=dead_pid())
    with pytest.raises(RunFolderLockedError, match="cannot be checked"):
        RunLock(tmp_path).acquire()


def test_reused_pid_is_stale(tmp_path):
    # Our own pid, alive, but recorded with another process start time: the pid was reused.
    write_lock(tmp_path, process_start_time=process_start_time(os.getpid()) - 1)
    with pytest.warns(StaleRunLockWarning, match=f"process {os.getpid()} "):
        RunLock(tmp_path).acquire().release()


def test_same_slurm_job_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    write_lock(tmp_path, host="other-node-7", slurm_job_id="4242")
    with pytest.warns(StaleRunLockWarning, match="Slurm job 4242"):
        lock = RunLock(tmp_path).acquire()
    assert read_lock(tmp_path)["slurm_job_id"] == "4242"
    lock.release()
    # Another job's lock, or a live process of this job on this host (another task), is kept.
    write_lock(tmp_path, host="other-node-7", slurm_job_id="99")
    with pytest.raises(RunFolderLockedError):
        RunLock(tmp_path).acquire()
    write_lock(tmp_path, slurm_job_id="4242")
    with pytest.raises(RunFolderLockedError, match="is this process"):
        RunLock(tmp_path).acquire()


@pytest.mark.parametrize("content", [b"", b'{"pid": 12', b"\xff\xfe garbage", b'{"pid": "x"}'])
def test_corrupt_lock_is_taken_over(tmp_path, content):
    (tmp_path / LOCK_FILE_NAME).write_bytes(content)
    with pytest.warns(StaleRunLockWarning, match="Unreadable lock file"):
        lock = RunLock(tmp_path).acquire()
    assert read_lock(tmp_path)["pid"] == os.getpid()
    lock.release()


def test_release_removes_only_its_own_lock(tmp_path):
    lock = RunLock(tmp_path).acquire()
    other = write_lock(tmp_path, host="other-node-7")  # e.g. taken over meanwhile
    lock.release()
    assert read_lock(tmp_path)["host"] == "other-node-7"
    lock.release()  # idempotent
    os.remove(other)
    lock = RunLock(tmp_path).acquire()
    lock.release()
    lock.release()
    assert not os.path.exists(lock.path)
    RunLock(tmp_path).release()  # never acquired: nothing to do


def test_context_manager_releases_on_exception(tmp_path):
    with pytest.raises(KeyError):
        with RunLock(tmp_path) as lock:
            assert os.path.exists(lock.path)
            raise KeyError("boom")
    assert not os.path.exists(lock.path) and not lock.held
    with RunLock(tmp_path):  # free again
        pass


def test_concurrent_take_overs_of_one_stale_lock_have_one_winner(tmp_path):
    write_lock(tmp_path, pid=dead_pid())
    racers = [start_holder(tmp_path, "race") for _ in range(4)]
    try:
        for racer in racers:
            assert racer.stdout.readline().strip() == "ready"
        for racer in racers:
            racer.stdin.write("go\n")
            racer.stdin.flush()
        results = [racer.stdout.readline().strip() for racer in racers]
        assert sorted(results) == ["refused"] * 3 + ["won"], results
        winner = racers[results.index("won")]
        assert read_lock(tmp_path)["pid"] == winner.pid
    finally:
        for racer in racers:
            racer.kill()
            racer.wait()
            racer.stdin.close()
            racer.stdout.close()
