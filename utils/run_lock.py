"""A lock a training or evaluation process holds on its run folder, so that two processes never
write the same checkpoints and logs.

The lock is the file ``<folder>/run.lock``, a JSON record of its holder. A lock left behind by a
process that is gone is taken over with a warning: on the same host when the holder's pid no
longer exists or now belongs to a process with another start time (pid reuse), or when the lock
was written by the same Slurm job (a requeued job, possibly on another host) and its holder is
not alive on this host. A lock held by a live process, or by a process on another host whose
liveness cannot be checked from here, raises ``RunFolderLockedError``.
"""
import datetime
import errno
import json
import os
import socket
import sys
import threading
import time
import uuid
import warnings

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_FILE_NAME = "run.lock"
_ATTEMPTS = 20
# POSIX record locks belong to a process, so threads of one process are serialised here.
_TAKEOVER_MUTEX = threading.Lock()


class RunFolderLockedError(ValueError):
    """The run folder is locked by another process that may still be running."""


class StaleRunLockWarning(UserWarning):
    """A lock left behind by a process that is gone was taken over."""


def process_start_time(pid):
    """Start time of process ``pid`` in clock ticks after boot (from /proc), or None if unknown."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as file:
            stat = file.read().decode("ascii", "replace")
        # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _holder_is_alive(record):
    """Whether the process of ``record`` (on this host) still runs; True when it cannot be told."""
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        return True
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    except (OSError, OverflowError, ValueError):
        return True
    recorded = record.get("process_start_time")
    current = process_start_time(record["pid"])
    return recorded is None or current is None or recorded == current


def _parse(data):
    """The lock record in ``data`` (bytes), or None when it is empty or corrupt."""
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if (not isinstance(record, dict) or type(record.get("pid")) is not int or record["pid"] <= 0
            or not isinstance(record.get("host"), str)):
        return None
    return record


def _describe(record):
    started = record.get("started") or "an unknown time"
    command = record.get("command")
    command = " ".join(map(str, command)) if isinstance(command, list) else "unknown"
    return (f"process {record['pid']} on host {record['host']} (started {started}, "
            f"command: {command})")


def _read_all(descriptor):
    chunks = []
    while True:
        chunk = os.read(descriptor, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _fsync_folder(folder):
    """Make a creation or rename in ``folder`` durable (best effort: not every OS allows it)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _write_new_file(path, data):
    """Creates ``path`` (FileExistsError if it exists) holding ``data``, synced to disk."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(descriptor, data)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class RunLock:
    """Exclusive lock on a run folder: ``with RunLock(folder): ...`` or ``acquire()``/``release()``.

    ``release()`` is idempotent and removes the lock file only while it still holds this lock's
    record, so it is safe in a ``finally`` (also in a forked child, where it does nothing).
    """

    def __init__(self, folder):
        self.folder = os.path.abspath(os.fspath(folder))
        self.path = os.path.join(self.folder, LOCK_FILE_NAME)
        self._data = None  # our record as written, while held
        self._owner_pid = None

    @property
    def held(self):
        return self._data is not None and self._owner_pid == os.getpid()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()

    def __repr__(self):
        return f"RunLock({self.folder!r}, held={self.held})"

    def acquire(self):
        """Take the lock or raise ``RunFolderLockedError``; returns self."""
        if self.held:
            raise RuntimeError(f"{self!r} is already held by this process.")
        os.makedirs(self.folder, exist_ok=True)
        data = self._new_record()
        for _ in range(_ATTEMPTS):
            if self._create(data):
                return self._held_with(data)
            existing = self._read()
            if existing is not None and _parse(existing) is None:
                # Only a writer without hard links (see _create) leaves a half-written file for
                # a moment; one still unreadable a little later is corrupt.
                time.sleep(0.1)
                if self._read() != existing:
                    continue
            if existing is None:
                continue  # released meanwhile: try to create it again
            reason = self._stale_reason(_parse(existing))
            if self._take_over(existing, data):
                warnings.warn(reason, StaleRunLockWarning, stacklevel=2)
                return self._held_with(data)
            # It changed under us (released or taken over by another process): look again.
        raise RunFolderLockedError(
            f"Could not lock the run folder {self.folder}: its lock file {self.path} kept changing "
            f"({_ATTEMPTS} attempts); several processes are starting on this folder. Run one only.")

    def release(self):
        """Remove the lock file if it still holds our record; does nothing otherwise."""
        data, owner_pid = self._data, self._owner_pid
        self._data = self._owner_pid = None
        if data is None or owner_pid != os.getpid():
            return
        try:
            with open(self.path, "rb") as file:
                if file.read() != data:
                    return  # not ours any more (taken over): leave the new holder's lock alone
            os.remove(self.path)
        except FileNotFoundError:
            pass

    def _read(self):
        try:
            with open(self.path, "rb") as file:
                return file.read()
        except FileNotFoundError:
            return None

    def _held_with(self, data):
        self._data, self._owner_pid = data, os.getpid()
        return self

    def _new_record(self):
        pid = os.getpid()
        record = {
            "pid": pid,
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": list(sys.argv),
            "process_start_time": process_start_time(pid),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            # Makes every record unique, so release and take-over compare whole records.
            "token": uuid.uuid4().hex,
        }
        return (json.dumps(record, indent=1) + "\n").encode("utf-8")

    def _write_temporary(self, data):
        temporary = os.path.join(self.folder,
                                 f".{LOCK_FILE_NAME}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        _write_new_file(temporary, data)
        return temporary

    def _create(self, data):
        """Create the lock file holding ``data`` if it does not exist; False if it does."""
        # A complete temporary file is hard-linked to the lock name: linking fails if the name
        # exists, like O_EXCL, and a reader never sees a half-written lock that looks corrupt.
        temporary = self._write_temporary(data)
        try:
            os.link(temporary, self.path)
        except FileExistsError:
            return False
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS,
                                   errno.EMLINK, errno.EXDEV):
                raise
            return self._create_exclusive(data)  # the file system has no hard links
        finally:
            os.remove(temporary)
        _fsync_folder(self.folder)
        return True

    def _create_exclusive(self, data):
        try:
            _write_new_file(self.path, data)
        except FileExistsError:
            return False
        return True

    def _stale_reason(self, record):
        """The warning for taking over ``record``; raises RunFolderLockedError if not stale."""
        if record is None:
            return (f"Unreadable lock file {self.path} (empty or corrupt, e.g. written by a "
                    f"process that crashed) taken over.")
        host = socket.gethostname()
        same_host = record["host"] == host
        job = os.environ.get("SLURM_JOB_ID")
        if same_host and not _holder_is_alive(record):
            return (f"Run folder {self.folder}: stale lock of process {record['pid']} on "
                    f"{record['host']} taken over (that process is gone).")
        # A live holder on this host with our job id is another task of the same job, not a
        # requeued one: only a gone holder or one on another host is taken over.
        if job and record.get("slurm_job_id") == job and not same_host:
            return (f"Run folder {self.folder}: stale lock of process {record['pid']} on "
                    f"{record['host']} taken over (same Slurm job {job}, requeued).")
        if not same_host:
            where = f"runs on another host, so whether it is alive cannot be checked from {host}"
        elif record["pid"] == os.getpid():
            where = "is this process (another RunLock on the same folder is held)"
        else:
            where = "is still running"
        raise RunFolderLockedError(
            f"Run folder {self.folder} is locked by {_describe(record)}, which {where}. Two "
            f"processes writing one run folder would corrupt its checkpoints and logs. Wait for "
            f"that run to finish or stop it, or use another run folder. If that process is "
            f"certainly gone (e.g. its machine crashed), delete the lock file {self.path} and "
            f"start again.")

    def _take_over(self, stale, data):
        """Replace the lock file by ``data`` if it still holds ``stale``; False if it changed.

        Take-overs of one lock file are serialised by a POSIX lock on that file, and each one
        replaces it only after checking, under that lock, that the path still names the file
        holding ``stale``; so of several processes taking over the same stale lock one wins, and
        the others see its new record. The lock file always exists meanwhile, so a process
        creating it afresh cannot slip in either.
        """
        with _TAKEOVER_MUTEX:
            try:
                try:
                    descriptor = os.open(self.path, os.O_RDWR)
                except PermissionError:  # another user's file: replacing it needs the folder only
                    descriptor = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return False
            try:
                if fcntl is not None:
                    try:
                        fcntl.lockf(descriptor, fcntl.LOCK_EX)
                    except OSError:
                        pass  # no record locks on this file system: best effort
                try:
                    if os.stat(self.path).st_ino != os.fstat(descriptor).st_ino:
                        return False
                except FileNotFoundError:
                    return False
                if _read_all(descriptor) != stale:
                    return False
                temporary = self._write_temporary(data)
                try:
                    os.replace(temporary, self.path)
                except BaseException:
                    os.remove(temporary)
                    raise
                _fsync_folder(self.folder)
                return True
            finally:
                os.close(descriptor)  # also drops the POSIX lock
