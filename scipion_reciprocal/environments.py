"""Backend environments, declared once.

Each GPU backend (JAX/RECOVAR, TensorFlow) runs in its own Python environment, never in
Scipion's (they need numpy 2).  A :class:`BackendEnvironment` holds everything about one of
them; the Plugin's install hook (``python -m scipion installb NAME``), the
``scipion-reciprocal install-backend NAME`` command, the protocols' ``_validate`` and the
command wrapper that launches backend programs all read these declarations.  A new backend is
one more entry in :data:`BACKENDS`.

Layout under Scipion's ``EM_ROOT`` (``$SCIPION_SOFTWARE/em``)::

    <name>-<version>/env/                          the environment (venv or conda prefix)
    <name>-<version>/env/.scipion-reciprocal-installed   written last: the install is complete

The default activation puts ``env/bin`` first on PATH, which works for a venv and for a conda
prefix alike (pip's CUDA wheels find their libraries from site-packages).

This module imports nothing from Scipion.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .constants import BACKEND_MARKER, CUDA_OVERRIDE_VAR


@dataclass(frozen=True)
class BackendEnvironment:
    """One backend environment: what to install and how to check and activate it."""

    name: str
    version: str
    description: str
    activation_var: str
    cpu_requirements: tuple
    cuda_requirements: tuple
    import_name: str
    selfcheck_code: str
    python_version: str = "3.11"

    @property
    def package_name(self):
        """Folder name under EM_ROOT, also Scipion's installb target name."""
        return "%s-%s" % (self.name, self.version)

    def home(self, em_root):
        return Path(em_root) / self.package_name

    def prefix(self, em_root):
        return self.home(em_root) / "env"

    def marker(self, em_root):
        return self.prefix(em_root) / BACKEND_MARKER

    def default_activation(self, em_root):
        return 'export PATH=%s:"$PATH" && unset PYTHONPATH PYTHONHOME' % shlex.quote(
            str(self.prefix(em_root) / "bin"))

    def requirements(self, use_cuda):
        return self.cuda_requirements if use_cuda else self.cpu_requirements

    def install_command(self, em_root, use_conda=None, use_cuda=None, python=None):
        """One shell command (steps chained with ``&&``) that creates the environment.

        The marker file is written last, so a failed step never leaves the environment
        marked as installed.  ``use_conda``/``use_cuda`` default to what this machine has.
        """
        use_conda = conda_available() if use_conda is None else use_conda
        use_cuda = cuda_available() if use_cuda is None else use_cuda
        prefix = self.prefix(em_root)
        q = shlex.quote
        if use_conda:
            create = "conda create -y -q -p %s python=%s pip" % (q(str(prefix)), self.python_version)
        else:
            create = "%s -m venv %s" % (q(python or sys.executable), q(str(prefix)))
        pip = "%s -m pip install --no-input %s" % (
            q(str(prefix / "bin" / "python")), " ".join(q(r) for r in self.requirements(use_cuda)))
        check = "%s -c %s" % (q(str(prefix / "bin" / "python")), q(self.selfcheck_code))
        steps = ["env -u PYTHONPATH -u PYTHONHOME sh -c %s" % q(" && ".join([create, pip])),
                 "env -u PYTHONPATH -u PYTHONHOME %s" % check,
                 "touch %s" % q(str(self.marker(em_root)))]
        return " && ".join(steps)

    def install_hint(self):
        """The commands a user runs to install this environment."""
        return ("python -m scipion installb %s   (or: scipion-reciprocal install-backend %s)"
                % (self.name, self.name))

    def missing_reason(self, em_root, activation):
        """None when the environment looks usable, otherwise why not (one line)."""
        if activation.strip() == self.default_activation(em_root):
            if not self.marker(em_root).exists():
                return ("the %s environment is not installed (no %s). Install it with: %s"
                        % (self.name, self.marker(em_root), self.install_hint()))
            return None
        # A user-supplied activation (e.g. a cluster module or conda env): check that it
        # provides the package without importing it (TensorFlow takes seconds to import).
        probe = ("import importlib.util, sys; "
                 "sys.exit(importlib.util.find_spec(%r) is None)" % self.import_name)
        try:
            result = subprocess.run(
                ["bash", "-c", "%s && python -c %s" % (activation, shlex.quote(probe))],
                capture_output=True, text=True, timeout=120, env=clean_environ())
        except subprocess.TimeoutExpired:
            return "the activation command %s did not finish in 120 s" % self.activation_var
        if result.returncode != 0:
            return ("the activation command in %s (%r) does not provide the Python package %r. "
                    "Fix the variable or install the default environment with: %s"
                    % (self.activation_var, activation, self.import_name, self.install_hint()))
        return None


RECOVAR = BackendEnvironment(
    name="recovar",
    version="1.0.5",
    description="RECOVAR 1.0.5 (JAX) for heterogeneity analysis. Academic, non-commercial licence.",
    activation_var="RECOVAR_ENV_ACTIVATION",
    cpu_requirements=("recovar==1.0.5",),
    cuda_requirements=("recovar==1.0.5", "jax[cuda12]==0.9.0.1"),
    import_name="recovar",
    selfcheck_code=("import json, os, importlib.metadata as m, jax, recovar; print(json.dumps({"
                    "'backend': 'recovar', 'versions': {p: m.version(p) for p in "
                    "('recovar', 'jax', 'numpy')}, 'devices': [str(d) for d in jax.devices()], "
                    "'cuda_visible_devices': os.environ.get('CUDA_VISIBLE_DEVICES')}))"),
)

CLASSIFIER = BackendEnvironment(
    name="classifier",
    version="2.21.0",
    description="TensorFlow 2.21 (Keras 3) for the good/bad particle classifier.",
    activation_var="CLASSIFIER_ENV_ACTIVATION",
    cpu_requirements=("tensorflow-cpu==2.21.0", "mrcfile==1.5.4"),
    cuda_requirements=("tensorflow[and-cuda]==2.21.0", "mrcfile==1.5.4"),
    import_name="tensorflow",
    selfcheck_code=("import json, os, importlib.metadata as m, mrcfile, tensorflow as tf; "
                    "print(json.dumps({'backend': 'classifier', 'versions': {p: m.version(p) "
                    "for p in ('keras', 'numpy', 'mrcfile')} | {'tensorflow': tf.__version__}, "
                    "'devices': [d.name for d in tf.config.list_physical_devices()], "
                    "'cuda_visible_devices': os.environ.get('CUDA_VISIBLE_DEVICES')}))"),
)

BACKENDS = {backend.name: backend for backend in (RECOVAR, CLASSIFIER)}


def get_backend(name):
    """The declaration of backend ``name``; a clear error listing the known ones otherwise."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise KeyError("unknown backend %r; known backends: %s"
                       % (name, ", ".join(sorted(BACKENDS)))) from None


def conda_available():
    return shutil.which("conda") is not None


def cuda_available():
    """True when ``nvidia-smi`` lists a GPU (override with SCIPION_RECIPROCAL_CUDA=0/1)."""
    override = os.environ.get(CUDA_OVERRIDE_VAR)
    if override in ("0", "1"):
        return override == "1"
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def clean_environ(base=None):
    """A copy of the environment without Scipion's Python settings, for backend programs."""
    env = dict(os.environ if base is None else base)
    for var in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"):
        env.pop(var, None)
    return env


def backend_command(activation, program, gpus=None):
    """The shell command that runs ``program`` (a path + arguments) inside a backend.

    ``gpus``: a GPU list ("0,1"), or a placeholder that Scipion's ``runJob`` fills in with the
    GPUs it assigns to the step (``%(GPU)s``, left unquoted); None or "" hides every GPU so
    that a CPU run never grabs a device by accident.
    """
    visible = gpus if gpus not in (None, "") else ""
    if not re.fullmatch(r"%\(\w+\)s", visible):
        visible = shlex.quote(visible)
    return "%s && CUDA_VISIBLE_DEVICES=%s python %s" % (activation, visible, program)


def gpu_free_memory_gb(gpus=None):
    """Free memory (GB) of each chosen GPU as ``nvidia-smi`` reports it: ``{index: GB}``.

    ``gpus``: GPU indices (as nvidia-smi numbers them); None for all. Returns None when
    ``nvidia-smi`` is absent or fails (no GPU, or a machine whose GPUs it cannot see).
    """
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.free",
                              "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode:
        return None
    free = {}
    for line in out.stdout.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 2 and fields[0].isdigit():
            try:
                free[int(fields[0])] = float(fields[1]) * 1024 ** 2 / 1e9  # MiB -> GB
            except ValueError:
                continue
    wanted = free if gpus is None else {g: free[g] for g in gpus if g in free}
    return wanted or None
