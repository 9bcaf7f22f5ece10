"""Benchmark of STAR reading and writing on a large particle table: is the fast path needed?

On one RELION 3.1 ``run_it025_data.star`` of N particles (the files of ``bench_reciprocal.py``:
25 columns, 416 MB for a million particles), in the same run and each in its own process
(own CPU time and peak memory):

reading the two columns the reciprocal analysis needs (``rlnImageName``, ``rlnClassNumber``)
  (a) :class:`~scipion_reciprocal.formats.star.StarTable` (the fast path: mapped file, one
      vectorised pass, only those columns converted);
  (b) pandas' C reader on the loop body: ``pd.read_csv(body, sep=r'\\s+', header=None,
      usecols=[...])``;
  (c) ``starfile.read`` of the whole file (what :func:`read_star` does).
writing the 8 per-class subsets of the file
  (a) ``StarTable.write_subset``: the rows copied verbatim;
  (b) ``starfile.write`` of each subset of the table ``starfile.read`` gave;
  plus ``shutil.copyfile`` of as many bytes (the disk's own speed).
writing a whole table of N rows (16 float, 4 integer and 2 text columns)
  (a) :func:`~scipion_reciprocal.formats.star.write_star` (the one writer);
  (b) ``starfile.write``.

Usage::

    python benchmarks/bench_star.py                     # 1,000,000 particles
    python benchmarks/bench_star.py --particles 200000
"""
import argparse
import io
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
sys.path.insert(0, str(HERE))

import bench_reciprocal  # noqa: E402  (the generated RELION files)

COLUMNS = ['rlnImageName', 'rlnClassNumber']


def read_ours(path, _):
    from scipion_reciprocal.formats.star import StarTable
    with StarTable.open(path) as table:
        values = table.read_raw(COLUMNS, kinds={'rlnImageName': 'text', 'rlnClassNumber': 'int'})
    return {'rows': len(values['rlnClassNumber']), 'sum': int(values['rlnClassNumber'].sum())}


def read_pandas(path, _):
    import pandas as pd
    from scipion_reciprocal.formats.star import StarTable
    with StarTable.open(path) as table:     # where the loop body starts, and its labels
        header, labels = len(table.header), table.columns
    with open(path, 'rb') as fh:
        fh.seek(header)
        body = fh.read()
    frame = pd.read_csv(io.BytesIO(body), sep=r'\s+', header=None, engine='c',
                        usecols=[labels.index(c) for c in COLUMNS], dtype={
                            labels.index('rlnImageName'): str})
    classes = frame[labels.index('rlnClassNumber')].to_numpy()
    return {'rows': len(classes), 'sum': int(classes.sum())}


def read_starfile(path, _):
    import starfile
    classes = starfile.read(path)['particles']['rlnClassNumber'].to_numpy()
    return {'rows': len(classes), 'sum': int(classes.sum())}


def subsets_ours(path, outdir):
    from scipion_reciprocal.formats.star import StarTable
    with StarTable.open(path) as table:
        classes = table.read_raw(['rlnClassNumber'])['rlnClassNumber']
        for k in np.unique(classes):
            table.write_subset(outdir / f'class{k}.star', np.flatnonzero(classes == k))
    return {'bytes': sum(p.stat().st_size for p in outdir.iterdir())}


def subsets_starfile(path, outdir):
    import starfile
    doc = starfile.read(path)
    particles = doc['particles']
    for k, rows in particles.groupby('rlnClassNumber'):
        starfile.write({'optics': doc['optics'], 'particles': rows}, outdir / f'class{k}.star')
    return {'bytes': sum(p.stat().st_size for p in outdir.iterdir())}


def _table(n):
    import pandas as pd
    rng = np.random.default_rng(0)
    table = {f'rlnValue{i}': rng.uniform(-1000, 1000, n) for i in range(16)}
    table.update({f'rlnCount{i}': rng.integers(0, 10 ** (i + 1), n) for i in range(4)})
    mic = np.arange(n) // 200
    table['rlnImageName'] = [f'{i % 200 + 1:06d}@Extract/job012/Movies/m{m:05d}.mrcs'
                             for i, m in enumerate(mic)]
    table['rlnMicrographName'] = [f'MotionCorr/job002/Movies/m{m:05d}.mrc' for m in mic]
    return pd.DataFrame(table)


def write_ours(n, outdir):
    from scipion_reciprocal.formats.star import write_star
    table = _table(n)
    start = time.perf_counter()
    write_star(outdir / 'table.star', {'particles': table})
    return {'bytes': (outdir / 'table.star').stat().st_size, 'seconds_writing':
            time.perf_counter() - start}


def write_starfile(n, outdir):
    import starfile
    table = _table(n)
    start = time.perf_counter()
    starfile.write({'particles': table}, outdir / 'table.star')
    return {'bytes': (outdir / 'table.star').stat().st_size, 'seconds_writing':
            time.perf_counter() - start}


TASKS = {name: function for name, function in globals().items()
         if name.startswith(('read_', 'subsets_', 'write_')) and callable(function)}


def child(task, argument, outdir):
    """Run one task and print its figures (imports done before the clock starts)."""
    import pandas  # noqa: F401
    import starfile  # noqa: F401
    import scipion_reciprocal.formats.star  # noqa: F401
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    argument = int(argument) if task.startswith('write_') else Path(argument)
    start, cpu = time.perf_counter(), time.process_time()
    info = TASKS[task](argument, outdir)
    info.update(wall=time.perf_counter() - start, cpu=time.process_time() - cpu,
                peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(info))


def run(task, argument, outdir):
    shutil.rmtree(outdir, ignore_errors=True)
    done = subprocess.run([sys.executable, __file__, '--child', task, str(argument), str(outdir)],
                          capture_output=True, text=True, check=False)
    shutil.rmtree(outdir, ignore_errors=True)
    if done.returncode:
        sys.exit(f'{task} failed:\n{done.stderr}')
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(title, results):
    print(f'\n{title}')
    ours = results[0][1]['wall']
    for label, figures in results:
        extra = f'; {figures["bytes"] / 1e6:.0f} MB written' if 'bytes' in figures else ''
        print(f'  {label:<44s} {figures["wall"]:7.2f} s wall {figures["cpu"]:7.2f} s CPU '
              f'{figures["peak_rss_mb"]:6.0f} MB peak  {figures["wall"] / ours:5.1f}x{extra}',
              flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--particles', type=int, default=1_000_000)
    parser.add_argument('--workdir', default=str(HERE / 'output'))
    parser.add_argument('--child', nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(*args.child)
    work = Path(args.workdir)
    path = bench_reciprocal.generate(work / f'data_{args.particles}x4x8', args.particles, 8, 4)[0]
    with open(path, 'rb') as fh:        # every reader starts from the page cache
        while fh.read(1 << 24):
            pass
    print(f'{path} ({path.stat().st_size / 1e6:.0f} MB, {args.particles} rows, 25 columns); '
          f'{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}', flush=True)
    out = work / 'bench_star'
    reads = [(label, run(task, path, out)) for label, task in (
        ('StarTable (the fast path)', 'read_ours'),
        ("pandas' C reader on the loop body", 'read_pandas'),
        ('starfile.read (whole file)', 'read_starfile'))]
    assert len({(r['rows'], r['sum']) for _, r in reads}) == 1, 'the readers disagree'
    compare('reading rlnImageName and rlnClassNumber (ratio: wall time / the fast path)', reads)
    subsets = [('StarTable.write_subset (rows verbatim)', run('subsets_ours', path, out)),
               ('starfile.read + starfile.write per class', run('subsets_starfile', path, out))]
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    copied = 0
    while copied < subsets[0][1]['bytes']:
        shutil.copyfile(path, out / f'copy{copied}.star')
        copied += path.stat().st_size
    copy_wall = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    compare('writing the 8 per-class subsets', subsets)
    print(f'  (shutil.copyfile of {copied / 1e6:.0f} MB: {copy_wall:.2f} s)')
    writes = [('write_star (numpy formatting)', run('write_ours', args.particles, out)),
              ('starfile.write', run('write_starfile', args.particles, out))]
    compare(f'writing a table of {args.particles} rows (16 float, 4 integer, 2 text columns; '
            f'times include building it)', writes)
    print('  formatting and writing alone: ' + ', '.join(
        f'{label} {figures["seconds_writing"]:.2f} s' for label, figures in writes))
    return 0


if __name__ == '__main__':
    sys.exit(main())
