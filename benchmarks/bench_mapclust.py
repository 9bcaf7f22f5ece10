"""Benchmark of map similarity clustering (issue 4).

Prints, each measured in this run:

(1) 50 maps of 128³, no alignment: the full similarity matrix by ``correlation_matrix``
    (streamed Gram matrix) and by ``run_map_clustering`` end to end, next to a plain loop of
    ``np.corrcoef`` over every pair of the same maps; the ratio.
(2) 100 maps of 256³ (6.7 GB of float32) on disk, generated once into
    ``benchmarks/output/mapclust_256/``: ``run_map_clustering`` without alignment in a child
    process, whose peak resident memory (``ru_maxrss``) is printed (goal: under 4 GB).
(3) 20 maps of 64³ (4 conformations x 5 copies, rotated, shifted, noisy), all pairs aligned:
    time per stage and whether the 4 conformations are recovered.

Usage::

    python benchmarks/bench_mapclust.py            # all three
    python benchmarks/bench_mapclust.py --quick    # skip (2)
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from scipion_reciprocal.core.mapsim import correlation_matrix, run_map_clustering  # noqa: E402
from scipion_reciprocal.formats.mrc import write_map  # noqa: E402
from scipion_reciprocal.simulate.molecule import molecule_maps, rotate_map  # noqa: E402

OUTPUT = HERE / 'output'


def noisy_copies(states, copies, noise, seed, pose=False):
    """``copies`` noisy copies of each state (optionally rotated and shifted), and their truth."""
    from scipy.spatial.transform import Rotation
    rng = np.random.default_rng(seed)
    maps, truth = [], []
    for c in range(copies):
        for s, state in enumerate(states):
            volume = state
            if pose and c:
                volume = rotate_map(state, Rotation.random(random_state=rng).as_matrix(),
                                    rng.uniform(-3, 3, 3))
            sigma = noise * float(volume.std())
            maps.append(volume + rng.normal(0.0, sigma, volume.shape).astype(np.float32))
            truth.append(s)
    return maps, np.array(truth)


def bench_small():
    print('(1) 50 maps of 128^3, no alignment')
    tic = time.perf_counter()
    states = molecule_maps(5, box=128, pixel_size=1.5, seed=0)
    maps, truth = noisy_copies(states, 10, 0.5, seed=1)
    print(f'    generated in {time.perf_counter() - tic:.1f} s')

    tic = time.perf_counter()
    ours = correlation_matrix(maps)
    t_ours = time.perf_counter() - tic
    tic = time.perf_counter()
    result = run_map_clustering(maps, voxel_sizes=1.5, align=False)
    t_run = time.perf_counter() - tic
    tic = time.perf_counter()
    naive = np.eye(len(maps))
    for i, j in combinations(range(len(maps)), 2):
        naive[i, j] = naive[j, i] = np.corrcoef(maps[i].ravel(), maps[j].ravel())[0, 1]
    t_naive = time.perf_counter() - tic
    from sklearn.metrics import adjusted_rand_score
    print(f'    correlation_matrix (streamed Gram):    {t_ours:7.2f} s')
    print(f'    run_map_clustering end to end:         {t_run:7.2f} s  '
          f'(similarity {result.timings["similarity"]:.2f} s, averages '
          f'{result.timings["aligned maps and averages"]:.2f} s)')
    print(f'    per-pair np.corrcoef loop (1225):      {t_naive:7.2f} s')
    print(f'    speed-up: {t_naive / t_ours:.1f}x (matrix), {t_naive / t_run:.1f}x (end to end); '
          f'max |difference| {np.abs(ours - naive).max():.2e}; adjusted Rand index '
          f'{adjusted_rand_score(truth, result.labels):.3f} ({result.k} clusters)')


def generate_large(folder, n_maps=100, box=256):
    folder.mkdir(parents=True, exist_ok=True)
    expected = box ** 3 * 4 + 1024
    paths = [folder / f'map_{i:03d}.mrc' for i in range(n_maps)]
    if all(p.exists() and p.stat().st_size == expected for p in paths):
        return paths
    tic = time.perf_counter()
    states = molecule_maps(4, box=box, pixel_size=1.0, seed=0)
    rng = np.random.default_rng(2)
    for i, path in enumerate(paths):
        state = states[i % 4]
        noise = rng.normal(0.0, 0.3 * float(state.std()), state.shape).astype(np.float32)
        write_map(path, state + noise, 1.0)
    print(f'    generated {n_maps} maps of {box}^3 in {time.perf_counter() - tic:.0f} s '
          f'into {folder}')
    return paths


def stream_child(folder):
    """Run in a child process: cluster the large maps, report timings and peak memory as JSON."""
    paths = sorted(Path(folder).glob('map_*.mrc'))
    work = Path(folder) / 'tmp'
    work.mkdir(exist_ok=True)
    tic = time.perf_counter()
    result = run_map_clustering(paths, align=False, workdir=str(work))
    wall = time.perf_counter() - tic
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    truth = np.arange(len(paths)) % 4
    from sklearn.metrics import adjusted_rand_score
    print(json.dumps({'wall': wall, 'peak_bytes': peak, 'timings': result.timings,
                      'k': int(result.k), 'ari': adjusted_rand_score(truth, result.labels)}))


def bench_large():
    print('(2) 100 maps of 256^3 (6.7 GB float32) streamed from disk, no alignment')
    folder = OUTPUT / 'mapclust_256'
    paths = generate_large(folder)
    size = sum(p.stat().st_size for p in paths)
    child = subprocess.run([sys.executable, __file__, '--stream-child', str(folder)],
                           capture_output=True, text=True, check=True)
    report = json.loads(child.stdout.strip().splitlines()[-1])
    print(f'    input on disk: {size / 1e9:.2f} GB')
    print(f'    run_map_clustering: {report["wall"]:.1f} s; '
          + ', '.join(f'{k} {v:.1f} s' for k, v in report['timings'].items() if k != 'total'))
    print(f'    peak resident memory (ru_maxrss of the child): {report["peak_bytes"] / 2**30:.2f} '
          f'GiB (goal < 4 GiB)')
    print(f'    {report["k"]} clusters, adjusted Rand index {report["ari"]:.3f} (4 states)')


def bench_alignment():
    print('(3) 20 maps of 64^3, every pair aligned (4 conformations x 5 copies, 4 of each '
          'rotated and shifted)')
    states = molecule_maps(4, box=64, pixel_size=2.0, seed=0)
    maps, truth = noisy_copies(states, 5, 0.2, seed=3, pose=True)
    tic = time.perf_counter()
    result = run_map_clustering(maps, voxel_sizes=2.0, align_mode='pairwise')
    wall = time.perf_counter() - tic
    from sklearn.metrics import adjusted_rand_score
    for stage, seconds in result.timings.items():
        print(f'    {stage:32s} {seconds:7.2f} s')
    pairs = len(maps) * (len(maps) - 1) // 2
    refine = result.timings['align: refine to reference'] + result.timings['align: refine pairs']
    print(f'    total {wall:.1f} s for {pairs} pairs ({refine / pairs * 1000:.0f} ms per pair '
          f'refined); adjusted Rand index {adjusted_rand_score(truth, result.labels):.3f} '
          f'({result.k} clusters)')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='skip (2), the 6.7 GB run')
    parser.add_argument('--stream-child', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stream_child:
        stream_child(args.stream_child)
        return
    print(f'{os.cpu_count()} CPU cores; numpy {np.__version__}')
    bench_small()
    if not args.quick:
        bench_large()
    bench_alignment()


if __name__ == '__main__':
    main()
