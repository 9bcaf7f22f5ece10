"""Configure a self-contained Scipion home through environment variables.

pyworkflow reads its configuration from environment variables once, when it is first
imported, so :func:`configure` must run before any ``import pyworkflow``.  Variables already
set by the user (or by Scipion's launcher and config file) are kept: this only fills gaps.
Used by the test harness, ``scipion-reciprocal demo`` and ``install-backend``.
"""
import os
import sys
from pathlib import Path

#: Default home when neither SCIPION_HOME nor SCIPION_RECIPROCAL_HOME is set.
DEFAULT_HOME = Path("~/.scipion-reciprocal").expanduser()

MINIMAL_HOSTS_CONF = """[localhost]
PARALLEL_COMMAND = mpirun -np %_(JOB_NODES)d %_(COMMAND)s
"""


def default_home():
    return Path(os.environ.get("SCIPION_HOME")
                or os.environ.get("SCIPION_RECIPROCAL_HOME")
                or DEFAULT_HOME).expanduser().resolve()


def configure(home=None, user_data=None, software=None, force=False):
    """Set the Scipion environment variables for ``home`` and create its folders.

    Parameters
    ----------
    home : path, optional
        Scipion home (software, config, tests under it). Defaults to :func:`default_home`.
    user_data : path, optional
        Where projects go (SCIPION_USER_DATA); defaults to ``home/data``.
    software : path, optional
        SCIPION_SOFTWARE (backend environments live in its ``em/``); defaults to
        ``home/software``.
    force : bool
        Overwrite variables that are already set (the test harness uses this to isolate
        tests from a user's configuration).

    Returns
    -------
    dict
        The variables that are now in effect.
    """
    if "pyworkflow" in sys.modules and not force:
        # Too late to change pyworkflow's configuration; report what it uses.
        return {k: v for k, v in os.environ.items() if k.startswith("SCIPION_")}
    home = Path(home).expanduser().resolve() if home else default_home()
    user_data = Path(user_data).expanduser().resolve() if user_data else home / "data"
    values = {
        "SCIPION_HOME": home,
        "SCIPION_USER_DATA": user_data,
        "SCIPION_SOFTWARE": Path(software).expanduser().resolve() if software else home / "software",
        "SCIPION_TESTS": home / "tests-data",
        "SCIPION_TESTS_OUTPUT": user_data / "Tests",
        "SCIPION_LOGS": user_data / "logs",
        "SCIPION_HOSTS": home / "config" / "hosts.conf",
        "SCIPION_DOMAIN": "pwem",
        "SCIPION_NOTIFY": "False",
        "SCIPION_TEST_NOSYNC": "True",
        "SCIPION_PYTHON": sys.executable,
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": home / "matplotlib",
    }
    applied = {}
    for key, value in values.items():
        if force or not os.environ.get(key):
            os.environ[key] = str(value)
        applied[key] = os.environ[key]
    for folder in ("SCIPION_HOME", "SCIPION_USER_DATA", "SCIPION_SOFTWARE", "SCIPION_TESTS",
                   "SCIPION_TESTS_OUTPUT", "SCIPION_LOGS", "MPLCONFIGDIR"):
        Path(applied[folder]).mkdir(parents=True, exist_ok=True)
    (Path(applied["SCIPION_SOFTWARE"]) / "em").mkdir(parents=True, exist_ok=True)
    hosts = Path(applied["SCIPION_HOSTS"])
    if not hosts.exists():
        hosts.parent.mkdir(parents=True, exist_ok=True)
        hosts.write_text(MINIMAL_HOSTS_CONF)
    return applied


def em_root():
    """Scipion's EM_ROOT for the current configuration, without importing pwem."""
    if os.environ.get("EM_ROOT"):
        return Path(os.environ["EM_ROOT"])
    software = os.environ.get("SCIPION_SOFTWARE") or str(default_home() / "software")
    return Path(software) / "em"
