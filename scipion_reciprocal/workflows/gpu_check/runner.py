"""Phases with time limits, peak GPU memory from nvidia-smi, and the check's JSON report.

A phase is a function ``body(limit)`` that runs one step and returns a dict of details (or
raises :class:`PhaseFailed`); ``limit`` is the time it may take, which the body passes to the
programs it starts (subprocess timeouts, the protocol watcher). A timer interrupts a body that
overruns its limit by more than a grace period. The report (``gpu-check.json``) is rewritten
atomically after every phase, so an interrupted check leaves the phases done so far.
"""
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from ...formats._atomic import atomic_path

REPORT_JSON = "gpu-check.json"
#: Seconds a phase body may overrun its limit before the timer interrupts it.
GRACE = 15.0
OK, FAILED, TIMEOUT, SKIPPED = "ok", "failed", "timeout", "skipped"


class PhaseFailed(RuntimeError):
    """A phase did not do its job; the message says why (one or a few lines)."""


class PhaseTimeout(PhaseFailed):
    """A phase was stopped at its time limit."""


def gpu_inventory():
    """The GPUs nvidia-smi lists (dicts of name, memory, driver, compute capability), or []."""
    if shutil.which("nvidia-smi") is None:
        return []
    fields = "index,name,memory.total,driver_version,compute_cap"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=" + fields, "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode:
        return []
    gpus = []
    for line in out.stdout.strip().splitlines():
        index, name, memory, driver, cap = [v.strip() for v in line.split(",")]
        gpus.append({"index": int(index), "name": name, "memory_mib": int(float(memory)),
                     "driver": driver, "compute_capability": cap})
    return gpus


class GpuMemorySampler:
    """Samples the used memory of every GPU with ``nvidia-smi -lms`` in the background.

    Each sample carries nvidia-smi's own timestamp, so late (buffered) lines still land in
    the right phase. Without nvidia-smi it records nothing and every peak is None.
    """

    def __init__(self, interval_ms=250):
        self.interval_ms = interval_ms
        self.samples = []          # (unix time, gpu index, used MiB)
        self._process = None
        self._thread = None

    def start(self):
        if shutil.which("nvidia-smi") is None:
            return self
        self._process = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=timestamp,index,memory.used",
             "--format=csv,noheader,nounits", "-lms", str(self.interval_ms)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self):
        for line in self._process.stdout:
            try:
                stamp, index, used = [v.strip() for v in line.split(",")]
                when = datetime.datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").timestamp()
                self.samples.append((when, int(index), float(used)))
            except ValueError:
                continue

    def peak(self, start, end):
        """Highest used memory (MiB) of any GPU between two ``time.time()`` values, or None."""
        values = [used for when, _, used in list(self.samples) if start <= when <= end]
        return max(values) if values else None

    def stop(self):
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._thread.join(timeout=10)


class CheckRun:
    """Runs the phases of one check within the plan's overall budget and writes the report."""

    def __init__(self, plan, setting, out_dir, phase_names, log=print, detached=()):
        self.plan, self.setting = plan, setting
        #: Phases whose programs this process does not wait for (Scipion's protocols): their
        #: CPU time cannot be counted here and is reported as None.
        self.detached = set(detached)
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.phase_names = list(phase_names)
        self.log = log
        self.started = time.monotonic()
        self.sampler = GpuMemorySampler().start()
        self.report = {"setting": setting, "plan": plan.name, "status": "running",
                       "started": datetime.datetime.now().isoformat(timespec="seconds"),
                       "budget_s": plan.budget, "machine": machine_description(),
                       "phases": [], "figures": {}, "notes": []}
        self.write_report()

    # ------------------------------------------------------------------ phases
    def remaining(self):
        return self.plan.budget - (time.monotonic() - self.started)

    def limit_for(self, name):
        """The phase's limit, less what must stay for the phases after it."""
        later = self.phase_names[self.phase_names.index(name) + 1:]
        keep = sum(self.plan.phase(n).reserve for n in later)
        return min(self.plan.phase(name).limit, self.remaining() - keep)

    def run(self, name, body):
        """Run phase ``name``; returns its details dict, or None when it did not succeed."""
        limit = self.limit_for(name)
        entry = {"name": name, "limit_s": round(limit, 1)}
        if limit < min(20.0, self.plan.phase(name).limit):
            return self._finish(entry, SKIPPED, "not run: the %.0f s budget of the check is "
                                "spent" % self.plan.budget)
        self.log("\n== %s (limit %.0f s)" % (name, limit))
        wall0, clock0 = time.time(), time.monotonic()
        cpu0 = _cpu_seconds()
        try:
            with _interrupt_after(limit + GRACE, name):
                details = body(limit) or {}
        except PhaseTimeout as stopped:
            return self._finish(entry, TIMEOUT, str(stopped), wall0, clock0, cpu0)
        except PhaseFailed as failed:
            return self._finish(entry, FAILED, str(failed), wall0, clock0, cpu0)
        except Exception as error:  # a bug or an unexpected failure: keep the other phases
            return self._finish(entry, FAILED, "%s: %s" % (type(error).__name__, error),
                                wall0, clock0, cpu0)
        self._finish(entry, OK, details.pop("message", ""), wall0, clock0, cpu0, details)
        return details

    def skip(self, name, reason):
        self._finish({"name": name, "limit_s": None}, SKIPPED, reason)

    def _finish(self, entry, status, message, wall0=None, clock0=None, cpu0=None, details=None):
        entry["status"] = status
        if clock0 is not None:
            entry["wall_s"] = round(time.monotonic() - clock0, 1)
            entry["cpu_s"] = (None if entry["name"] in self.detached
                              else round(_cpu_seconds() - cpu0, 1))
            entry["gpu_peak_mib"] = self.sampler.peak(wall0, time.time())
        entry["message"] = message
        if details:
            entry["details"] = details
        self.report["phases"].append(entry)
        self.write_report()
        self.log(_phase_line(entry))
        return None

    # ------------------------------------------------------------------ report
    def figure(self, name, value):
        self.report["figures"][name] = value
        self.write_report()

    def note(self, text):
        self.log("NOTE: " + text)
        self.report["notes"].append(text)
        self.write_report()

    def write_report(self):
        with atomic_path(self.out_dir / REPORT_JSON) as tmp:
            tmp.write_text(json.dumps(self.report, indent=1, default=_jsonable) + "\n")

    def finish(self):
        """Stop sampling, mark the report complete, print the summary; the exit status."""
        self.sampler.stop()
        self.report["total_wall_s"] = round(time.monotonic() - self.started, 1)
        self.report["status"] = "complete"
        self.write_report()
        self.log(summary_text(self.report))
        self.log("Report: %s" % (self.out_dir / REPORT_JSON))
        failed = [p for p in self.report["phases"] if p["status"] in (FAILED, TIMEOUT)]
        return 1 if failed else 0


def machine_description():
    return {"host": platform.node(), "python": sys.version.split()[0],
            "cpus": os.cpu_count(), "gpus": gpu_inventory()}


def summary_text(report):
    """The report as a table of phases and a list of figures (what the check prints last)."""
    lines = ["", "GPU check (%s setting, %s plan): %s" % (
        report["setting"], report["plan"], ", ".join(
            "%s %s" % (g["name"], "%d MiB" % g["memory_mib"]) for g in report["machine"]["gpus"])
        or "no GPU"),
        "%-26s %-8s %8s %8s %8s %12s  %s" % ("phase", "status", "wall s", "CPU s", "limit s",
                                             "peak GPU MiB", "message")]
    for p in report["phases"]:
        lines.append(_phase_line(p))
    lines.append("Total %.1f s (budget %.0f s after the installation)"
                 % (report.get("total_wall_s", 0.0), report["budget_s"]))
    if report["figures"]:
        lines.append("Figures:")
        lines += ["  %-34s %s" % (k, _fmt(v)) for k, v in report["figures"].items()]
    for note in report["notes"]:
        lines.append("Note: " + note)
    return "\n".join(lines)


def _phase_line(p):
    """One row of the phase table (CPU: this process and its finished children)."""
    peak = p.get("gpu_peak_mib")
    return "%-26s %-8s %8s %8s %8s %12s  %s" % (
        p["name"], p["status"], _seconds(p.get("wall_s")), _seconds(p.get("cpu_s")),
        _seconds(p.get("limit_s")), "n/a" if peak is None else "%.0f" % peak,
        (p.get("message") or "").splitlines()[0] if p.get("message") else "")


def _seconds(value):
    return "-" if value is None else "%.1f" % value


def _fmt(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return "%.3f" % value if abs(value) < 10 else "%.1f" % value
    return str(value)


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _cpu_seconds():
    """User + system CPU of this process and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextmanager
def _interrupt_after(seconds, name):
    """Raise :class:`PhaseTimeout` in the main thread after ``seconds`` (a backstop)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise PhaseTimeout("%s stopped after %.0f s (its limit plus %.0f s grace)"
                           % (name, seconds, GRACE))

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1.0))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_command(command, limit, log_path, env=None, cwd=None):
    """Run a program (argument list) with a time limit, its output into ``log_path``.

    Raises :class:`PhaseTimeout` when it runs past ``limit`` (its process group is killed),
    :class:`PhaseFailed` with the log's tail when it fails.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        process = subprocess.Popen([str(c) for c in command], stdout=log,
                                   stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                   start_new_session=True)
        try:
            code = process.wait(timeout=max(limit, 1.0))
        except (subprocess.TimeoutExpired, PhaseTimeout):
            _kill_group(process)
            raise PhaseTimeout("stopped at its limit of %.0f s; log: %s" % (limit, log_path))
    if code:
        raise PhaseFailed("%s exited with %d; last lines of %s:\n%s"
                          % (Path(str(command[0])).name, code, log_path, tail(log_path)))


def _kill_group(process):
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:]).rstrip()
    except OSError:
        return ""
