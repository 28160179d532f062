"""A throw-away single-node Slurm cluster on this machine, for tests.

``SlurmCluster(folder).start()`` writes a slurm.conf for this host into ``folder``, makes a munge
key there, runs munged, slurmctld and slurmd in the foreground as child processes (no systemd,
no /etc changes: every socket, state and log file lives in ``folder``) and waits until ``sinfo``
shows the node idle; ``stop()`` ends them. Commands talk to it through ``cluster.environment()``
(``SLURM_CONF`` and a clean environment), which jobs inherit.

Anything that keeps it from starting (binaries missing, a daemon that exits, a node that never
turns idle) raises `SlurmUnavailable` with the reason and the daemons' last log lines, so a test
can skip with it. The configuration needs neither cgroups nor accounting: process tracking by
/proc, no task plugin, CPUs as the only consumable.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "sinfo", "scontrol", "scancel", "squeue", "srun")
MAX_FOLDER_LENGTH = 60
TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
                   "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


class SlurmUnavailable(RuntimeError):
    """Slurm or munge is missing or did not come up; the message says why."""


def find_binaries():
    """{name: path} of the daemons and client commands, or `SlurmUnavailable` naming the
    missing ones (daemons live in /usr/sbin, which a non-root PATH may lack)."""
    search_path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    found = {name: shutil.which(name, path=search_path) for name in DAEMONS + CLIENTS}
    missing = sorted(name for name, path in found.items() if path is None)
    if missing:
        raise SlurmUnavailable("not installed: {} (Debian: apt-get install slurm-wlm munge)"
                               .format(", ".join(missing)))
    return found


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def clean_environment(extra=None):
    """os.environ without the caller's own Slurm variables (a test run inside a Slurm job must
    not hand its job's SLURM_* / SBATCH_* settings to the jobs it submits) nor a TF_CONFIG (it
    would stand in for the Slurm step's cluster), plus ``extra``."""
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))
                   and name != "TF_CONFIG"}
    environment.update(extra or {})
    return environment


class SlurmCluster:
    """One node (this machine) in one partition; see the module docstring."""

    def __init__(self, folder, start_timeout=60):
        self.folder = os.path.abspath(os.fspath(folder))
        self.short_folder = None
        if len(self.folder) > MAX_FOLDER_LENGTH:
            # munged's and slurmstepd's Unix sockets live below it (paths of at most 107 bytes).
            self.folder = self.short_folder = tempfile.mkdtemp(prefix="slurm-", dir="/tmp")
        self.start_timeout = start_timeout
        self.binaries = None
        self.node_name = socket.gethostname().split(".")[0]  # `hostname -s`, what slurmd expects
        self.partition = "debug"
        self.processes = {}
        self.log_files = {}
        self.conf_path = os.path.join(self.folder, "slurm.conf")
        self.munge_socket = os.path.join(self.folder, "munge", "munge.socket")

    # ----------------------------------------------------------------------------- set-up
    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def environment(self, extra=None):
        """Environment for Slurm commands (and the jobs they submit) of this cluster."""
        return clean_environment(dict({"SLURM_CONF": self.conf_path}, **(extra or {})))

    def start(self):
        """Starts the daemons and waits for an idle node; `SlurmUnavailable` if it cannot."""
        self.binaries = find_binaries()
        if os.name != "posix" or os.geteuid() != 0:
            # slurmd must run jobs as their submitter; without root it cannot (SlurmdUser=root).
            raise SlurmUnavailable("the test cluster's slurmd needs root (running as uid {})"
                                   .format(os.geteuid()))
        os.makedirs(self.folder, exist_ok=True)
        try:
            self._write_munge_key()
            self._start_daemon("munged", [
                self.binaries["munged"], "--foreground", "--force",
                "--key-file", self.munge_key, "--socket", self.munge_socket,
                "--pid-file", os.path.join(self.folder, "munge", "munged.pid"),
                "--seed-file", os.path.join(self.folder, "munge", "munged.seed"),
                "--log-file", os.path.join(self.folder, "munge", "munged.log")])
            self._wait_for(lambda: os.path.exists(self.munge_socket), "munged's socket")
            self._write_conf()
            self._start_daemon("slurmctld", [self.binaries["slurmctld"], "-D", "-f",
                                             self.conf_path])
            self._wait_for(self._controller_answers, "slurmctld to answer")
            self._start_daemon("slurmd", [self.binaries["slurmd"], "-D", "-f", self.conf_path,
                                          "-N", self.node_name])
            self._wait_for(self._node_idle, "node {} to be idle in sinfo".format(self.node_name))
        except BaseException:
            self.stop()
            raise
        return self

    def _write_munge_key(self):
        """A fresh key for this cluster only: private to its user, in a folder only it may write
        (and everyone may traverse, to reach munged's socket)."""
        os.makedirs(os.path.join(self.folder, "munge"), exist_ok=True)
        os.chmod(os.path.join(self.folder, "munge"), 0o755)
        self.munge_key = os.path.join(self.folder, "munge", "munge.key")
        if not os.path.exists(self.munge_key):
            descriptor = os.open(self.munge_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(descriptor, "wb") as file:
                file.write(os.urandom(1024))

    def _node_resources(self):
        """CPUs and RealMemory as slurmd detects them (`slurmd -C`): a node declared larger
        than the machine would be drained as invalid."""
        resources = {"CPUs": str(os.cpu_count() or 1), "RealMemory": "1000"}
        try:
            detected = subprocess.run([self.binaries["slurmd"], "-C"], capture_output=True,
                                      text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return resources
        for key in resources:
            match = re.search(r"\b{}=(\d+)".format(key), detected)
            if match:
                resources[key] = match.group(1)
        return resources

    def _write_conf(self):
        for name in ("state", "spool", "log"):
            os.makedirs(os.path.join(self.folder, name), exist_ok=True)
        resources = self._node_resources()
        path = lambda *parts: os.path.join(self.folder, *parts)  # noqa: E731
        settings = [
            ("ClusterName", "reidtest"),
            ("SlurmctldHost", "{}(127.0.0.1)".format(self.node_name)),
            # Free ports: a system Slurm (or a second test run) may hold the default ones.
            ("SlurmctldPort", free_port()), ("SlurmdPort", free_port()),
            ("SlurmUser", "root"), ("SlurmdUser", "root"),
            ("AuthType", "auth/munge"), ("CredType", "cred/munge"),
            ("AuthInfo", "socket={}".format(self.munge_socket)),
            ("StateSaveLocation", path("state")), ("SlurmdSpoolDir", path("spool")),
            ("SlurmctldPidFile", path("slurmctld.pid")), ("SlurmdPidFile", path("slurmd.pid")),
            ("SlurmctldLogFile", path("log", "slurmctld.log")),
            ("SlurmdLogFile", path("log", "slurmd.log")),
            ("PlugStackConfig", path("plugstack.conf")),
            # Containers have no systemd and seldom a delegated cgroup tree: track job
            # processes through /proc, bind no tasks, count CPUs only, account nothing.
            ("ProctrackType", "proctrack/linuxproc"), ("TaskPlugin", "task/none"),
            ("SelectType", "select/cons_tres"), ("SelectTypeParameters", "CR_CPU"),
            ("JobAcctGatherType", "jobacct_gather/none"),
            ("AccountingStorageType", "accounting_storage/none"),
            ("JobCompType", "jobcomp/none"), ("SwitchType", "switch/none"),
            ("MpiDefault", "none"), ("SchedulerType", "sched/backfill"),
            ("ReturnToService", 2), ("JobRequeue", 1), ("KillWait", 5),
            ("SchedulerParameters", "sched_interval=2"),
            # Finished jobs stay visible to `scontrol show job` (no accounting to ask) for an hour.
            ("MinJobAge", 3600),
            ("SlurmctldDebug", "info"), ("SlurmdDebug", "info"),
        ]
        lines = ["{}={}".format(key, value) for key, value in settings]
        lines.append("NodeName={} NodeAddr=127.0.0.1 CPUs={} RealMemory={} State=UNKNOWN".format(
            self.node_name, resources["CPUs"], resources["RealMemory"]))
        lines.append("PartitionName={} Nodes={} Default=YES MaxTime=INFINITE State=UP".format(
            self.partition, self.node_name))
        with open(path("plugstack.conf"), "w"):
            pass  # an empty one instead of /etc/slurm's, which may load site plugins
        with open(self.conf_path, "w") as file:
            file.write("\n".join(lines) + "\n")

    def _start_daemon(self, name, command):
        log_path = os.path.join(self.folder, "log", name + ".stdout")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        log = open(log_path, "ab")
        self.log_files[name] = log_path
        try:
            self.processes[name] = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.environment(), cwd=self.folder, start_new_session=True)
        except OSError as error:
            raise SlurmUnavailable("{} did not start: {}".format(name, error))
        finally:
            log.close()

    def _wait_for(self, condition, what):
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise SlurmUnavailable("{} exited with code {} while waiting for {}.\n{}"
                                           .format(name, process.returncode, what,
                                                   self.log_tail()))
            if condition():
                return
            time.sleep(0.5)
        raise SlurmUnavailable("timed out after {} s waiting for {}.\n{}".format(
            self.start_timeout, what, self.log_tail()))

    def run(self, *command, timeout=60, check=False):
        """A Slurm client command (name from CLIENTS) on this cluster: CompletedProcess."""
        name, *arguments = command
        return subprocess.run([self.binaries.get(name, name), *arguments], capture_output=True,
                              text=True, timeout=timeout, env=self.environment(), check=check)

    def _controller_answers(self):
        try:
            return self.run("scontrol", "ping", timeout=10).stdout.count("UP") > 0
        except subprocess.TimeoutExpired:
            return False

    def _node_idle(self):
        try:
            state = self.run("sinfo", "--noheader", "--nodes", self.node_name,
                             "--format", "%t", timeout=10).stdout.strip()
        except subprocess.TimeoutExpired:
            return False
        if state.startswith(("drain", "drng", "down")):
            # Declared resources the machine lacks, for instance: say why rather than wait.
            reason = self.run("sinfo", "--noheader", "-R", timeout=10).stdout.strip()
            raise SlurmUnavailable("node {} is {}: {}\n{}".format(
                self.node_name, state, reason, self.log_tail()))
        return state == "idle"

    def log_tail(self, lines=15):
        """The last lines of each daemon's output, for error messages."""
        parts = []
        for name, path in self.log_files.items():
            for log in (path, os.path.join(self.folder, "log", name + ".log"),
                        os.path.join(self.folder, "munge", name + ".log")):
                try:
                    with open(log, errors="replace") as file:
                        tail = file.read().splitlines()[-lines:]
                except OSError:
                    continue
                if tail:
                    parts.append("--- {} ---\n{}".format(log, "\n".join(tail)))
        return "\n".join(parts)

    # ----------------------------------------------------------------------------- jobs
    def submit(self, script, *arguments, sbatch_options=(), environment=None, cwd=None):
        """``sbatch [sbatch_options] script [arguments]``: the job id (AssertionError with sbatch's
        message if it is refused)."""
        result = subprocess.run(
            [self.binaries["sbatch"], "--parsable", *sbatch_options, script, *arguments],
            capture_output=True, text=True, timeout=60, cwd=cwd,
            env=self.environment(environment))
        if result.returncode != 0:
            raise AssertionError("sbatch refused the job: {}{}".format(result.stdout,
                                                                       result.stderr))
        return result.stdout.strip().split(";")[0]

    def job_info(self, job_id):
        """``scontrol show job``'s fields of the job ({} once Slurm has forgotten it)."""
        output = self.run("scontrol", "show", "job", "--oneliner", job_id, timeout=30).stdout
        return dict(re.findall(r"(\w+)=(\S*)", output.splitlines()[0] if output else ""))

    def wait(self, job_id, timeout):
        """The job's fields once it has ended; on timeout the job is cancelled and an
        AssertionError names its last state."""
        deadline = time.monotonic() + timeout
        info = {}
        while time.monotonic() < deadline:
            info = self.job_info(job_id)
            if info.get("JobState") in TERMINAL_STATES:
                return info
            time.sleep(2)
        self.run("scancel", job_id, timeout=30)
        raise AssertionError("job {} did not end within {} s (state {}).\n{}".format(
            job_id, timeout, info.get("JobState"), self.log_tail()))

    # ----------------------------------------------------------------------------- tear-down
    def stop(self, timeout=20):
        """Cancels what still runs and ends the daemons (SIGTERM, then SIGKILL), slurmd first."""
        if self.processes.get("slurmctld") and self.processes["slurmctld"].poll() is None:
            try:
                self.run("scancel", "--partition", self.partition, timeout=15)
                # Let slurmd's step daemons end the jobs' processes before slurmd goes.
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and self.run(
                        "squeue", "--noheader", "--states", "RUNNING,COMPLETING",
                        "--format", "%i", timeout=15).stdout.strip():
                    time.sleep(1)
            except (subprocess.TimeoutExpired, OSError):
                pass
        for name in reversed(DAEMONS):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                # The whole session: a slurmstepd left behind by slurmd goes too.
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=timeout)
        if self.short_folder:
            shutil.rmtree(self.short_folder, ignore_errors=True)
