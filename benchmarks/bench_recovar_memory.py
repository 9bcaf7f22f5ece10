"""RECOVAR's peak memory on the CPU against the plugin's estimate (core.recovar_memory).

For each size (particles x box) simulates two states (SNR 1), converts them, runs ``recovar
pipeline --zdim 2`` (and, with ``--kernel``, ``compute_state`` at one point with 4 bins) through
the plugin's launcher on the CPU, and prints the launcher's measured peak resident memory
(``ru_maxrss``), CPU time, RECOVAR's memory budget and the estimate for the same run, with
their ratio. The RECOVAR environment is found as the tests find it. Runs take minutes each;
wrap them in ``flock`` on a shared machine.

Usage::

    python benchmarks/bench_recovar_memory.py [--sizes 300x24,300x32] [--kernel]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from scipion_reciprocal.core import recovar_memory as mem  # noqa: E402
from scipion_reciprocal.formats import cryodrgn  # noqa: E402
from scipion_reciprocal.formats.relion import merge_optics  # noqa: E402
from scipion_reciprocal.formats.star import read_particles_star  # noqa: E402
from scipion_reciprocal.simulate.molecule import molecule_maps  # noqa: E402
from scipion_reciprocal.simulate.particles import (simulate_particles,  # noqa: E402
                                                   write_particle_dataset)
from scipion_reciprocal.tests.test_recovar_backend import LAUNCHER, PREFIX  # noqa: E402

OUTPUT = HERE / 'output'
PIXEL_SIZE = 4.0


def run_launcher(args, log):
    """Run the launcher on the CPU; return its record."""
    record = Path(f'{log}.json')
    env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_PYTHON_CLIENT_PREALLOCATE='false',
               CUDA_VISIBLE_DEVICES='')
    env.pop('PYTHONPATH', None)
    with open(log, 'w') as fh:
        subprocess.run([str(PREFIX / 'bin' / 'python'), str(LAUNCHER), '--record', str(record)]
                       + [str(a) for a in args], env=env, stdout=fh, stderr=subprocess.STDOUT,
                       check=True)
    return json.loads(record.read_text())


def budget(folder):
    plan = json.loads((Path(folder) / '_diagnostics' / 'memory_plan.json').read_text())
    return plan['budget']['effective_budget_gb'], plan['n_pcs_to_compute']


def measure(root, n, box, kernel):
    maps = molecule_maps(n_states=2, box=box, pixel_size=PIXEL_SIZE, seed=0)
    sim = simulate_particles(maps, n_particles=n, pixel_size=PIXEL_SIZE, snr=1.0, seed=1)
    star = write_particle_dataset(root / 'project', sim)
    table = read_particles_star(star)
    inputs = cryodrgn.write_recovar_inputs(merge_optics(table.particles, table.optics),
                                           root / 'inputs', PIXEL_SIZE, box,
                                           image_root=root / 'project')
    rows = []
    pipeline = root / 'pipeline'
    record = run_launcher(['pipeline', inputs.particles, '--poses', inputs.poses, '--ctf',
                           inputs.ctf, '--mask', 'sphere', '--zdim', 2, '--uninvert-data',
                           'true', '--accept-cpu', '-o', pipeline], root / 'pipeline.log')
    gb, n_pcs = budget(pipeline)
    request = mem.MemoryRequest('pipeline', box, n, downsample=0, budget_gb=gb)
    rows.append(('pipeline', record, gb, n_pcs, mem.estimate(request, None, 2 * gb)))
    if kernel:
        np.savetxt(root / 'point.txt', np.zeros((1, 2)))
        record = run_launcher(['compute_state', pipeline, '--latent-points', root / 'point.txt',
                               '--n-bins', 4, '-o', root / 'state'], root / 'state.log')
        request = mem.MemoryRequest('compute_state', box, n, n_bins=4, budget_gb=gb)
        rows.append(('compute_state', record, gb, n_pcs, mem.estimate(request, None, 2 * gb)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', default='300x24,300x32',
                        help='particles x box, comma separated')
    parser.add_argument('--kernel', action='store_true', help='also compute_state, 4 bins')
    args = parser.parse_args()
    if PREFIX is None:
        sys.exit('RECOVAR environment not installed')
    OUTPUT.mkdir(exist_ok=True)
    print('%-14s %9s %8s %8s %10s %10s %6s' % ('command', 'size', 'budget', 'n_pcs',
                                             'measured', 'estimate', 'ratio'))
    for size in args.sizes.split(','):
        n, box = (int(v) for v in size.lower().split('x'))
        root = Path(tempfile.mkdtemp(prefix='recovar-memory-', dir=OUTPUT))
        try:
            for command, record, gb, n_pcs, estimated in measure(root, n, box, args.kernel):
                print('%-14s %9s %6.0f GB %8d %7.2f GB %7.2f GB %6.2f   (CPU %.0f s)'
                      % (command, size, gb, n_pcs, record['peak_rss_gb'], estimated.host_gb,
                         estimated.host_gb / record['peak_rss_gb'], record['cpu_seconds']),
                      flush=True)
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
    main()
