"""Benchmark of the reciprocal analysis of classifications, end to end (issue 15 item 8).

Generates once (cached under ``benchmarks/output/``) RELION 3.1 ``run_it025_data.star`` files
of N particles x K classes for several jobs, formatted as RELION writes them (25 columns, as
in a real Class3D data.star, 416 MB for a million particles), then runs, in the same run and
each in its own process (own peak memory, CPU time of the process and its children):

(a) ``scipion-reciprocal reciprocal`` end to end, as a user runs it (imports, reading, the
    analysis and verdict, every table, the per-class / intersection / stable / unstable STAR
    files, the figures, the manifest), ``--repeat`` times with the default ``--plots
    summary`` and once with ``--plots all``; best and median wall time;
(b) the same steps in one process with the stage of each (read, analysis, verdict, tables,
    subset STAR files; the figures drawn meanwhile in a forked process);
(c) a competent pandas version: ``starfile.read`` of every job, ``pd.merge`` on the image
    names and ``pd.crosstab`` per job pair, ``starfile.write`` of every per-class and
    intersection subset;
(d) the straightforward version: ``starfile.read``, Python sets of image names per class,
    pairwise set intersections, subsets written row by row with ``DataFrame.iterrows``.

(c) and (d) write the same per-class and intersection files as (a). Printed: stage times
(wall and CPU), peak resident memory, rows and bytes written, the ratios (c)/(a) and (d)/(a)
of wall time, and the disk's own speed on as many bytes (a plain copy of the inputs and a
plain ``write`` from memory) measured in the same run. Usage::

    python benchmarks/bench_reciprocal.py          # 1,000,000 particles x 4 jobs x 8 classes
    python benchmarks/bench_reciprocal.py --particles 100000 --skip-naive --skip-pandas
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from scipion_reciprocal.core.reciprocal import MIN_FRACTION, MIN_OVERLAP  # noqa: E402

COLUMNS = [  # (label, format): RELION 3.1 Class3D data.star columns and widths
    ('rlnCoordinateX', 'f6'), ('rlnCoordinateY', 'f6'), ('rlnClassNumber', 'd'),
    ('rlnAutopickFigureOfMerit', 'f6'), ('rlnAnglePsi', 'f5'), ('rlnImageName', 's'),
    ('rlnMicrographName', 's'), ('rlnOpticsGroup', 'd'), ('rlnCtfMaxResolution', 'f6'),
    ('rlnCtfFigureOfMerit', 'f6'), ('rlnDefocusU', 'f6'), ('rlnDefocusV', 'f6'),
    ('rlnDefocusAngle', 'f6'), ('rlnCtfBfactor', 'f6'), ('rlnCtfScalefactor', 'f6'),
    ('rlnPhaseShift', 'f6'), ('rlnGroupNumber', 'd'), ('rlnAngleRot', 'f5'),
    ('rlnAngleTilt', 'f6'), ('rlnOriginXAngst', 'f6'), ('rlnOriginYAngst', 'f6'),
    ('rlnNormCorrection', 'f6'), ('rlnLogLikeliContribution', 'f6'),
    ('rlnMaxValueProbDistribution', 'f6'), ('rlnNrOfSignificantSamples', 'd')]
OPTICS = ('opticsGroup1            1 mtf_k2_200kV.star     0.885000   200.000000     1.400000 '
          '    0.100000     1.770000          128            2 \n')
OPTICS_LABELS = ['rlnOpticsGroupName', 'rlnOpticsGroup', 'rlnMtfFileName',
                 'rlnMicrographOriginalPixelSize', 'rlnVoltage', 'rlnSphericalAberration',
                 'rlnAmplitudeContrast', 'rlnImagePixelSize', 'rlnImageSize',
                 'rlnImageDimensionality']
PER_MICROGRAPH = 200
STATE_WEIGHTS = np.array([0.25, 0.2, 0.15, 0.12, 0.1, 0.08, 0.06, 0.04])


# ---------------------------------------------------------------------- generation

def format_fixed(values, width, decimals):
    """Right-aligned ``%{width}.{decimals}f`` of many numbers as a (n, width) byte array."""
    scale = 10 ** decimals
    v = np.rint(np.asarray(values, dtype=np.float64) * scale).astype(np.int64)
    negative, mag = v < 0, np.abs(v)
    out = np.full((len(v), width), ord(' '), dtype=np.uint8)
    pos = width - 1
    frac, whole = mag % scale, mag // scale
    for _ in range(decimals):
        out[:, pos] = 48 + frac % 10
        frac //= 10
        pos -= 1
    if decimals:
        out[:, pos] = ord('.')
        pos -= 1
    digits = np.ones(len(v), dtype=np.int64)
    t = whole // 10
    while t.any():
        digits += t > 0
        t //= 10
    for k in range(int(digits.max())):
        rows = np.flatnonzero(k < digits)
        out[rows, pos - k] = 48 + (whole[rows] // 10 ** k) % 10
    rows = np.flatnonzero(negative)
    out[rows, pos - digits[rows]] = ord('-')
    return out


def text_matrix(strings):
    """Equal-length strings as a (n, width) byte array."""
    array = np.array([s.encode() for s in strings])
    return array.view(np.uint8).reshape(len(strings), array.dtype.itemsize)


def header():
    text = '\n# version 30001\n\ndata_optics\n\nloop_ \n'
    text += ''.join(f'_{c} #{i} \n' for i, c in enumerate(OPTICS_LABELS, 1))
    text += OPTICS + ' \n\n# version 30001\n\ndata_particles\n\nloop_ \n'
    text += ''.join(f'_{c} #{i} \n' for i, (c, _) in enumerate(COLUMNS, 1))
    return text.encode()


def job_labels(n, n_classes, n_jobs, seed):
    """True states and, per job, classes that follow them with job-specific noise."""
    rng = np.random.default_rng(seed)
    states = rng.choice(len(STATE_WEIGHTS), size=n, p=STATE_WEIGHTS) % n_classes
    labels = []
    for j in range(n_jobs):
        perm = rng.permutation(n_classes)
        noisy = rng.random(n) < 0.1 + 0.05 * j
        labels.append(np.where(noisy, rng.integers(0, n_classes, n), perm[states]) + 1)
    return labels


def write_job(path, labels, seed, order=None, chunk=100_000):
    """One data.star with RELION's fixed-width layout, written chunk by chunk; row r holds
    particle ``order[r]`` (default: particles in order)."""
    n = len(labels)
    rng = np.random.default_rng(seed)
    n_mics = -(-n // PER_MICROGRAPH)
    mic_text = text_matrix([f'MotionCorr/job002/Movies/20170629_{m:05d}_frameImage.mrc'
                            for m in range(n_mics)])
    stack_text = text_matrix([f'@Extract/job012/Movies/20170629_{m:05d}_frameImage.mrcs'
                              for m in range(n_mics)])
    defocus = rng.uniform(8000, 25000, n_mics)
    ctf = {'rlnCtfMaxResolution': rng.uniform(3, 6, n_mics),
           'rlnCtfFigureOfMerit': rng.uniform(0.05, 0.3, n_mics),
           'rlnDefocusU': defocus, 'rlnDefocusV': defocus - rng.uniform(0, 400, n_mics),
           'rlnDefocusAngle': rng.uniform(-90, 90, n_mics), 'rlnCtfBfactor': np.zeros(n_mics),
           'rlnCtfScalefactor': np.ones(n_mics), 'rlnPhaseShift': np.zeros(n_mics)}
    space = np.full((1, 1), ord(' '), dtype=np.uint8)
    with open(path, 'wb') as fh:
        fh.write(header())
        for start in range(0, n, chunk):
            rows = np.arange(start, min(start + chunk, n))
            if order is not None:
                rows = order[rows]
            m = len(rows)
            mic = rows // PER_MICROGRAPH
            per_particle = {
                'rlnCoordinateX': rng.uniform(100, 3900, m), 'rlnCoordinateY': rng.uniform(100, 3900, m),
                'rlnClassNumber': labels[rows], 'rlnAutopickFigureOfMerit': rng.normal(1.5, 0.6, m),
                'rlnAnglePsi': rng.uniform(-180, 180, m), 'rlnOpticsGroup': np.ones(m),
                'rlnGroupNumber': mic % 24 + 1, 'rlnAngleRot': rng.uniform(-180, 180, m),
                'rlnAngleTilt': rng.uniform(0, 180, m), 'rlnOriginXAngst': rng.normal(0, 5, m),
                'rlnOriginYAngst': rng.normal(0, 5, m), 'rlnNormCorrection': rng.normal(0.85, 0.04, m),
                'rlnLogLikeliContribution': rng.normal(10500, 60, m),
                'rlnMaxValueProbDistribution': rng.beta(5, 1.5, m),
                'rlnNrOfSignificantSamples': rng.integers(1, 40, m)}
            parts = []
            for label, fmt in COLUMNS:
                parts.append(np.broadcast_to(space, (m, 1)))
                if label == 'rlnImageName':
                    parts.append(format_fixed(rows % PER_MICROGRAPH + 1, 6, 0).copy())
                    parts[-1][parts[-1] == ord(' ')] = ord('0')
                    parts.append(stack_text[mic])
                elif label == 'rlnMicrographName':
                    parts.append(mic_text[mic])
                else:
                    values = ctf[label][mic] if label in ctf else per_particle[label]
                    parts.append(format_fixed(values, 12, 0 if fmt == 'd' else int(fmt[1])))
            parts.append(np.broadcast_to(np.frombuffer(b' \n', dtype=np.uint8), (m, 2)))
            fh.write(np.hstack(parts).tobytes())
        fh.write(b' \n')


def generate(folder, n, n_classes, n_jobs, seed=0, shuffle=False):
    """Data files of ``n_jobs`` jobs (cached: kept when they exist with the same settings).
    With ``shuffle``, every job after the first lists the particles in another order."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / 'settings.json'
    settings = {'particles': n, 'classes': n_classes, 'jobs': n_jobs, 'seed': seed, 'version': 1,
                'shuffle': shuffle}
    paths = [folder / 'Class3D' / f'job{85 + j:03d}' / 'run_it025_data.star' for j in range(n_jobs)]
    if stamp.exists() and json.loads(stamp.read_text()) == settings and all(p.exists() for p in paths):
        return paths
    labels = job_labels(n, n_classes, n_jobs, seed)
    for j, path in enumerate(paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        t = time.time()
        order = np.random.default_rng(seed + j).permutation(n) if shuffle and j else None
        write_job(path, labels[j], seed + 100 + j, order)
        print(f'  generated {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.time() - t:.1f} s',
              flush=True)
    stamp.write_text(json.dumps(settings))
    return paths


# ---------------------------------------------------------------------- implementations

class Clock:
    """Wall and CPU time of successive stages."""

    def __init__(self):
        self.stages = []
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self, name):
        wall, cpu = time.perf_counter(), time.process_time()
        self.stages.append((name, wall - self._wall, cpu - self._cpu))
        self._wall, self._cpu = wall, cpu


def _keep(count, size_a, size_b, min_overlap, min_fraction):
    best = max(count / size_a if size_a else 0.0, count / size_b if size_b else 0.0)
    return count >= max(min_overlap, 1) and best >= min_fraction


def run_naive(paths, outdir, min_overlap, min_fraction):
    """The straightforward implementation (Python sets, iterrows)."""
    import pandas as pd
    import starfile
    clock = Clock()
    names = [p.parent.name for p in paths]
    tables = {name: starfile.read(path) for name, path in zip(names, paths)}
    clock.lap('read (starfile, full tables)')
    sets = {}
    for name, doc in tables.items():
        df = doc['particles']
        sets[name] = {cls: set(df.loc[df['rlnClassNumber'] == cls, 'rlnImageName'])
                      for cls in sorted(df['rlnClassNumber'].unique())}
    clock.lap('sets of image names per class')
    rows, kept = [], []
    for a in names:
        for b in names:
            if a == b:
                continue
            for ca, sa in sets[a].items():
                for cb, sb in sets[b].items():
                    shared = sa & sb
                    rows.append((a, b, ca, cb, len(shared), len(shared) / len(sa)))
                    if a < b and _keep(len(shared), len(sa), len(sb), min_overlap, min_fraction):
                        kept.append((a, ca, b, cb, shared))
    table = pd.DataFrame(rows, columns=['job1', 'job2', 'class1', 'class2', 'value', 'fraction'])
    outdir.mkdir(parents=True, exist_ok=True)
    table.drop(columns='fraction').to_csv(outdir / 'counts_matrix.csv', index=False)
    table.drop(columns='value').rename(columns={'fraction': 'value'}).to_csv(
        outdir / 'fraction_matrix.csv', index=False)
    clock.lap('pairwise set intersections + CSV')
    n_rows = 0
    for name, doc in tables.items():
        df = doc['particles']
        for cls in sets[name]:
            n_rows += _write_iterrows(outdir / 'per_class' / f'{name}_class{cls}.star', doc,
                                      df[df['rlnClassNumber'] == cls])
    for a, ca, b, cb, shared in kept:
        df = tables[a]['particles']
        n_rows += _write_iterrows(outdir / 'intersections' / f'{a}_class{ca}_vs_{b}_class{cb}.star',
                                  tables[a], df[df['rlnImageName'].isin(shared)])
    clock.lap('subset STAR files (iterrows)')
    return clock.stages, {'rows_written': n_rows, 'intersections': len(kept)}


def _write_iterrows(path, doc, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    optics = doc['optics']
    with open(path, 'w') as fh:
        fh.write('\n# version 30001\n\ndata_optics\n\nloop_\n')
        fh.write(''.join(f'_{c} #{i}\n' for i, c in enumerate(optics.columns, 1)))
        for _, row in optics.iterrows():
            fh.write(' '.join(str(v) for v in row) + '\n')
        fh.write('\n# version 30001\n\ndata_particles\n\nloop_\n')
        fh.write(''.join(f'_{c} #{i}\n' for i, c in enumerate(rows.columns, 1)))
        for _, row in rows.iterrows():
            fh.write(' '.join(str(v) for v in row) + '\n')
    return len(rows)


def run_pandas(paths, outdir, min_overlap, min_fraction):
    """What a competent pandas user writes: starfile, merge + crosstab, starfile.write."""
    import pandas as pd
    import starfile
    clock = Clock()
    names = [p.parent.name for p in paths]
    tables = {name: starfile.read(path) for name, path in zip(names, paths)}
    clock.lap('read (starfile, full tables)')
    columns = ['rlnImageName', 'rlnClassNumber']
    counts, kept = [], []
    for a, b in combinations(names, 2):
        pa, pb = tables[a]['particles'], tables[b]['particles']
        merged = pa[columns].reset_index().merge(pb[columns], on='rlnImageName')
        table = pd.crosstab(merged['rlnClassNumber_x'], merged['rlnClassNumber_y'])
        long = table.stack().rename('value').reset_index()
        long.columns = ['class1', 'class2', 'value']
        counts += [long.assign(job1=a, job2=b),
                   long.rename(columns={'class1': 'class2', 'class2': 'class1'}).assign(job1=b,
                                                                                        job2=a)]
        sizes_a, sizes_b = pa['rlnClassNumber'].value_counts(), pb['rlnClassNumber'].value_counts()
        groups = merged.groupby(['rlnClassNumber_x', 'rlnClassNumber_y'])['index']
        for (ca, cb), rows in groups:
            if _keep(len(rows), sizes_a[ca], sizes_b[cb], min_overlap, min_fraction):
                kept.append((a, ca, b, cb, np.sort(rows.to_numpy())))
    outdir.mkdir(parents=True, exist_ok=True)
    pd.concat(counts)[['job1', 'job2', 'class1', 'class2', 'value']].to_csv(
        outdir / 'counts_matrix.csv', index=False)
    clock.lap('merge + crosstab per job pair + CSV')
    n_rows = 0
    for name, doc in tables.items():
        df = doc['particles']
        for cls, rows in df.groupby('rlnClassNumber'):
            n_rows += _write_starfile(outdir / 'per_class' / f'{name}_class{cls}.star', doc, rows)
    for a, ca, b, cb, rows in kept:
        n_rows += _write_starfile(outdir / 'intersections' / f'{a}_class{ca}_vs_{b}_class{cb}.star',
                                  tables[a], tables[a]['particles'].iloc[rows])
    clock.lap('subset STAR files (starfile.write)')
    return clock.stages, {'rows_written': n_rows, 'intersections': len(kept)}


def _write_starfile(path, doc, rows):
    import starfile
    path.parent.mkdir(parents=True, exist_ok=True)
    starfile.write({'optics': doc['optics'], 'particles': rows}, path)
    return len(rows)


def run_ours(paths, outdir, min_overlap, min_fraction):
    """This package, stage by stage, as the command line runs it."""
    from scipion_reciprocal.core.reciprocal import classifications_from_relion, reciprocal_analysis
    from scipion_reciprocal.core.reciprocal_io import write_results
    from scipion_reciprocal.core.verdict import class_map_correlations, consensus_verdict
    from scipion_reciprocal.formats.result_folder import ResultFolder
    from scipion_reciprocal.plotting.background import start_plots
    clock = Clock()
    jobs = ','.join(p.parent.name for p in paths)
    classifications = classifications_from_relion(jobs, jobs_dir=paths[0].parent.parent)
    clock.lap('read (image name + class columns)')
    result = reciprocal_analysis(classifications, min_overlap=min_overlap,
                                 min_fraction=min_fraction)
    clock.lap('matrices + agreement + stability + consensus')
    result.verdict = consensus_verdict(result, map_correlations=class_map_correlations(
        result, {c.name: None for c in classifications}))
    clock.lap('verdict')
    with ResultFolder(outdir) as out:
        drawing = start_plots(result, out, None, 'summary', processes=1)
        written = write_results(result, out)
        clock.lap('tables + subset STAR files (figures drawn meanwhile)')
        drawing.wait()
        clock.lap('waiting for the figures')
    clock.lap('manifest')
    files = [p for key in ('per_class', 'intersections', 'stability') for p in written[key]]
    return clock.stages, {'rows_written': int(sum(s.size for s in result.subsets)),
                          'intersections': len(written['intersections']),
                          'bytes_written': int(sum(p.stat().st_size for p in files))}


def run_cli(paths, outdir, min_overlap, min_fraction, plots='summary'):
    """``scipion-reciprocal reciprocal`` in a process of its own; wall and CPU time and peak
    memory of it and its children (the process drawing the figures)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [sys.executable, '-m', 'scipion_reciprocal.cli', 'reciprocal', '--class3d_dir',
               str(paths[0].parent.parent), '--jobs', ','.join(p.parent.name for p in paths),
               '--outdir', str(outdir), '--min-overlap', str(min_overlap), '--min-fraction',
               str(min_fraction), '--plots', plots]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          env=dict(os.environ, PYTHONPATH=str(HERE.parent)))
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f'the command line failed:\n{done.stderr}')
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {'wall': wall, 'user': after.ru_utime - before.ru_utime,
            'sys': after.ru_stime - before.ru_stime, 'peak_rss_mb': after.ru_maxrss / 1024}


def child(stage, paths, outdir, min_overlap, min_fraction, plots):
    """Run one implementation and print its figures as JSON (own process: own peak memory)."""
    paths = [Path(p) for p in paths]
    if stage == 'cli':
        print(json.dumps(run_cli(paths, Path(outdir), min_overlap, min_fraction, plots)))
        return
    run = {'ours': run_ours, 'naive': run_naive, 'pandas': run_pandas}[stage]
    stages, info = run(paths, Path(outdir), min_overlap, min_fraction)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    info['peak_rss_mb'] = max(usage.ru_maxrss, children.ru_maxrss) / 1024
    info['cpu'] = usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime
    print(json.dumps({'stages': stages, 'info': info}))


def in_process(stage, paths, outdir, args, plots='summary'):
    shutil.rmtree(outdir, ignore_errors=True)
    command = [sys.executable, __file__, '--child', stage, '--outdir', str(outdir),
               '--min-overlap', str(args.min_overlap), '--min-fraction', str(args.min_fraction),
               '--plots', plots, *[str(p) for p in paths]]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f'{stage} failed:\n{done.stderr}')
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_reference(folder, n_bytes, block=1 << 26):
    """Seconds to write ``n_bytes`` from memory with plain ``write`` calls (64 MB files)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = np.full(block, ord('x'), dtype=np.uint8)
    written, i = 0, 0
    start = time.perf_counter()
    while written < n_bytes:
        with open(folder / f'block{i}.bin', 'wb') as fh:
            fh.write(data)
        written += block
        i += 1
    return time.perf_counter() - start, written


def copy_reference(paths, folder, n_bytes):
    """Seconds to copy input files (cycling) until ``n_bytes`` are written."""
    folder.mkdir(parents=True, exist_ok=True)
    written, i = 0, 0
    start = time.perf_counter()
    while written < n_bytes:
        source = paths[i % len(paths)]
        shutil.copyfile(source, folder / f'copy{i}.star')
        written += source.stat().st_size
        i += 1
    return time.perf_counter() - start, written


def report(name, figures):
    total_wall = sum(s[1] for s in figures['stages'])
    print(f'\n{name}')
    for stage, wall, cpu in figures['stages']:
        print(f'  {stage:<56s} {wall:8.2f} s wall {cpu:8.2f} s CPU')
    print(f'  {"total":<56s} {total_wall:8.2f} s wall {figures["info"]["cpu"]:8.2f} s CPU '
          f'(with children)')
    print(f'  peak resident memory: {figures["info"]["peak_rss_mb"]:.0f} MB; rows written to subset '
          f'files: {figures["info"]["rows_written"]}; intersection files: '
          f'{figures["info"]["intersections"]}', flush=True)
    return total_wall


def report_cli(runs, plots):
    walls = sorted(r['wall'] for r in runs)
    cpus = sorted(r['user'] + r['sys'] for r in runs)
    print(f'  --plots {plots}: {len(runs)} runs, wall best {walls[0]:.2f} s, median '
          f'{np.median(walls):.2f} s; CPU (user + sys, with children) best {cpus[0]:.2f} s, '
          f'median {np.median(cpus):.2f} s; peak memory {max(r["peak_rss_mb"] for r in runs):.0f} MB',
          flush=True)
    return float(np.median(walls))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--particles', type=int, default=1_000_000)
    parser.add_argument('--jobs', type=int, default=4)
    parser.add_argument('--classes', type=int, default=8)
    parser.add_argument('--min-overlap', type=int, default=MIN_OVERLAP,
                        help='intersection files kept from this many particles (all versions; '
                             f'default {MIN_OVERLAP}, as the command line)')
    parser.add_argument('--min-fraction', type=float, default=MIN_FRACTION,
                        help='... and this fraction of a class (default '
                             f'{MIN_FRACTION:g}, as the command line)')
    parser.add_argument('--all-intersections', action='store_true',
                        help='every class pair that shares particles (--min-overlap 1 '
                             '--min-fraction 0)')
    parser.add_argument('--repeat', type=int, default=3, help='runs of the command line')
    parser.add_argument('--shuffle', action='store_true',
                        help='jobs after the first list the particles in other orders')
    parser.add_argument('--skip-naive', action='store_true')
    parser.add_argument('--skip-pandas', action='store_true')
    parser.add_argument('--workdir', default=str(HERE / 'output'))
    parser.add_argument('--child', choices=('cli', 'ours', 'naive', 'pandas'), help=argparse.SUPPRESS)
    parser.add_argument('--outdir', help=argparse.SUPPRESS)
    parser.add_argument('--plots', default='summary', help=argparse.SUPPRESS)
    parser.add_argument('paths', nargs='*', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.all_intersections:
        args.min_overlap, args.min_fraction = 1, 0.0
    if args.child:
        return child(args.child, args.paths, args.outdir, args.min_overlap, args.min_fraction,
                     args.plots)

    work = Path(args.workdir)
    data = work / f'data_{args.particles}x{args.jobs}x{args.classes}{"_shuffled" if args.shuffle else ""}'
    print(f'input: {args.particles} particles x {args.jobs} jobs x {args.classes} classes '
          f'(RELION 3.1 data.star, 25 columns) in {data}', flush=True)
    paths = generate(data, args.particles, args.classes, args.jobs, shuffle=args.shuffle)
    sizes = [p.stat().st_size for p in paths]
    print(f'  files: {", ".join(f"{s / 1e6:.0f} MB" for s in sizes)}; '
          f'{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}')
    for p in paths:     # every version reads from the page cache
        with open(p, 'rb') as fh:
            while fh.read(1 << 24):
                pass
    out = {name: work / f'result_{name}' for name in ('cli', 'ours', 'naive', 'pandas')}
    print('\nscipion-reciprocal reciprocal, end to end (a new process each run)')
    runs = [in_process('cli', paths, out['cli'], args) for _ in range(args.repeat)]
    t_cli = report_cli(runs, 'summary')
    report_cli([in_process('cli', paths, out['cli'], args, plots='all')], 'all')
    ours = in_process('ours', paths, out['ours'], args)
    report('ours, stage by stage (one process; the figures in a forked one)', ours)
    n_bytes = ours['info']['bytes_written']
    subset_wall = ours['stages'][3][1]
    copy_time, copied = copy_reference(paths, work / 'copy_reference', n_bytes)
    shutil.rmtree(work / 'copy_reference', ignore_errors=True)
    plain_time, plain = write_reference(work / 'copy_reference', n_bytes)
    shutil.rmtree(work / 'copy_reference', ignore_errors=True)
    print(f'  subset STAR files: {n_bytes / 1e6:.0f} MB (tables and files written in '
          f'{subset_wall:.2f} s)')
    print(f'  the disk on as many bytes: shutil.copyfile of the inputs {copy_time:.2f} s '
          f'({copied / 1e6 / copy_time:.0f} MB/s); write() from memory {plain_time:.2f} s '
          f'({plain / 1e6 / plain_time:.0f} MB/s)')
    for name, label in (('pandas', 'competent pandas (starfile.read, merge + crosstab, '
                                   'starfile.write)'),
                        ('naive', 'straightforward (starfile.read, sets, iterrows)')):
        if getattr(args, f'skip_{name}'):
            continue
        figures = in_process(name, paths, out[name], args)
        wall = report(label, figures)
        same = figures['info']['rows_written'] == ours['info']['rows_written']
        print(f'  same subset rows as ours: {same}; wall time {wall / t_cli:.1f}x the command '
              f'line\'s median (target for the seed tool: >= 20x)', flush=True)
    for folder in out.values():
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
