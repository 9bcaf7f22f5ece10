"""Benchmark of the reciprocal analysis protocol on Scipion sets (issue 3, "Speed and memory").

Compares, on the same data and in the same run, the command line (``scipion-reciprocal
reciprocal`` on RELION STAR files) with ``ProtReciprocalAnalysis`` launched through Scipion's
real launch path (``project.launchProtocol(prot, wait=True)``) on four SetOfClasses3D of a real
Scipion project. Target: protocol within 3x of the command line.

Input: the STAR files of ``bench_reciprocal.py`` (N particles x 4 jobs x 8 classes, cached under
``benchmarks/output/data_NxJxK``). The Scipion sets are built once (cached under
``benchmarks/output/protocol_NxJxK``) without creating a Scipion object per particle:

1. a small RELION project holds the first rows of every job (at least ``--small`` rows, and
   enough for every class to have particles) and a ``run_it025_model.star``;
2. ``ProtImportRelionClassifications`` imports it in a new Scipion project (the real protocol,
   through the Scipion API): one SetOfParticles and one SetOfClasses3D per job, with CTF,
   transform, acquisition, coordinates and the RELION extra attributes;
3. for every particle of the full STAR file, the values the import stores (same conversion:
   standardised defocus, ``json.dumps`` of the 4x4 transform, rounded coordinates...) are
   computed with numpy; the rows computed for the imported particles are checked equal, column
   by column, to those the import wrote;
4. the rows of the particle set's ``Objects`` table are replaced by all N rows (bulk
   ``executemany``), each class's ``ClassNNN_Objects`` table by that class's rows (``INSERT ...
   SELECT`` from the particle set), and the sizes updated (``_size`` of every class row, the
   particle set's ``Properties`` and its ``_size`` in the project database, through the
   project's mapper).

5. the import's own record of each job's STAR file (``relion_small/.../run_it025_data.star``)
   is made a link to the full file, whose rows the filled sets now hold, as after an import
   of the full jobs: the protocol copies those rows into the subset STAR files. With
   ``--convert`` the link points to the first rows instead, so the protocol sees sets that no
   longer match a RELION file (the path of sets from any engine): by default it reads their
   particle keys from SQL and writes no STAR subsets of them; with ``--star-subsets`` too
   (the form's "STAR subsets of sets not imported from RELION") it converts them to STAR.

Then each in its own process: (a) ``scipion-reciprocal reciprocal --class3d_dir ... --jobs
85,86,87,88 --plots all`` (every figure, as the protocol draws them); (b)
``ProtReciprocalAnalysis`` on the four sets with the same options (default registration:
consensus + intersection subsets, 2 threads); (a) and (b) again ``--repeat`` times in all,
then (a) once more. Printed: times, CPU time and peak memory of each side (the protocol's:
its largest process, ``pw_protocol_run`` or a worker), each protocol run against the mean of
the command-line runs before and after it, the ratio of the medians, and whether both wrote
the same tables. Usage::

    python benchmarks/bench_reciprocal_protocol.py                    # 1,000,000 x 4 x 8
    python benchmarks/bench_reciprocal_protocol.py --particles 100000
    python benchmarks/bench_reciprocal_protocol.py --convert          # sets not from RELION
    python benchmarks/bench_reciprocal_protocol.py --convert --star-subsets  # ... as STAR too
    python benchmarks/bench_reciprocal_protocol.py --convert --repeat 3
"""
import argparse
import json
import os
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from itertools import repeat
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_reciprocal  # noqa: E402  (STAR generation and stage clock)

PROJECT = 'reciprocal_bench'
OPTIONS = {'min_overlap': 10, 'min_fraction': 0.1, 'min_group_size': 10}  # protocol defaults
SAME_TABLES = ('counts_matrix.csv', 'fraction_matrix.csv', 'jaccard_matrix.csv', 'agreement.csv',
               'consensus_groups.csv', 'class_stability.csv', 'pysankey_input.csv')
STAR_COLUMNS = {'rlnImageName': 'text', 'rlnClassNumber': 'int', 'rlnCoordinateX': 'float',
                'rlnCoordinateY': 'float', 'rlnDefocusU': 'float', 'rlnDefocusV': 'float',
                'rlnDefocusAngle': 'float', 'rlnPhaseShift': 'float', 'rlnAngleRot': 'float',
                'rlnAngleTilt': 'float', 'rlnAnglePsi': 'float', 'rlnOriginXAngst': 'float',
                'rlnOriginYAngst': 'float', 'rlnMaxValueProbDistribution': 'float',
                'rlnNrOfSignificantSamples': 'int', 'rlnLogLikeliContribution': 'float'}
CHUNK = 100_000


def configure(home):
    """Point Scipion at the benchmark's own home (before pyworkflow is imported)."""
    from scipion_reciprocal import scipion_setup
    scipion_setup.configure(home=home, force=True)


# ---------------------------------------------------------------------- RELION folders

def job_names(n_jobs):
    return [f'job{85 + j:03d}' for j in range(n_jobs)]


def write_model(path, counts):
    """A minimal ``run_it025_model.star``: 3D, one row per class (maps absent)."""
    import pandas as pd
    from scipion_reciprocal.formats.star import write_star
    job = path.parent.name
    write_star(path, {'model_general': {'rlnReferenceDimensionality': 3,
                                        'rlnNrClasses': len(counts)},
                      'model_classes': pd.DataFrame({
                          'rlnReferenceImage': [f'Class3D/{job}/run_it025_class{k:03d}.mrc'
                                                for k in range(1, len(counts) + 1)],
                          'rlnClassDistribution': counts / counts.sum(),
                          'rlnEstimatedResolution': np.full(len(counts), 8.0)})})


def prepare_relion(paths, folder, n_classes, min_small):
    """RELION projects: ``relion`` (links to the full files) and ``relion_small`` (first rows).

    Returns the number of rows of the small files.
    """
    from scipion_reciprocal.formats.star import StarTable
    labels = []
    for path in paths:
        with StarTable.open(path) as table:
            labels.append(table.read_raw(['rlnClassNumber'])['rlnClassNumber'])
    # Enough rows for every class of every job to have particles in the small import.
    first_full = [max(np.flatnonzero(lab == k)[0] for k in range(1, n_classes + 1)) + 1
                  for lab in labels]
    n_small = max(min_small, *first_full)
    for name, path, lab in zip(job_names(len(paths)), paths, labels):
        counts = np.bincount(lab, minlength=n_classes + 1)[1:].astype(float)
        for project, rows in (('relion', None), ('relion_small', n_small)):
            job_dir = folder / project / 'Class3D' / name
            job_dir.mkdir(parents=True, exist_ok=True)
            data = job_dir / 'run_it025_data.star'
            if data.exists() or data.is_symlink():
                data.unlink()
            if rows is None:
                data.symlink_to(path.resolve())
            else:
                with StarTable.open(path) as table, open(path, 'rb') as src, \
                        open(data, 'wb') as dst:
                    src.seek(len(table.header))
                    dst.write(table.header + b''.join(src.readline() for _ in range(rows)))
            write_model(job_dir / 'run_it025_model.star', counts)
    return n_small


# ---------------------------------------------------------------------- Scipion sets

def item_values(star_path, project_dir, pixel_size):
    """Per-particle attribute values as ProtImportRelionClassifications stores them."""
    from scipion_reciprocal.core.geometry import scipion_matrices_from_relion
    from scipion_reciprocal.formats.relion import parse_image_names
    from scipion_reciprocal.formats.star import StarTable
    with StarTable.open(star_path) as table:
        raw = table.read_raw(list(STAR_COLUMNS), kinds=STAR_COLUMNS)
    indices, paths = parse_image_names(raw['rlnImageName'].astype(str))
    unique, inverse = np.unique(paths.astype(str), return_inverse=True)
    full = np.array([os.path.join(project_dir, p) for p in unique], dtype=object)[inverse]
    # CTFModel.setStandardDefocus: defocusU >= defocusV, 0 <= angle < 180, ratio U/V.
    du, dv, angle = raw['rlnDefocusU'], raw['rlnDefocusV'], raw['rlnDefocusAngle']
    swap = dv > du
    du, dv = np.where(swap, dv, du), np.where(swap, du, dv)
    angle = np.where(swap, angle + 90.0, angle)
    angle = np.where(angle >= 180.0, angle - 180.0, np.where(angle < 0.0, angle + 180.0, angle))
    origins = np.column_stack([raw['rlnOriginXAngst'], raw['rlnOriginYAngst']]) / pixel_size
    matrices = scipion_matrices_from_relion(
        np.column_stack([raw['rlnAngleRot'], raw['rlnAngleTilt'], raw['rlnAnglePsi']]), origins)
    return {
        '_index': indices, '_filename': full,
        '_ctfModel._defocusU': du, '_ctfModel._defocusV': dv, '_ctfModel._defocusAngle': angle,
        '_ctfModel._defocusRatio': np.where(dv > 0.1, du / np.where(dv > 0.1, dv, 1.0), -1.0),
        '_ctfModel._phaseShift': raw['rlnPhaseShift'],
        '_transform._matrix': matrices,  # formatted chunk by chunk (json, as pwem's Matrix)
        '_coordinate._x': np.rint(raw['rlnCoordinateX']).astype(int),
        '_coordinate._y': np.rint(raw['rlnCoordinateY']).astype(int),
        '_classId': raw['rlnClassNumber'], '_rlnClassNumber': raw['rlnClassNumber'],
        '_rlnMaxValueProbDistribution': raw['rlnMaxValueProbDistribution'],
        '_rlnNrOfSignificantSamples': raw['rlnNrOfSignificantSamples'],
        '_rlnLogLikeliContribution': raw['rlnLogLikeliContribution'],
    }


def matrix_json(matrices):
    """``json.dumps(m.tolist())`` of every 4x4 matrix (one json call for the chunk)."""
    text = json.dumps(matrices.tolist())[3:-3]
    return ['[[' + part + ']]' for part in text.split(']], [[')]


def row_chunks(columns, table_columns, constants, start, stop):
    """Rows ``start:stop`` as tuples in the order of the table's columns."""
    n = stop - start
    seqs = []
    for name, label in table_columns:
        if name == 'id':
            seqs.append(range(start + 1, stop + 1))
        elif label == '_transform._matrix':
            seqs.append(matrix_json(columns[label][start:stop]))
        elif label in columns:
            seqs.append(columns[label][start:stop].tolist())
        else:
            seqs.append(repeat(constants[name], n))
    return zip(*seqs)


def table_layout(conn, prefix=''):
    """[(column, attribute label)] of an items table, in table order."""
    query = f'SELECT label_property, column_name FROM {prefix}Classes'
    labels = {column: label for label, column in conn.execute(query)}
    names = [r[1] for r in conn.execute(f'PRAGMA table_info({prefix}Objects)')]
    return [(n, labels.get(n, n)) for n in names]


def fill_job(particles_file, classes_file, star_path, project_dir, pixel_size):
    """Replace the imported rows by every particle of ``star_path`` (see the module doc)."""
    values = item_values(star_path, project_dir, pixel_size)
    n = len(values['_index'])
    with closing(sqlite3.connect(particles_file)) as conn:
        conn.execute('PRAGMA synchronous = OFF')
        layout = table_layout(conn)
        api = conn.execute('SELECT * FROM Objects ORDER BY id').fetchall()
        constants = dict(zip([c for c, _ in layout], api[0]))
        mine = list(row_chunks(values, layout, constants, 0, len(api)))
        for row_api, row_mine in zip(api, mine):
            for (column, label), a, b in zip(layout, row_api, row_mine):
                if column != 'creation' and a != b:
                    raise AssertionError(f'{particles_file}: {label} of particle {row_api[0]}: '
                                         f'import stored {a!r}, bulk rows give {b!r}')
        conn.execute('DELETE FROM Objects')
        insert = 'INSERT INTO Objects VALUES (%s)' % ', '.join('?' * len(layout))
        for start in range(0, n, CHUNK):
            conn.executemany(insert, row_chunks(values, layout, constants, start,
                                                min(start + CHUNK, n)))
        conn.execute("UPDATE Properties SET value = ? WHERE key = '_size'", (str(n),))
        conn.commit()
        class_column = dict((l, c) for c, l in layout)['_classId']
    with closing(sqlite3.connect(classes_file)) as conn:
        conn.execute('PRAGMA synchronous = OFF')
        conn.execute('ATTACH DATABASE ? AS src', (str(Path(particles_file).resolve()),))
        size_column = conn.execute(
            "SELECT column_name FROM Classes WHERE label_property = '_size'").fetchone()[0]
        for (class_id,) in conn.execute('SELECT id FROM Objects').fetchall():
            prefix = f'Class{class_id:03d}_'
            if table_layout(conn, prefix) != layout:
                raise AssertionError(f'{classes_file}: {prefix}Objects differs from the particles')
            conn.execute(f'DELETE FROM {prefix}Objects')
            count = conn.execute(f'INSERT INTO {prefix}Objects SELECT * FROM src.Objects '
                                 f'WHERE "{class_column}" = ? ORDER BY id', (class_id,)).rowcount
            conn.execute(f'UPDATE Objects SET "{size_column}" = ? WHERE id = ?', (count, class_id))
        conn.commit()
    return n


def build_sets(folder, n_jobs, n_small, rebuild):
    """A Scipion project with one SetOfClasses3D per job, filled with every particle."""
    stamp = folder / 'scipion_sets.json'
    if stamp.exists() and not rebuild:
        return json.loads(stamp.read_text())
    from pyworkflow.project import Manager

    from scipion_reciprocal.protocols import ProtImportRelionClassifications
    manager = Manager()
    if manager.hasProject(PROJECT):
        manager.deleteProject(PROJECT)
    project = manager.createProject(PROJECT)
    os.chdir(project.getPath())
    names = job_names(n_jobs)
    t = time.perf_counter()
    prot = project.newProtocol(ProtImportRelionClassifications, objLabel='import (small)',
                               relionDir=str(folder / 'relion_small'), jobs=','.join(names))
    project.launchProtocol(prot, wait=True)
    prot = project.getProtocol(prot.getObjId())
    if not prot.isFinished():
        sys.exit(f'import failed: {prot.getErrorMessage()}')
    print(f'  imported the first {n_small} particles of every job through the Scipion API in '
          f'{time.perf_counter() - t:.1f} s', flush=True)
    for name in names:
        t = time.perf_counter()
        particles = getattr(prot, f'outputParticles_{name}')
        classes = getattr(prot, f'outputClasses_{name}')
        star = folder / 'relion' / 'Class3D' / name / 'run_it025_data.star'
        n = fill_job(particles.getFileName(), classes.getFileName(), star,
                     str(folder / 'relion_small'), particles.getSamplingRate())
        particles._size.set(n)  # the set's size as the project database holds it
        project.mapper.store(particles)
        project.mapper.commit()
        print(f'  {name}: {n} particles written into {classes.getFileName()} by SQL in '
              f'{time.perf_counter() - t:.1f} s', flush=True)
    # Read back through the Scipion API: sizes of the sets and of their classes.
    prot = project.getProtocol(prot.getObjId())
    for name in names:
        classes = getattr(prot, f'outputClasses_{name}')
        total = sum(cls.getSize() for cls in classes.iterItems())
        if total != classes.getImages().getSize():
            sys.exit(f'{name}: the classes hold {total} particles, the set '
                     f'{classes.getImages().getSize()}')
    info = {'project': PROJECT, 'import_id': prot.getObjId(), 'jobs': names, 'small_rows': n_small}
    stamp.write_text(json.dumps(info))
    return info


def link_import_source(folder, names, full):
    """Point the import's record of every job's STAR file at the full file (the rows the
    filled sets hold) or, with ``full`` false, at the first rows it imported (step 5)."""
    for name in names:
        data = folder / 'relion_small' / 'Class3D' / name / 'run_it025_data.star'
        first_rows = folder / 'first_rows' / f'{name}.star'
        if not first_rows.exists():  # the small file written by prepare_relion
            first_rows.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(data, first_rows)
        full_file = folder / 'relion' / 'Class3D' / name / 'run_it025_data.star'
        target = full_file if full else first_rows
        if data.exists() or data.is_symlink():
            data.unlink()
        data.symlink_to(target.resolve())


# ---------------------------------------------------------------------- the two runs

def run_cli(folder, names, outdir):
    """``scipion-reciprocal reciprocal`` on the same jobs with the protocol's options and every
    figure (as the protocol draws them), in a process of its own; its wall and CPU time and
    peak memory, the process drawing the figures included."""
    command = [sys.executable, '-m', 'scipion_reciprocal.cli', 'reciprocal', '--class3d_dir',
               str(folder / 'relion' / 'Class3D'), '--jobs', ','.join(names), '--outdir',
               str(outdir), '--plots', 'all', '--min-overlap', str(OPTIONS['min_overlap']),
               '--min-fraction', str(OPTIONS['min_fraction']), '--min-group-size',
               str(OPTIONS['min_group_size'])]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f'the command line failed:\n{done.stderr}')
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {'command_wall': wall, 'cpu': usage.ru_utime + usage.ru_stime,
            'peak_rss_mb': usage.ru_maxrss / 1024,
            'files': len(list(outdir.glob('per_class/*.star'))) +
            len(list(outdir.glob('intersections/*.star')))}


STEP_LINE = re.compile(r'(STARTED|FINISHED): (\w+), step \d+, time (\S+ \S+)')
TIMED_LINE = re.compile(r'^(.*) \((\d+\.\d+) s\)$')


def run_protocol(info, outdir_cli, star_subsets=False):
    """Launch ProtReciprocalAnalysis on the four sets and read its log."""
    from datetime import datetime

    from pyworkflow.project import Manager

    from scipion_reciprocal.protocols import ProtReciprocalAnalysis
    project = Manager().loadProject(info['project'])
    os.chdir(project.getPath())
    # Runs of earlier benchmarks take GBs (subset sets, STAR files): keep only the new one.
    earlier = [run for run in project.getRuns() if isinstance(run, ProtReciprocalAnalysis)]
    if earlier:
        project.deleteProtocol(*earlier)
    imported = project.getProtocol(info['import_id'])
    prot = project.newProtocol(ProtReciprocalAnalysis, objLabel='reciprocal (benchmark)',
                               minOverlap=OPTIONS['min_overlap'],
                               minFraction=OPTIONS['min_fraction'],
                               minGroupSize=OPTIONS['min_group_size'],
                               convertToStar=star_subsets)
    for name in info['jobs']:
        prot.inputClassifications.append(imported)
        prot.inputClassifications[-1].setExtended(f'outputClasses_{name}')
    start = time.perf_counter()
    project.launchProtocol(prot, wait=True)
    wall = time.perf_counter() - start
    prot = project.getProtocol(prot.getObjId())
    log = Path(prot.getLogPaths()[0]).read_text()
    log = re.sub(r'\x1b\[[0-9;]*m', '', log)
    if not prot.isFinished():
        sys.exit(f'protocol failed: {prot.getErrorMessage()}\n{log[-3000:]}')
    steps, times = [], {}
    for kind, step, stamp in STEP_LINE.findall(log):
        times.setdefault(step, {})[kind] = datetime.fromisoformat(stamp)
    for step, t in times.items():
        steps.append((step, (t['FINISHED'] - t['STARTED']).total_seconds()))
    timed = [(m.group(1), float(m.group(2))) for m in map(TIMED_LINE.match, log.splitlines()) if m]
    outputs = dict(prot.iterOutputAttributes())
    results = Path(prot._getExtraPath('results'))
    same = {name: (results / name).read_bytes() == (outdir_cli / name).read_bytes()
            for name in SAME_TABLES}
    star_files = sorted(p.name for p in results.glob('*/*.star'))
    cli_files = sorted(p.name for p in outdir_cli.glob('*/*.star'))
    return {'wall': wall, 'steps': steps, 'timed': timed, 'outputs': len(outputs),
            'consensus_classes': outputs['outputConsensus'].getSize()
            if 'outputConsensus' in outputs else 0,
            'same_tables': same, 'same_star_names': star_files == cli_files,
            'star_files': len(star_files), 'run_dir': prot.getWorkingDir()}


def peak_rss_mb():
    """This process's peak resident memory since it started (VmHWM: unlike ru_maxrss, it does
    not include the parent's memory at fork time)."""
    with open('/proc/self/status') as fh:
        for line in fh:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args):
    """Run one side in this process and print its figures as JSON (own peak memory)."""
    folder = Path(args.folder)
    configure(folder / 'scipion')
    info = json.loads((folder / 'scipion_sets.json').read_text())
    outdir_cli = folder / 'result_cli'
    start = time.perf_counter()
    if args.child == 'cli':
        out = run_cli(folder, info['jobs'], outdir_cli)
    else:
        out = run_protocol(info, outdir_cli, args.star_subsets)
        # The protocol runs in a grandchild (pw_protocol_run.py, started through a shell):
        # the largest descendant waited for.
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        out['peak_rss_mb'] = children.ru_maxrss / 1024
        # CPU of the protocol's processes (its conversion workers included), all waited for.
        out['cpu'] = children.ru_utime + children.ru_stime
        out['launcher_rss_mb'] = peak_rss_mb()
    out['process_wall'] = time.perf_counter() - start
    print(json.dumps(out))


def in_child(stage, folder, star_subsets=False):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, '--child', stage, '--folder', str(folder)]
                          + (['--star-subsets'] if star_subsets else []),
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f'{stage} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}')
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out['wall_with_startup'] = wall
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--particles', type=int, default=1_000_000)
    parser.add_argument('--jobs', type=int, default=4)
    parser.add_argument('--classes', type=int, default=8)
    parser.add_argument('--small', type=int, default=200,
                        help='particles per job imported through the Scipion API (at least)')
    parser.add_argument('--rebuild', action='store_true', help='rebuild the cached Scipion sets')
    parser.add_argument('--convert', action='store_true',
                        help='sets that match no RELION file (read from SQL)')
    parser.add_argument('--star-subsets', action='store_true',
                        help='with --convert: the protocol converts them to STAR for STAR subsets')
    parser.add_argument('--repeat', type=int, default=1,
                        help='protocol runs, each after a command-line run (and one more '
                             'command-line run at the end)')
    parser.add_argument('--workdir', default=str(HERE / 'output'))
    parser.add_argument('--child', choices=('cli', 'protocol'), help=argparse.SUPPRESS)
    parser.add_argument('--folder', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    work = Path(args.workdir).resolve()
    size = f'{args.particles}x{args.jobs}x{args.classes}'
    print(f'input: {args.particles} particles x {args.jobs} jobs x {args.classes} classes; '
          f'{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}', flush=True)
    paths = bench_reciprocal.generate(work / f'data_{size}', args.particles, args.classes,
                                      args.jobs)
    folder = work / f'protocol_{size}'
    stamp = folder / 'scipion_sets.json'
    if args.rebuild or not stamp.exists():
        shutil.rmtree(folder, ignore_errors=True)
        t = time.perf_counter()
        n_small = prepare_relion(paths, folder, args.classes, args.small)
        configure(folder / 'scipion')
        build_sets(folder, args.jobs, n_small, rebuild=True)
        print(f'  Scipion sets built in {time.perf_counter() - t:.1f} s (cached in {folder})')
    else:
        print(f'  Scipion sets cached in {folder} (--rebuild to build them again)')
    link_import_source(folder, job_names(args.jobs), full=not args.convert)
    print('  subset STAR rows: ' + (
        ("converted from the Scipion sets (--convert --star-subsets)" if args.star_subsets
         else "none written by the protocol: sets not from RELION (--convert)") if args.convert
        else "copied from the imported jobs' STAR files"))
    for p in paths:  # both sides read the STAR files from the page cache
        with open(p, 'rb') as fh:
            while fh.read(1 << 24):
                pass
    shutil.rmtree(folder / 'result_cli', ignore_errors=True)

    clis, prots = [], []
    for run in range(args.repeat):
        shutil.rmtree(folder / 'result_cli', ignore_errors=True)
        clis.append(in_child('cli', folder))
        prots.append(in_child('protocol', folder, args.star_subsets))
    # The command line once more: on a shared machine one run can be a third faster than
    # another, so each protocol run sits between two command-line runs.
    shutil.rmtree(folder / 'result_cli', ignore_errors=True)
    clis.append(in_child('cli', folder))
    cli, prot = clis[0], prots[-1]
    print('\ncommand line (scipion-reciprocal reciprocal --plots all, the protocol\'s options)')
    print(f'  {"process, start to end (imports included)":<48} {cli["command_wall"]:7.2f} s'
          f'   peak RSS {cli["peak_rss_mb"]:.0f} MB; {cli["files"]} subset STAR files; '
          f'CPU {cli["cpu"]:.1f} s')
    print(f'\nprotocol (ProtReciprocalAnalysis launched with project.launchProtocol, wait=True), '
          f'{prot["run_dir"]}')
    for name, seconds in prot['steps']:
        print(f'  step {name:<43} {seconds:7.2f} s')
    for text, seconds in prot['timed']:
        print(f'    {text[:72]:<72} {seconds:7.2f} s')
    print(f'  {"launchProtocol(wait=True)":<48} {prot["wall"]:7.2f} s'
          f'   peak RSS {prot["peak_rss_mb"]:.0f} MB (largest process; launcher '
          f'{prot["launcher_rss_mb"]:.0f} MB); CPU {prot["cpu"]:.1f} s (all its processes)')
    print(f'  {prot["outputs"]} outputs registered, consensus with {prot["consensus_classes"]} '
          f'classes; {prot["star_files"]} subset STAR files')
    same = all(all(p['same_tables'].values()) for p in prots)
    print(f'\nsame tables as the command line ({", ".join(SAME_TABLES)}): {same}'
          + ('' if same else f' {[p["same_tables"] for p in prots]}'))
    if prot['star_files'] or not args.convert:
        print(f'same subset STAR file names: {all(p["same_star_names"] for p in prots)}')
    cli_walls = [c['command_wall'] for c in clis]
    prot_walls = [p['wall'] for p in prots]
    print('command line, each run: ' + ', '.join(f'{w:.2f} s' for w in cli_walls)
          + ' (CPU ' + ', '.join(f'{c["cpu"]:.1f}' for c in clis) + ' s)')
    print('protocol, each run: ' + ', '.join(f'{w:.2f} s' for w in prot_walls)
          + ' (CPU ' + ', '.join(f'{p["cpu"]:.1f}' for p in prots) + ' s)')
    ratios = [w / ((cli_walls[i] + cli_walls[i + 1]) / 2) for i, w in enumerate(prot_walls)]
    print('protocol / mean of the command-line runs before and after it: '
          + ', '.join(f'{r:.2f}x' for r in ratios))
    median_prot, median_cli = np.median(prot_walls), np.median(cli_walls)
    print(f'protocol / command line: {median_prot:.1f} s / {median_cli:.1f} s (medians) = '
          f'{median_prot / median_cli:.2f}x (target <= 3x); largest process '
          f'{max(p["peak_rss_mb"] for p in prots):.0f} MB (target < 2000 MB)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
