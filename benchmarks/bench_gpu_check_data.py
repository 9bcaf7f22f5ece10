"""Speed of the GPU check's data simulation, and what it predicts for the full check.

The full check (scripts/gpu-check.sh) simulates 20,000 particles of 128 px and 40
micrographs of 4096 px on the GPU machine's 16 cores. This measures, at a size that fits a
shared 2-core machine, the same code (``workflows.gpu_check.datasets``) in one process and
in ``--processes`` forked workers, and extrapolates linearly to the full plan::

    python benchmarks/bench_gpu_check_data.py [--particles 2000] [--micrographs 4] [--processes 2]

Projection work scales with the particles, micrograph work with the micrographs; the
projector of each state (~4 CPU-seconds at 128 px) is built once per state whatever the size.
The prediction for 16 cores assumes the workers scale perfectly and that the rest (noise,
writing) stays in one process: a lower bound on the GPU machine's wall time.
"""
import argparse
import dataclasses
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scipion_reciprocal.workflows.gpu_check import plan as plans  # noqa: E402
from scipion_reciprocal.workflows.gpu_check.datasets import (simulate_classifier_data,  # noqa: E402
                                                              simulate_recovar_data)


def timed(function, *args):
    """Wall and CPU seconds (this process and its finished children) of one call."""
    def cpu():
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    wall, used = time.perf_counter(), cpu()
    function(*args)
    return time.perf_counter() - wall, cpu() - used


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, default=2000)
    parser.add_argument("--micrographs", type=int, default=4,
                        help="micrographs of 4096 px (half for training, half for picking)")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    full = plans.FULL
    half = max(1, args.micrographs // 2)
    small = dataclasses.replace(full, particles=args.particles, training_micrographs=half,
                                picking_micrographs=half)
    root = Path(tempfile.mkdtemp(prefix="bench-gpu-check-data-"))
    try:
        rows = []
        for processes in (1, args.processes):
            folder = root / ("p%d" % processes)
            recovar = timed(simulate_recovar_data, folder / "recovar", small, processes)
            classifier = timed(simulate_classifier_data, folder / "classifier", small, processes)
            rows.append((processes, recovar, classifier))
            shutil.rmtree(folder)
        print("%d particles of %d px, %d micrographs of %d px (%d cores here)"
              % (small.particles, small.box, 2 * half, small.micrograph_size, os.cpu_count()))
        print("%-10s %24s %24s" % ("processes", "RECOVAR data wall/CPU s", "classifier wall/CPU s"))
        for processes, (rw, rc), (cw, cc) in rows:
            print("%-10d %11.1f / %-10.1f %11.1f / %-10.1f" % (processes, rw, rc, cw, cc))
        (_, (rw1, rc1), (cw1, cc1)), (_, (rwp, _), (cwp, _)) = rows
        print("speed-up with %d processes: RECOVAR data %.2fx, classifier data %.2fx"
              % (args.processes, rw1 / rwp, cw1 / cwp))
        # Fixed cost: one projector per state (measured ~4 CPU-s each at 128 px).
        fixed = 4.0 * full.n_states
        per_particle = max(rc1 - fixed, 0.0) / small.particles
        per_micrograph = cc1 / (2 * half)
        cores = 16
        recovar_full = fixed + per_particle * full.particles / cores
        classifier_full = per_micrograph * (full.training_micrographs
                                            + full.picking_micrographs) / cores
        print("predicted for the full plan on %d cores: RECOVAR data %.0f s (%d particles), "
              "classifier data %.0f s (%d micrographs); limits %d s and %d s"
              % (cores, recovar_full, full.particles, classifier_full,
                 full.training_micrographs + full.picking_micrographs,
                 full.phase(plans.SIMULATE_RECOVAR).limit,
                 full.phase(plans.SIMULATE_CLASSIFIER).limit))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
