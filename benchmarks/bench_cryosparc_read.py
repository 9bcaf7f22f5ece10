"""Benchmark: reading cryoSPARC classification jobs of 1,000,000 particles (issue 13).

Generates once (cached under ``benchmarks/output/cryosparc/``) a cryoSPARC project with
``--jobs`` heterogeneous refinements of the same particles, in cryoSPARC's layout: per job a
final ``J<n>_00020_particles.cs`` (``uid``, ``alignments3D/*`` with the class, and the
per-class ``alignments_class_<k>/*`` fields of heterogeneous refinement) and a passthrough
``J<n>_passthrough_particles_all_classes.cs`` (``blob``, ``ctf``, ``location``), rows of the
two files in different orders. Then, each in its own process (own peak memory), times
reading one job's classes, class posteriors and particle identities (uid, stack + index):

(a) this package: ``classifications_from_inputs`` (memory-mapped files, only the fields it
    needs, passthrough rows matched by uid);
(b) the usual way with numpy and pandas: ``numpy.load`` of both files, DataFrames of the
    needed columns, ``merge`` on uid;
(c) cryosparc-tools (when importable; ``--cryosparc-tools DIR`` adds an unpacked wheel to
    the path): ``Dataset.load`` of both files and ``innerjoin``;

and the whole analysis of the ``--jobs`` jobs as the command line runs it without plots and
subsets (read, match, matrices, tables), to show which share reading takes; and writing one
job's per-class ``.cs`` subsets (every field of both files) next to a plain copy of the same
number of bytes. Prints wall and CPU (user+sys) seconds, peak memory and ratios. Usage::

    python benchmarks/bench_cryosparc_read.py                      # 1,000,000 x 4 jobs x 8
    python benchmarks/bench_cryosparc_read.py --particles 100000 --cryosparc-tools /tmp/cst
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

PER_MICROGRAPH = 200
ITERATION = 20


def relion_like_table(n, seed):
    """RELION particle columns the simulator turns into cryoSPARC fields (vectorised)."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    n_mics = -(-n // PER_MICROGRAPH)
    mics = np.array([f'MotionCorr/job002/Movies/FoilHole_{m:07d}_Data.mrc'
                     for m in range(n_mics)], dtype=object)
    mic = np.arange(n) // PER_MICROGRAPH
    return pd.DataFrame({
        'rlnCoordinateX': rng.uniform(100, 3900, n), 'rlnCoordinateY': rng.uniform(100, 3900, n),
        'rlnMicrographName': mics[mic], 'rlnOpticsGroup': np.ones(n, dtype=int),
        'rlnDefocusU': rng.uniform(1e4, 2.5e4, n), 'rlnDefocusV': rng.uniform(1e4, 2.5e4, n),
        'rlnDefocusAngle': rng.uniform(0, 180, n), 'rlnAngleRot': rng.uniform(-180, 180, n),
        'rlnAngleTilt': rng.uniform(0, 180, n), 'rlnAnglePsi': rng.uniform(-180, 180, n),
        'rlnOriginXAngst': rng.uniform(-5, 5, n), 'rlnOriginYAngst': rng.uniform(-5, 5, n)})


def generate(folder, n, n_classes, n_jobs, seed=0):
    """Write (or reuse) the project; returns the job folders."""
    import pandas as pd
    from scipion_reciprocal.simulate.cryosparc import (alignment_rows, join_fields,
                                                       particle_rows, write_cs_job)
    settings = {'particles': n, 'classes': n_classes, 'jobs': n_jobs, 'seed': seed,
                'version': 1}
    jobs = [folder / f'J{30 + i}' for i in range(n_jobs)]
    stamp = folder / 'settings.json'
    if stamp.exists() and json.loads(stamp.read_text()) == settings and \
            all((j / 'job.json').exists() for j in jobs):
        return jobs
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    start = time.time()
    table = relion_like_table(n, seed)
    optics = pd.DataFrame({'rlnOpticsGroup': [1], 'rlnImagePixelSize': [1.1],
                           'rlnImageSize': [256], 'rlnMicrographOriginalPixelSize': [1.1],
                           'rlnVoltage': [300.0], 'rlnSphericalAberration': [2.7],
                           'rlnAmplitudeContrast': [0.1]})
    rng = np.random.default_rng(seed)
    uids = rng.permutation(rng.integers(0, 2 ** 63, n, dtype=np.uint64))
    mic = np.arange(n) // PER_MICROGRAPH
    stacks = np.array([f'J2/extract/{m:021d}_FoilHole_{m:07d}_Data_particles.mrc'
                       for m in range(mic[-1] + 1)], dtype=object)[mic]
    base = particle_rows(table, optics, uids, stacks, np.arange(n) % PER_MICROGRAPH,
                         table['rlnMicrographName'], (4096, 4096), flip_y=True)
    states = rng.choice(n_classes, n, p=np.linspace(2, 1, n_classes) / np.linspace(
        2, 1, n_classes).sum())
    for i, job in enumerate(jobs):
        labels = np.where(rng.random(n) < 0.15, rng.integers(0, n_classes, n), states)
        order = rng.permutation(n)
        main = join_fields({'uid': uids[order]}, alignment_rows(
            table.iloc[order], labels[order], 'alignments3D', 2.2, n_classes=n_classes, seed=i))
        passthrough = base[rng.permutation(n)]
        write_cs_job(folder, job.name, 'hetero_refine', [
            ('particles_all_classes', 'alignments3D', False,
             f'{job.name}_{ITERATION:05d}_particles.cs', main),
            ('particles_all_classes', 'blob', True,
             f'{job.name}_passthrough_particles_all_classes.cs', passthrough)])
        sizes = sum(p.stat().st_size for p in job.glob('*.cs')) / 1e6
        print(f'  generated {job} ({sizes:.0f} MB) in {time.time() - start:.1f} s', flush=True)
    stamp.write_text(json.dumps(settings))
    return jobs


def _files(job):
    return (job / f'{job.name}_{ITERATION:05d}_particles.cs',
            job / f'{job.name}_passthrough_particles_all_classes.cs')


# ---------------------------------------------------------------------- implementations

def read_ours(job):
    from scipion_reciprocal.core.classification_inputs import classifications_from_inputs
    (clf,), _ = classifications_from_inputs([job], key='image', read_confidence=True)
    return {'rows': len(clf), 'classes': int(clf.classes.max()),
            'images': len(clf.keys.labels)}


def read_numpy_pandas(job):
    import pandas as pd
    main_file, passthrough_file = _files(job)
    main, passthrough = np.load(main_file), np.load(passthrough_file)
    classes = pd.DataFrame({'uid': main['uid'], 'class': main['alignments3D/class'] + 1,
                            'posterior': main['alignments3D/class_posterior']})
    where = pd.DataFrame({'uid': passthrough['uid'],
                          'path': pd.Series(passthrough['blob/path']).str.decode('utf-8'),
                          'idx': passthrough['blob/idx'] + 1})
    table = classes.merge(where, on='uid', how='left', sort=False)
    return {'rows': len(table), 'classes': int(table['class'].max()),
            'images': int(table['path'].nunique())}


def read_cryosparc_tools(job):
    from cryosparc.dataset import Dataset
    main_file, passthrough_file = _files(job)
    data = Dataset.load(main_file).innerjoin(Dataset.load(passthrough_file))
    classes = np.asarray(data['alignments3D/class']) + 1
    paths = np.asarray(data['blob/path'])
    return {'rows': len(data), 'classes': int(classes.max()),
            'images': len(set(paths.tolist()))}


def analysis(jobs, outdir):
    """Read, match and tabulate as ``reciprocal --inputs ... --no-plots --no-subsets``."""
    from scipion_reciprocal.core.classification_inputs import classifications_from_inputs
    from scipion_reciprocal.core.reciprocal import reciprocal_analysis
    from scipion_reciprocal.core.reciprocal_io import write_results
    stages, wall, cpu = [], time.perf_counter(), time.process_time()

    def lap(name):
        nonlocal wall, cpu
        stages.append((name, time.perf_counter() - wall, time.process_time() - cpu))
        wall, cpu = time.perf_counter(), time.process_time()

    classifications, note = classifications_from_inputs(jobs, read_confidence=True)
    lap(f'read {len(jobs)} jobs + choose the key ({note.split(" (")[0]})')
    result = reciprocal_analysis(classifications, min_confidence=0.5)
    lap('match + matrices + agreement + consensus')
    write_results(result, outdir, subsets=False)
    lap('tables (CSV, summary)')
    return stages


def write_cs_subsets(job, outdir):
    """One job's per-class .cs files (every field of both files, rows verbatim)."""
    from scipion_reciprocal.formats.cryosparc_jobs import find_cs_job
    particles = find_cs_job(job.parent, job.name).open()
    classes = particles.column('alignments3D/class')
    outdir.mkdir(parents=True, exist_ok=True)
    written = 0
    start = time.perf_counter()
    for k in np.unique(classes):
        path = outdir / f'{job.name}_class{k + 1}.cs'
        particles.write_subset(path, np.flatnonzero(classes == k))
        written += path.stat().st_size
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    shutil.copyfile(_files(job)[1], outdir / 'copy.bin')       # a plain copy of ~as many bytes
    copied = (outdir / 'copy.bin').stat().st_size
    while copied < written:
        with open(outdir / 'copy.bin', 'ab') as fh, open(_files(job)[0], 'rb') as src:
            copied += fh.write(src.read(written - copied))
    return {'bytes': written, 'seconds': seconds, 'copy_seconds': time.perf_counter() - start}


def _imports(stage):
    """Import what a stage uses before it is timed (times are of the work, not imports)."""
    import pandas  # noqa: F401
    if stage == 'cryosparc-tools':
        import cryosparc.dataset  # noqa: F401
    else:
        import scipion_reciprocal.core.classification_inputs  # noqa: F401
        import scipion_reciprocal.core.reciprocal_io  # noqa: F401


def child(stage, jobs, outdir):
    """Run one stage in this process and print its figures as JSON."""
    _imports(stage)
    wall, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    base = usage.ru_maxrss / 1024
    if stage == 'analysis':
        info = {'stages': analysis(jobs, outdir)}
    elif stage == 'subsets':
        info = write_cs_subsets(jobs[0], outdir)
    else:
        info = {'ours': read_ours, 'numpy+pandas': read_numpy_pandas,
                'cryosparc-tools': read_cryosparc_tools}[stage](jobs[0])
    after = resource.getrusage(resource.RUSAGE_SELF)
    info.update(wall=time.perf_counter() - wall,
                cpu=after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime,
                peak_rss_mb=after.ru_maxrss / 1024, imports_rss_mb=base)
    print(json.dumps(info))


def in_process(stage, jobs, outdir, extra_path=None):
    env = dict(os.environ)
    if extra_path:
        env['PYTHONPATH'] = os.pathsep.join([extra_path, env.get('PYTHONPATH', '')])
    command = [sys.executable, __file__, '--child', stage, '--outdir', str(outdir),
               *[str(j) for j in jobs]]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode:
        return {'error': done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--particles', type=int, default=1_000_000)
    parser.add_argument('--classes', type=int, default=8)
    parser.add_argument('--jobs', type=int, default=4)
    parser.add_argument('--cryosparc-tools', metavar='DIR',
                        help='folder holding the cryosparc package (an unpacked wheel of '
                             'cryosparc-tools) when it is not installed')
    parser.add_argument('--child')
    parser.add_argument('--outdir')
    parser.add_argument('paths', nargs='*')
    args = parser.parse_args()
    folder = HERE / 'output' / 'cryosparc' / f'n{args.particles}_k{args.classes}_j{args.jobs}'
    if args.child == 'generate':
        generate(folder, args.particles, args.classes, args.jobs)
        return
    if args.child:
        child(args.child, [Path(p) for p in args.paths], Path(args.outdir))
        return
    # generated in a process of its own: the measuring processes do not start from its memory
    subprocess.run([sys.executable, __file__, '--child', 'generate', '--particles',
                    str(args.particles), '--classes', str(args.classes), '--jobs',
                    str(args.jobs)], check=True)
    jobs = [folder / f'J{30 + i}' for i in range(args.jobs)]
    scratch = HERE / 'output' / 'cryosparc' / 'scratch'
    print(f'\n{args.particles:,} particles; one job = main + passthrough files, '
          f'{sum(p.stat().st_size for p in _files(jobs[0])) / 1e6:.0f} MB')
    results = {}
    for stage in ('ours', 'numpy+pandas', 'cryosparc-tools'):
        results[stage] = in_process(stage, jobs, scratch, args.cryosparc_tools)
        r = results[stage]
        if 'error' in r:
            print(f'  read one job, {stage:16s} not run: {r["error"]}')
            continue
        print(f'  read one job, {stage:16s} {r["wall"]:6.2f} s wall, {r["cpu"]:6.2f} s CPU, '
              f'peak {r["peak_rss_mb"]:6.0f} MB ({r["imports_rss_mb"]:.0f} after imports; '
              f'{r["rows"]:,} rows, {r["classes"]} classes, {r["images"]:,} stacks)')
    ours = results['ours']['wall']
    for stage in ('numpy+pandas', 'cryosparc-tools'):
        if 'error' not in results[stage]:
            print(f'  {stage} / ours: {results[stage]["wall"] / ours:.1f}x wall, '
                  f'{results[stage]["peak_rss_mb"] / results["ours"]["peak_rss_mb"]:.1f}x '
                  f'memory')
    shutil.rmtree(scratch, ignore_errors=True)
    whole = in_process('analysis', jobs, scratch / 'analysis')
    print(f'\nanalysis of {args.jobs} jobs (command line without plots and subsets): '
          f'{whole["wall"]:.2f} s wall, {whole["cpu"]:.2f} s CPU, peak '
          f'{whole["peak_rss_mb"]:.0f} MB')
    for name, wall, cpu in whole['stages']:
        print(f'  {name:55s} {wall:6.2f} s wall {cpu:6.2f} s CPU '
              f'({100 * wall / whole["wall"]:.0f}%)')
    subsets = in_process('subsets', jobs, scratch / 'subsets')
    print(f'\nper-class .cs subsets of one job (every field): {subsets["bytes"] / 1e6:.0f} MB in '
          f'{subsets["seconds"]:.2f} s; a plain copy of as many bytes {subsets["copy_seconds"]:.2f} '
          f's; peak {subsets["peak_rss_mb"]:.0f} MB')
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == '__main__':
    main()
