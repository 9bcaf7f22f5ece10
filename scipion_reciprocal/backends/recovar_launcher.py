"""Start a RECOVAR command, correcting RECOVAR 1.0.5's CPU back-projection first.

Run inside the RECOVAR environment (it imports nothing from Scipion or the plugin)::

    python recovar_launcher.py [--record RUN.json] [--no-correction] COMMAND [ARGS...]

is ``recovar COMMAND ARGS...`` (RECOVAR's own dispatcher, error hints included) with one
change for the RECOVAR versions in :data:`CORRECTED_VERSIONS`: RECOVAR reconstructs the mean,
its half maps and every kernel-regression volume on a grid upsampled ``u`` times (u = 2), and
its JAX back-projection (``recovar.core.relion_interp.backproject``, the CPU path) scatters
the image frequencies onto that grid unscaled, so those volumes come out magnified ``u``
times about the box centre. RECOVAR's CUDA kernel multiplies the frequencies (and the radius
cut-off ``max_r``) by ``u``; so does the replacement installed here. It passes the rotation
matrices multiplied by ``u``: the back-projection uses them only to place ``[k0, k1, 0] @ R``,
so this scales the frequencies and leaves the radius test on the unscaled frequencies against
the unscaled ``max_r``, which is the CUDA kernel's test on both scaled. ``recovar.core.slicing``
looks ``relion_interp.backproject`` up at call time, so every caller gets it. The CUDA path
(a GPU with RECOVAR's kernels) never calls it and runs unchanged. Any other RECOVAR version
runs unpatched, with a warning.

``--record`` writes a JSON file (under a temporary name, then renamed) when the command ends:
versions, JAX backend and devices, the correction and how often it acted, peak memory and CPU
time of the process, exit status.
"""
import argparse
import json
import os
import resource
import sys
import time

#: RECOVAR versions on which the correction was checked against the truth (simulated maps).
CORRECTED_VERSIONS = ("1.0.5",)
PREFIX = "scipion-reciprocal:"


class BackprojectionCorrection:
    """Replaces ``relion_interp.backproject`` by a version that scales image frequencies to
    the volume grid, as RECOVAR's CUDA kernel does."""

    def __init__(self, relion_interp):
        self.module = relion_interp
        self.original = relion_interp.backproject
        self.corrected_calls = 0
        self.factors = set()

    def install(self):
        self.module.backproject = self.backproject
        return self

    def uninstall(self):
        self.module.backproject = self.original

    def backproject(self, imgs, rotations, image_shape, volume_shape, *args, **kwargs):
        factor = int(volume_shape[0]) // int(image_shape[0])
        if factor > 1:
            import jax.numpy as jnp
            rotations = jnp.asarray(rotations) * factor
            self.corrected_calls += 1
            self.factors.add(factor)
        return self.original(imgs, rotations, image_shape, volume_shape, *args, **kwargs)

    def summary(self):
        return {"corrected_calls": self.corrected_calls, "upsampling_factors": sorted(self.factors)}


def installed_version(package):
    from importlib import metadata
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def jax_platform():
    """JAX's default backend and device names (JAX is imported by RECOVAR anyway)."""
    try:
        import jax
        return jax.default_backend(), [str(d) for d in jax.devices()]
    except Exception as exc:  # a broken CUDA install must not hide RECOVAR's own error
        return "unknown (%s)" % exc, []


def peak_memory_gb():
    """Peak resident memory of this process (Linux: ru_maxrss in kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_json(path, data):
    """Write ``data`` to ``path`` under a temporary name, then rename it into place."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1, default=str)
        handle.write("\n")
    os.replace(tmp, path)


def prepare_correction(enabled, log=print):
    """Install the correction where it applies; return ``(correction or None, record dict)``."""
    version = installed_version("recovar")
    record = {"checked_versions": list(CORRECTED_VERSIONS)}
    if not enabled:
        record.update(status="disabled", reason="--no-correction")
        log("%s the CPU back-projection correction is disabled (--no-correction): volumes "
            "computed on the CPU by RECOVAR %s come out magnified about the box centre."
            % (PREFIX, version))
        return None, record
    if version not in CORRECTED_VERSIONS:
        record.update(status="not applied", reason="RECOVAR %s is not a checked version" % version)
        log("%s WARNING: RECOVAR %s runs unpatched: the plugin's CPU back-projection correction "
            "was checked on RECOVAR %s only. If this version still has the bug, volumes computed "
            "on the CPU come out magnified about the box centre; a GPU (CUDA path) is not "
            "affected." % (PREFIX, version, ", ".join(CORRECTED_VERSIONS)))
        return None, record
    from recovar.core import relion_interp
    correction = BackprojectionCorrection(relion_interp).install()
    record.update(status="installed", target="recovar.core.relion_interp.backproject")
    log("%s RECOVAR %s: its JAX back-projection (recovar.core.relion_interp.backproject, the CPU "
        "path) is corrected to scale image frequencies and max_r by the volume upsampling factor,"
        " as its CUDA kernel does; without it CPU volumes come out magnified 2x." % (PREFIX, version))
    return correction, record


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="recovar_launcher.py", description=__doc__.split("\n\n")[0],
        usage="%(prog)s [--record FILE] [--no-correction] COMMAND [ARGS...]")
    parser.add_argument("--record", help="JSON file written when the command ends")
    parser.add_argument("--no-correction", action="store_true",
                        help="run RECOVAR unpatched (for comparison)")
    parser.add_argument("command", help="a RECOVAR command (pipeline, analyze, ...)")
    parser.add_argument("arguments", nargs=argparse.REMAINDER)
    return parser.parse_args(argv)


def main(argv=None):
    # The launcher's folder must not shadow anything RECOVAR imports.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started, wall = time.strftime("%Y-%m-%dT%H:%M:%S"), time.time()
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    correction, correction_record = prepare_correction(not args.no_correction, log)
    record = {"command": args.command, "arguments": args.arguments, "started": started,
              "versions": {p: installed_version(p) for p in ("recovar", "jax", "jaxlib", "numpy")},
              "correction": correction_record}
    status = 1
    try:
        from recovar import command_line
        sys.argv = ["recovar", args.command] + list(args.arguments)
        command_line.main_commands()
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        backend, devices = jax_platform()
        if correction is not None:
            correction_record.update(correction.summary())
            log("%s corrected %d back-projection call(s) on an upsampled grid (JAX backend %s)%s"
                % (PREFIX, correction.corrected_calls, backend,
                   "" if correction.corrected_calls else ": RECOVAR took its CUDA path or "
                   "reconstructed no volume"))
        record.update(status=status, jax_backend=backend, devices=devices,
                      finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
                      wall_seconds=round(time.time() - wall, 1),
                      cpu_seconds=round(cpu_seconds(), 1),
                      peak_rss_gb=round(peak_memory_gb(), 3))
        if args.record:
            write_json(args.record, record)
    return status


if __name__ == "__main__":
    sys.exit(main())
