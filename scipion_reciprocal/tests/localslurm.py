"""A throw-away single-node SLURM cluster on localhost, for tests.

:meth:`LocalSlurm.start` writes ``slurm.conf`` and ``gres.conf`` into a folder, starts its own
``munged`` (own key and socket), ``slurmctld`` and ``slurmd`` on free ports, and waits until
the node is idle.  Clients (``sbatch``, ``squeue``, ``scancel``) find it through the
``SLURM_CONF`` variable in :attr:`LocalSlurm.environ`.  The node offers the machine's CPUs,
a little memory and two fake GPUs (device nodes that alias ``/dev/null``), so that
``--gres=gpu:N`` requests are scheduled as on a GPU cluster; jobs get CUDA_VISIBLE_DEVICES
from SLURM but no real device.  Process tracking is by process tree (``proctrack/linuxproc``):
no cgroup set-up is needed, and cancelling a job still kills the programs it started.

Needs root (slurmd runs jobs as their user) and Debian's ``munge``, ``slurmctld``,
``slurmd`` and ``slurm-client``; :func:`unavailable` says why it cannot run.
"""
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")
PARTITION = "debug"
N_GPUS = 2


def program(name):
    """Full path of a SLURM/munge program (daemons live in /usr/sbin), or None."""
    return shutil.which(name, path=os.pathsep.join(
        [os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"]))


def unavailable():
    """Why a local SLURM cannot be started here, or None."""
    if os.name != "posix" or os.geteuid() != 0:
        return "a local SLURM needs root (slurmd starts jobs as their user)"
    missing = [p for p in PROGRAMS if program(p) is None]
    if missing:
        return ("SLURM/munge not installed (missing %s; Debian: apt-get install slurmctld "
                "slurmd slurm-client munge)" % ", ".join(missing))
    return None


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path, lines=15):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no %s)" % path


class SlurmStartError(RuntimeError):
    """The daemons could not be started; the message carries the log tails."""


class LocalSlurm:
    def __init__(self, folder):
        self.folder = Path(folder).resolve()
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.folder / "slurm.conf"
        self.environ = {"SLURM_CONF": str(self.conf)}
        self._pids = {}

    # ------------------------------------------------------------------ set-up
    @classmethod
    def start(cls, folder, timeout=60):
        """Start munged, slurmctld and slurmd in ``folder``; raise SlurmStartError on failure."""
        cluster = cls(folder)
        try:
            cluster._write_config()
            cluster._start_daemons(timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _write_config(self):
        f = self.folder
        for sub in ("munge", "state", "spool", "dev", "log"):
            (f / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(f, 0o755)  # munged wants its socket folder reachable
        os.chmod(f / "munge", 0o755)
        key = f / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        for i in range(N_GPUS):
            device = f / "dev" / ("nvidia%d" % i)
            if not device.exists():
                try:  # a character device, as gres.conf requires; aliases /dev/null
                    os.mknod(device, 0o666 | 0o020000, os.makedev(1, 3))
                except OSError:
                    device.touch()  # slurmd complains but still schedules the GPUs
        memory = 4096
        cpus = os.cpu_count() or 1
        self.ctld_port, self.slurmd_port = _free_port(), _free_port()
        self.conf.write_text("\n".join([
            "ClusterName=scipiontest",
            "SlurmctldHost=%s(127.0.0.1)" % self.host,
            "SlurmctldPort=%d" % self.ctld_port,
            "SlurmdPort=%d" % self.slurmd_port,
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            "AuthInfo=socket=%s" % (f / "munge" / "munge.socket"),
            "StateSaveLocation=%s" % (f / "state"),
            "SlurmdSpoolDir=%s" % (f / "spool"),
            "SlurmctldPidFile=%s" % (f / "slurmctld.pid"),
            "SlurmdPidFile=%s" % (f / "slurmd.pid"),
            "SlurmctldLogFile=%s" % (f / "log" / "slurmctld.log"),
            "SlurmdLogFile=%s" % (f / "log" / "slurmd.log"),
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none",
            "SchedulerType=sched/builtin",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "ReturnToService=2",
            "KillWait=5",
            "GresTypes=gpu",
            "NodeName=%s NodeAddr=127.0.0.1 CPUs=%d RealMemory=%d Gres=gpu:%d State=UNKNOWN"
            % (self.host, cpus, memory, N_GPUS),
            "PartitionName=%s Nodes=ALL Default=YES MaxTime=INFINITE State=UP" % PARTITION,
            ""]))
        (f / "gres.conf").write_text("NodeName=%s Name=gpu File=%s\n"
                                     % (self.host, f / "dev" / ("nvidia[0-%d]" % (N_GPUS - 1))))

    def _env(self):
        env = dict(os.environ)
        env.update(self.environ)
        return env

    def _run(self, *command, check=True, timeout=30):
        out = subprocess.run((program(command[0]) or command[0],) + command[1:],
                             env=self._env(), capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise SlurmStartError("%s failed (%d): %s" % (" ".join(command), out.returncode,
                                                          (out.stderr or out.stdout).strip()))
        return out.stdout

    def _start_daemons(self, timeout):
        f = self.folder
        self._run("munged", "--force", "--key-file=%s" % (f / "munge" / "munge.key"),
                  "--socket=%s" % (f / "munge" / "munge.socket"),
                  "--pid-file=%s" % (f / "munge" / "munged.pid"),
                  "--log-file=%s" % (f / "log" / "munged.log"),
                  "--seed-file=%s" % (f / "munge" / "munged.seed"))
        self._pids["munged"] = f / "munge" / "munged.pid"
        self._run("slurmctld")
        self._pids["slurmctld"] = f / "slurmctld.pid"
        self._run("slurmd", "-N", self.host)
        self._pids["slurmd"] = f / "slurmd.pid"
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            state = self._run("sinfo", "-h", "-N", "-o", "%t", check=False).strip()
            if state == "idle":
                return
            time.sleep(0.5)
        raise SlurmStartError("the SLURM node is %r, not idle, after %d s.\nslurmctld.log:\n%s\n"
                              "slurmd.log:\n%s" % (state, timeout, _tail(f / "log" / "slurmctld.log"),
                                                   _tail(f / "log" / "slurmd.log")))

    # ------------------------------------------------------------------ use
    def job_state(self, job_id):
        """SLURM's state of a job (RUNNING, CANCELLED, ...) while it still knows it, else ''."""
        out = self._run("scontrol", "show", "job", str(job_id), check=False)
        for field in out.split():
            if field.startswith("JobState="):
                return field.split("=", 1)[1]
        return ""

    def final_state(self, job_id, timeout=60):
        """The job's state once it has ended (the run's status can be written a moment before
        its process exits); '' if SLURM no longer knows the job."""
        deadline = time.time() + timeout
        state = self.job_state(job_id)
        while state in ("PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED") \
                and time.time() < deadline:
            time.sleep(0.5)
            state = self.job_state(job_id)
        return state

    def cancel(self, job_id):
        self._run("scancel", str(job_id))

    # ------------------------------------------------------------------ tear-down
    def stop(self):
        """Stop the daemons this instance started (by the pids in their pid files)."""
        for name in ("slurmd", "slurmctld", "munged"):
            pid_file = self._pids.pop(name, None)
            if pid_file is None:
                continue
            try:
                pid = int(Path(pid_file).read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                continue
            for _ in range(100):  # up to 10 s
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
