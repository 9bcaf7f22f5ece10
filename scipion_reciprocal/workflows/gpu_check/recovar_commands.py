"""The RECOVAR commands of the GPU check, as the protocols run them, and RECOVAR's CUDA kernel.

:func:`pipeline_command` and :func:`analyze_command` give the arguments ProtRecovarPipeline and
ProtRecovarAnalyze build for the check's form values (a test compares them), so the offline
driver runs exactly what the protocols run.
"""
import re
from pathlib import Path

from ...formats import cryodrgn
from ...formats import recovar_results as rr

#: Run in the RECOVAR Python: versions, devices, RECOVAR's requirements against what is
#: installed, and whether the commands the check runs import.
PROBE = r"""
import importlib, importlib.metadata as md, json, sys
from packaging.requirements import Requirement
out = {"python": sys.version.split()[0], "versions": {}, "missing": [], "mismatches": [],
       "import_errors": {}}
for text in md.requires("recovar") or []:
    req = Requirement(text)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        out["missing"].append(str(req))
        continue
    out["versions"][req.name] = version
    if not req.specifier.contains(version, prereleases=True):
        out["mismatches"].append("%s (installed %s)" % (req, version))
for name in ("recovar", "jax", "jaxlib", "numpy"):
    try:
        out["versions"][name] = md.version(name)
    except md.PackageNotFoundError:
        pass
import jax
out["devices"] = [str(d) for d in jax.devices()]
for module in ("recovar.commands.pipeline", "recovar.commands.analyze"):
    try:
        importlib.import_module(module)
    except Exception as error:
        out["import_errors"][module] = "%s: %s" % (type(error).__name__, error)
print(json.dumps(out))
"""

#: Build RECOVAR's CUDA back-projection kernel, where RECOVAR looks for it, with RECOVAR's own
#: build (make + nvcc, the architectures in $CUDA_ARCH). A machine with nvcc but no make gets
#: the one nvcc line of RECOVAR 1.0.5's Makefile instead.
BUILD_KERNEL = r"""
import json, os, shutil, subprocess
import recovar.cuda_backproject as cb
nvcc = os.environ.get("NVCC") or shutil.which("nvcc")
if shutil.which("make") is None and nvcc:
    import jax.ffi
    library = cb._default_build_lib_path()
    library.parent.mkdir(parents=True, exist_ok=True)
    subprocess.check_call([nvcc, "-O3", "-std=c++17", "-Xcompiler", "-fPIC", "--shared"]
                          + os.environ.get("CUDA_ARCH", "").split()
                          + ["-I" + jax.ffi.include_dir(), "-o", str(library),
                             str(cb._LIB_DIR / "cuda_backproject.cu")])
    built_with = "nvcc (no make here)"
else:
    library, built_with = cb.build_custom_cuda(), "RECOVAR's Makefile"
print(json.dumps({"library": str(library), "built_with": built_with}))
"""


#: How the protocols start RECOVAR: the plugin's launcher, which corrects RECOVAR 1.0.5's JAX
#: back-projection (docs/recovar-1.0.5.md) and imports nothing but RECOVAR.
LAUNCHER = Path(__file__).resolve().parents[2] / "backends" / "recovar_launcher.py"


def recovar_module(command, record=None):
    """How the protocols start a RECOVAR command (``python <launcher> [--record R] command``
    in its environment)."""
    return [str(LAUNCHER)] + (["--record", str(record)] if record else []) + [command]


def pipeline_command(inputs_dir, out_dir, options, cpu):
    """The arguments of ``recovar pipeline`` as ProtRecovarPipeline builds them for the
    check's form values (:class:`.plan.RecovarOptions`)."""
    inputs_dir = Path(inputs_dir)
    args = [inputs_dir / cryodrgn.PARTICLES_STAR, "--poses", inputs_dir / cryodrgn.POSES_PKL,
            "--ctf", inputs_dir / cryodrgn.CTF_PKL, "--zdim", str(options.zdim),
            "--uninvert-data", options.uninvert, "--mask", options.mask,
            "--downsample", options.downsample, "-o", out_dir]
    if cpu:
        args.append("--accept-cpu")
    return recovar_module("pipeline") + [str(a) for a in args]


def analyze_command(pipeline_dir, out_dir, options):
    """The arguments of ``recovar analyze`` as ProtRecovarAnalyze builds them (form defaults
    for the volume options, which RECOVAR ignores without centre volumes)."""
    args = [pipeline_dir, "--zdim", options.zdim, "--n-clusters", options.n_clusters,
            "--n-trajectories", options.trajectories, "--n-vols-along-path", 6,
            "--Bfactor", 0.0, "--n-bins", 50, "--maskrad-fraction", 20.0,
            "--n-min-particles", 100]
    if not options.compute_centers:
        args.append("--skip-centers")
    if not options.umap:
        args.append("--skip-umap")
    return recovar_module("analyze") + [str(a) for a in args + ["-o", out_dir]]


def cuda_arch_flags(gpus):
    """nvcc ``-gencode`` flags for the GPUs present only (RECOVAR's Makefile builds 6-8
    architectures by default, several minutes of nvcc)."""
    caps = sorted({g["compute_capability"].replace(".", "") for g in gpus})
    return " ".join("-gencode arch=compute_%s,code=sm_%s" % (c, c) for c in caps)


def recovar_log_facts(job_dir):
    """What RECOVAR's run.log says: GPU path, memory plan, images, JAX's own peak of GPU memory
    (``peak_bytes_in_use`` as RECOVAR logs it, whole GB) and RECOVAR's timing."""
    facts = {}
    try:
        lines = (Path(job_dir) / "run.log").read_text(errors="replace").splitlines()
    except OSError:
        return facts
    peaks = []
    for line in lines:
        for key, marker in (("backend", "RECOVAR GPU backend:"), ("memory_plan", "GPU memory plan:"),
                            ("images", "number of images:")):
            if marker in line:
                facts[key] = line.split(marker, 1)[1].strip()
        found = _JAX_PEAK.search(line)
        if found:
            peaks.append(int(found.group(1)))
    if peaks:
        facts["jax_peak_gb"] = max(peaks)
    try:
        facts["recovar_timing"] = rr.read_job(job_dir).get("timing")
    except rr.RecovarResultError:
        pass
    return facts


_JAX_PEAK = re.compile(r"GPU mem in use:\s*\d+; peak:\s*(\d+)")
