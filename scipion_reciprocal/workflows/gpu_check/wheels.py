"""The wheels the offline GPU check carries to a machine without network access.

The machine (Python 3.12, manylinux x86_64) has JAX with CUDA and the scientific stack
(numpy, scipy, pandas, matplotlib, scikit-learn, scikit-image, seaborn, equinox, optax,
jaxtyping, numba...), but not RECOVAR and these packages it imports for ``pipeline`` and
``analyze``. :func:`prepare` downloads them (RECOVAR's own pins; no dependencies: RECOVAR
is installed beside the machine's JAX, whose versions the check then reports) and refuses a
set over the budget; :func:`install` puts them in a private folder for ``PYTHONPATH``.

Left out on purpose (RECOVAR declares them; only its simulation commands import them, and
with them the set would exceed the budget): healpy 1.18.0 (8.9 MB, plus astropy ~10 MB),
finufft 2.3.1 (2.1 MB), jax-finufft 0.1.0 (2.2 MB).
"""
import json
import re
import subprocess
import sys
from pathlib import Path

from ...formats._atomic import atomic_path

PYTHON_VERSION = "3.12"
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_27_x86_64", "manylinux_2_28_x86_64")
REQUIREMENTS = ("recovar==1.0.5", "grain==0.2.16", "array-record==0.8.6", "jaxopt==0.8.5",
                "kneed==0.8.5", "more-itertools==10.6.0", "mrcfile==1.5.4", "starfile==0.5.11",
                "umap-learn==0.5.12", "pynndescent==0.7.0")
LEFT_OUT = ("healpy==1.18.0", "finufft==2.3.1", "jax-finufft==0.1.0")
#: The set must stay under 60 MB: at most 64 MiB travel to the machine per call, with the
#: plugin's own files.
BUDGET_BYTES = 60_000_000
MANIFEST = "wheels.json"


class WheelError(RuntimeError):
    """A wheel folder that cannot be used (the message says why)."""


def normalized(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_project(filename):
    """The project name of a wheel file name, normalised (``array_record-0.8.6-...`` ->
    ``array-record``)."""
    return normalized(Path(filename).name.split("-")[0])


def download_command(directory, python=None):
    """The ``pip download`` that fetches the set for Python 3.12 on manylinux x86_64."""
    command = [python or sys.executable, "-m", "pip", "download", "--no-deps",
               "--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation",
               "cp", "--disable-pip-version-check", "-d", str(directory)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    return command + list(REQUIREMENTS)


def prepare(directory, python=None, log=print):
    """Download the set into ``directory`` and write its manifest; 0 when within budget."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stale = [p for p in directory.glob("*.whl")
             if wheel_project(p.name) not in {wheel_project(r) for r in REQUIREMENTS}]
    if stale:
        raise WheelError("%s holds wheels that are not part of the set (%s): use an empty folder"
                         % (directory, ", ".join(p.name for p in stale)))
    done = subprocess.run(download_command(directory, python))
    if done.returncode:
        raise WheelError("pip download failed (exit status %d); see pip's messages above"
                         % done.returncode)
    wheels = sorted(directory.glob("*.whl"))
    projects = [wheel_project(p.name) for p in wheels]
    missing = [r for r in REQUIREMENTS if normalized(r.split("==")[0]) not in projects]
    doubled = sorted({p for p in projects if projects.count(p) > 1})
    if missing or doubled:
        raise WheelError("%s: missing %s; more than one version of %s" % (
            directory, ", ".join(missing) or "none", ", ".join(doubled) or "none"))
    sizes = {p.name: p.stat().st_size for p in wheels}
    total = sum(sizes.values())
    manifest = {"python_version": PYTHON_VERSION, "platforms": list(PLATFORMS),
                "requirements": list(REQUIREMENTS), "left_out": list(LEFT_OUT),
                "wheels": sizes, "total_bytes": total, "budget_bytes": BUDGET_BYTES}
    with atomic_path(directory / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    for name, size in sorted(sizes.items(), key=lambda kv: -kv[1]):
        log("%9.2f MB  %s" % (size / 1e6, name))
    log("%9.2f MB  in all (budget %.0f MB); left out: %s"
        % (total / 1e6, BUDGET_BYTES / 1e6, ", ".join(LEFT_OUT)))
    if total > BUDGET_BYTES:
        raise WheelError("the set is %.1f MB, over the %.0f MB budget" % (total / 1e6,
                                                                         BUDGET_BYTES / 1e6))
    return 0


def checked_wheels(directory):
    """The wheels of a folder made by :func:`prepare`, checked against its manifest."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        raise WheelError("%s has no readable %s: make it with 'scripts/gpu-check.sh --prepare "
                         "%s' on a machine with network access" % (directory, MANIFEST, directory))
    wheels = []
    for name, size in manifest["wheels"].items():
        path = directory / name
        if not path.is_file() or path.stat().st_size != size:
            raise WheelError("%s: %s is missing or not the one downloaded (expected %d bytes)"
                             % (directory, name, size))
        wheels.append(path)
    return wheels


def install(directory, site, python=None, log=print):
    """Install the folder's wheels into ``site`` (for ``PYTHONPATH``), without dependencies
    and without any index."""
    wheels = checked_wheels(directory)
    command = [python or sys.executable, "-m", "pip", "install", "--no-index", "--no-deps",
               "--no-compile", "--disable-pip-version-check", "--quiet", "--upgrade",
               "--target", str(site)] + [str(w) for w in wheels]
    done = subprocess.run(command)
    if done.returncode:
        raise WheelError("pip install from %s failed (exit status %d)" % (directory,
                                                                         done.returncode))
    log("Installed %d wheels from %s into %s" % (len(wheels), directory, site))
    return 0
