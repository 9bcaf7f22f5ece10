"""The command line as a user runs it (a subprocess), against faults and bad input.

Every failure ends with exit status 2 (130 for Ctrl-C), one line on stderr and no traceback;
no file is ever half-written under its final name (every file present is byte for byte the
one a complete run writes); a folder that did not finish says so (``folder_status``), and a
rerun replaces it only with ``--overwrite``, which removes the earlier run's files and nothing
else. Full and read-only disks are real: a small tmpfs mounted for the test when the tests
run as root, else a file-size limit (``RLIMIT_FSIZE``) and a folder without write permission.
"""
import gzip
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import starfile

from scipion_reciprocal.formats._atomic import is_temporary
from scipion_reciprocal.formats.mrc import write_map, write_stack
from scipion_reciprocal.formats.result_folder import JOURNAL, MANIFEST, folder_status
from scipion_reciprocal.formats.star import write_star
from scipion_reciprocal.tests.test_relion_jobs import BOX, write_job

JOBS = '85,86,13'


def cli(*args, preexec_fn=None):
    """Run ``scipion-reciprocal ARGS`` as a user does; returns the CompletedProcess."""
    return subprocess.run([sys.executable, '-m', 'scipion_reciprocal.cli', *map(str, args)],
                          capture_output=True, text=True, preexec_fn=preexec_fn, timeout=300)


def start(*args):
    """Start ``scipion-reciprocal ARGS`` as from a terminal: Ctrl-C (SIGINT) not ignored, as it
    is inherited by commands that a non-interactive shell starts in the background."""
    return subprocess.Popen([sys.executable, '-m', 'scipion_reciprocal.cli', *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def assert_one_line(proc, status, *phrases):
    """Exit status, one stderr line without a traceback, holding every phrase."""
    err = proc.stderr
    assert proc.returncode == status, (proc.returncode, err)
    assert err.count('\n') == 1 and 'Traceback' not in err, err
    for phrase in phrases:
        assert phrase in err, err
    return err


def final_files(folder):
    """Files under their final names (not the manifest, the journal or temporary files)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob('*')
                  if p.is_file() and p.name not in (MANIFEST, JOURNAL) and not is_temporary(p))


def assert_nothing_half_written(folder, reference):
    """Every final file in ``folder`` is recorded in its journal and equal to the complete
    run's (PNG figures: complete, ending with IEND)."""
    journal = set((folder / JOURNAL).read_text().split())
    for rel in final_files(folder):
        assert rel in journal, rel
        data = (folder / rel).read_bytes()
        if rel.endswith('.png'):
            assert data.startswith(b'\x89PNG') and data.endswith(b'IEND\xaeB`\x82'), rel
        else:
            assert data == (reference / rel).read_bytes(), rel


def journal_lines(folder):
    try:
        return len((folder / JOURNAL).read_text().split())
    except OSError:
        return 0


def wait_for_journal(proc, folder, lines=3, timeout=120):
    deadline = time.time() + timeout
    while journal_lines(folder) < lines:
        assert proc.poll() is None, f'the run ended before writing {lines} files'
        assert time.time() < deadline
        time.sleep(0.005)


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    """Three RELION jobs (two Class3D, one Class2D) of 60 particles, and a complete run."""
    root = tmp_path_factory.mktemp('relion')
    rng = np.random.default_rng(7)
    states = np.repeat([0, 1, 2], [30, 20, 10])
    write_job(root, 'Class3D/job085', states + 1)
    write_job(root, 'Class3D/job086', np.where(rng.random(60) < 0.2, rng.integers(1, 4, 60),
                                               3 - states), n_classes=4)
    write_job(root, 'Class2D/job013', (states > 0).astype(int) + 1, kind='2D')
    reference = root.parent / 'reference'
    assert cli('reciprocal', '--relion_dir', root, '--jobs', JOBS,
               '--outdir', reference).returncode == 0
    return root, reference


def reciprocal(project, outdir, *extra, jobs=JOBS, preexec_fn=None):
    return cli('reciprocal', '--relion_dir', project, '--jobs', jobs, '--outdir', outdir,
               *extra, preexec_fn=preexec_fn)


# ----------------------------------------------------------------------------- output folder

def test_reused_outdir_is_refused_and_overwrite_removes_only_the_earlier_runs_files(project,
                                                                                     tmp_path):
    root, reference = project
    out = tmp_path / 'out'
    shutil.copytree(reference, out)
    (out / 'my_notes.txt').write_text('the user\'s own file')
    manifest = (out / MANIFEST).read_bytes()
    proc = reciprocal(root, out, '--no-plots')
    assert_one_line(proc, 2, f'{out}: is not empty', '--overwrite')
    assert (out / MANIFEST).read_bytes() == manifest

    # Two jobs this time: the subsets of job013 (no longer analysed) must not stay behind.
    proc = reciprocal(root, out, '--overwrite', '--no-plots', jobs='85,86')
    assert proc.returncode == 0, proc.stderr
    status = folder_status(out, verify=True)
    assert status.complete
    assert final_files(out) == sorted(status.files + ['my_notes.txt'])
    assert not any('job013' in f for f in final_files(out))
    assert not (out / 'plots').exists()
    assert (out / 'my_notes.txt').read_text() == 'the user\'s own file'


def test_folder_of_another_program_is_never_overwritten(project, tmp_path):
    root, _ = project
    out = tmp_path / 'old'
    (out / 'per_class').mkdir(parents=True)
    (out / 'per_class' / 'job085_class9.star').write_text('written by an older tool')
    proc = reciprocal(root, out, '--overwrite')
    assert_one_line(proc, 2, 'no manifest.json: not an earlier result')
    assert final_files(out) == ['per_class/job085_class9.star']


def interrupted_run(root, out, sig):
    """The reciprocal command, sent ``sig`` once it has written 3 files (stderr kept)."""
    proc = start('reciprocal', '--relion_dir', root, '--jobs', JOBS, '--outdir', out)
    wait_for_journal(proc, out)
    proc.send_signal(sig)
    _, proc.stderr = proc.communicate()
    return proc


def test_killed_run_is_incomplete_and_a_rerun_replaces_it(project, tmp_path):
    root, reference = project
    out = tmp_path / 'out'
    interrupted_run(root, out, signal.SIGKILL)
    status = folder_status(out)
    assert not status and 'interrupted' in status.reason
    assert final_files(out)
    assert_nothing_half_written(out, reference)

    assert_one_line(reciprocal(root, out), 2, 'is not empty')
    proc = reciprocal(root, out, '--overwrite')
    assert proc.returncode == 0, proc.stderr
    status = folder_status(out, verify=True)
    assert status.complete and final_files(out) == status.files
    assert status.files == folder_status(reference).files
    assert not [p for p in out.rglob('*') if is_temporary(p)]


def test_ctrl_c_exits_130_with_one_line(project, tmp_path):
    root, reference = project
    out = tmp_path / 'out'
    proc = interrupted_run(root, out, signal.SIGINT)
    assert_one_line(proc, 130, f'scipion-reciprocal reciprocal: interrupted; {out} is '
                               f'incomplete (rerun with --overwrite')
    assert not folder_status(out)
    assert_nothing_half_written(out, reference)


@contextmanager
def small_disk(folder, options):
    """A tmpfs mounted on ``folder`` (root only); yields False when it cannot be mounted."""
    folder.mkdir()
    mounted = os.geteuid() == 0 and shutil.which('mount') and subprocess.run(
        ['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(folder)],
        capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(['umount', str(folder)], check=True)


def _file_size_limit(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)    # write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_mid_run_gives_one_line_and_no_half_written_file(project, tmp_path):
    root, reference = project
    # Room for the bytes (the check before writing passes) but only for 30 files.
    with small_disk(tmp_path / 'disk', 'size=50m,nr_inodes=30') as mounted:
        out = tmp_path / 'disk' / 'out'
        if mounted:
            proc, reason = reciprocal(root, out), 'No space left on device'
        else:                   # no mount: files beyond 20 kB cannot be written
            proc = reciprocal(root, out, preexec_fn=_file_size_limit(20_000))
            reason = 'File too large'
        err = assert_one_line(proc, 2, 'cannot be written', reason, 'the result is incomplete')
        named = Path(err.split(': error: ')[1].split(': cannot be written')[0])
        assert not is_temporary(named) and named.parent.is_dir() and not named.exists()
        assert not folder_status(out)
        assert not [p for p in out.rglob('*') if is_temporary(p)]
        assert_nothing_half_written(out, reference)


def test_too_little_free_space_is_refused_before_writing(project, tmp_path):
    root, _ = project
    with small_disk(tmp_path / 'disk', 'size=200k') as mounted:
        if not mounted:
            pytest.skip('needs root to mount a small tmpfs')
        proc = reciprocal(root, tmp_path / 'disk' / 'out')
        assert_one_line(proc, 2, 'free on its disk, the results need about')
        assert not (tmp_path / 'disk' / 'out').exists()


def test_read_only_output_folder_is_refused_before_reading(project, tmp_path):
    root, _ = project
    with small_disk(tmp_path / 'disk', 'ro') as mounted:
        if not mounted:
            if os.geteuid() == 0:
                pytest.skip('root writes anywhere and tmpfs cannot be mounted here')
            (tmp_path / 'disk').chmod(0o555)
        # A job that does not exist: the folder is checked first.
        proc = reciprocal(root, tmp_path / 'disk' / 'out', jobs='85,99')
        assert_one_line(proc, 2, 'out: is not writable')
        proc = cli('mapclust', 'a.mrc', 'b.mrc', '--outdir', tmp_path / 'disk' / 'out')
        assert_one_line(proc, 2, 'out: is not writable')


# ----------------------------------------------------------------------------- bad inputs

def copy_project(root, tmp_path, jobs=('Class3D/job085', 'Class3D/job086')):
    copy = tmp_path / 'relion'
    for job in jobs:
        shutil.copytree(root / job, copy / job)
    return copy


def test_gzipped_newest_iteration_is_refused_by_name(project, tmp_path):
    root, _ = project
    copy = copy_project(root, tmp_path)
    data = copy / 'Class3D' / 'job086' / 'run_it003_data.star'
    with open(data, 'rb') as src, gzip.open(f'{data}.gz', 'wb') as dst:
        shutil.copyfileobj(src, dst)
    data.unlink()
    proc = reciprocal(copy, tmp_path / 'out', jobs='85,86')
    assert_one_line(proc, 2, 'run_it003_data.star.gz: job Class3D/job086: iteration 3 is '
                             'gzipped: gunzip it to read it, or choose iteration 2')
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('bad', [0, -1])
def test_class_numbers_below_one_are_refused(project, tmp_path, bad):
    root, _ = project
    copy = copy_project(root, tmp_path)
    path = copy / 'Class3D' / 'job086' / 'run_it003_data.star'
    data = starfile.read(path)
    data['particles'].loc[4:6, 'rlnClassNumber'] = bad
    write_star(path, data)
    proc = reciprocal(copy, tmp_path / 'out', jobs='85,86')
    assert_one_line(proc, 2, f'run_it003_data.star: job086: class number {bad} in row 5 (3 rows '
                             f'with a class below 1): class numbers start at 1')
    assert not (tmp_path / 'out').exists()


def _truncate(text):
    return text[:len(text) * 2 // 3]


def _no_rows(text):
    return '\n'.join(line for line in text.splitlines() if '@' not in line) + '\n'


def _class_not_a_number(text):
    lines = text.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith('000005@'))
    values = lines[row].split()
    values[10] = 'abc'                  # rlnClassNumber
    lines[row] = '\t'.join(values)
    return '\n'.join(lines) + '\n'


@pytest.mark.parametrize('damage, message', [
    (_truncate, 'fields instead of 15 (truncated or corrupt row)'),
    (lambda text: '', 'run_it003_data.star: empty file: not a STAR file'),
    (_no_rows, 'run_it003_data.star: data_particles has no rows: job job086 has no particles'),
    (_class_not_a_number, 'column _rlnClassNumber holds values that are not int numbers'),
    (lambda text: text.replace('_rlnImageName', '_rlnImageNameX'),
     'data_particles has no column _rlnImageName (needed for the image key of job job086)'),
])
def test_damaged_star_file_is_refused_naming_it(project, tmp_path, damage, message):
    root, _ = project
    copy = copy_project(root, tmp_path)
    path = copy / 'Class3D' / 'job086' / 'run_it003_data.star'
    path.write_text(damage(path.read_text()))
    proc = reciprocal(copy, tmp_path / 'out', '--no-plots', jobs='85,86')
    assert_one_line(proc, 2, 'job086/run_it003_data.star', message)
    assert not (tmp_path / 'out').exists()


def as_relion30(path):
    """Rewrite a RELION 3.1 particle file as RELION 3.0 writes it: no data_optics, optics
    values per particle (pixel size as detector pixel and magnification), origins in pixels,
    no rlnImageSize."""
    data = starfile.read(path)
    parts = data['particles'].drop(columns='rlnOpticsGroup')
    optics = data['optics'].iloc[0]
    for label in ('rlnVoltage', 'rlnSphericalAberration', 'rlnAmplitudeContrast'):
        parts[label] = optics[label]
    parts['rlnDetectorPixelSize'] = 5.0
    parts['rlnMagnification'] = 5.0e4 / optics['rlnImagePixelSize']
    for axis in 'XY':
        parts[f'rlnOrigin{axis}'] = parts.pop(f'rlnOrigin{axis}Angst') / optics['rlnImagePixelSize']
    write_star(path, {'': parts}, version=None)
    return parts


def test_relion30_job_gets_its_optics_from_the_stack_header(project, tmp_path):
    root, _ = project
    copy = copy_project(root, tmp_path)
    source = as_relion30(copy / 'Class3D' / 'job085' / 'run_it003_data.star')
    proc = reciprocal(copy, tmp_path / 'refused', '--no-plots', jobs='85,86')
    assert_one_line(proc, 2, 'job085/run_it003_data.star: RELION 3.0 file (no data_optics): no '
                             'rlnImageSize, and the stack that gives the box size is not found: '
                             'Extract/job007/particles.mrcs')
    assert not (tmp_path / 'refused').exists()

    (copy / 'Extract' / 'job007').mkdir(parents=True)
    write_stack(copy / 'Extract' / 'job007' / 'particles.mrcs',
                np.zeros((60, BOX, BOX), np.float32), 2.0)
    out = tmp_path / 'out'
    proc = reciprocal(copy, out, '--no-plots', jobs='85,86')
    assert proc.returncode == 0, proc.stderr
    assert folder_status(out, verify=True).complete
    subset = starfile.read(out / 'per_class' / 'job085_class1.star')
    optics = subset['optics']
    assert optics[['rlnImageSize', 'rlnImagePixelSize', 'rlnVoltage']].values.tolist() == \
        [[BOX, 2.0, 300.0]]
    particles = subset['particles']
    assert len(particles) == 30
    assert particles['rlnImageName'].tolist() == source['rlnImageName'][:30].tolist()
    np.testing.assert_allclose(particles['rlnOriginXAngst'], source['rlnOriginX'][:30] * 2.0)


# ----------------------------------------------------------------------------- map clustering

@pytest.fixture(scope='module')
def maps(tmp_path_factory):
    """Four maps of two shapes (24 voxels), a 2D image and a names CSV with an extra row."""
    from scipion_reciprocal.simulate.molecule import molecule_maps
    folder = tmp_path_factory.mktemp('maps')
    states = molecule_maps(2, box=24, pixel_size=5.0, seed=2)
    rng = np.random.default_rng(3)
    paths = []
    for k in range(4):
        volume = states[k % 2] + rng.normal(0, 0.1 * states[k % 2].std(), states[0].shape)
        paths.append(folder / f'map{k + 1}.mrc')
        write_map(paths[-1], volume.astype(np.float32), 5.0)
    write_map(folder / 'image.mrc', np.ones((24, 24), np.float32), 5.0)
    rows = ['original_filename,custom_name'] + [f'map{k + 1}.mrc,state {k % 2} copy {k // 2}'
                                                for k in range(4)] + ['map9.mrc,not given']
    (folder / 'names.csv').write_text('\n'.join(rows) + '\n')
    return folder, paths


def test_mapclust_bad_input_is_refused_before_anything_is_written(maps, tmp_path):
    folder, paths = maps
    out = tmp_path / 'out'
    assert_one_line(cli('mapclust', *paths, '--max-clusters', '1', '--outdir', out), 2,
                    '--max-clusters must be at least 2')
    assert_one_line(cli('mapclust', *paths[:2], folder / 'image.mrc', '--outdir', out), 2,
                    'image.mrc: is a 2D image (24 x 24 pixels), not a 3D map')
    assert not out.exists()


def test_mapclust_names_file_with_extra_names_warns(maps, tmp_path):
    folder, paths = maps
    out = tmp_path / 'out'
    proc = cli('mapclust', *paths, '--names', folder / 'names.csv', '--clusters', '2',
               '--no-plots', '--quiet', '--outdir', out)
    assert proc.returncode == 0 and 'Traceback' not in proc.stderr
    assert proc.stderr == (f'scipion-reciprocal mapclust: warning: names CSV '
                           f'{folder / "names.csv"}: 1 of its rows name no input map '
                           f'(map9.mrc); they are ignored\n')
    assert folder_status(out, verify=True).complete
    assert 'name no input map (map9.mrc)' in (out / 'summary.txt').read_text()
    assert_one_line(cli('mapclust', *paths, '--clusters', '2', '--outdir', out), 2,
                    'is not empty')


def test_mapclust_ctrl_c_exits_130_with_one_line(maps, tmp_path):
    _, paths = maps
    out = tmp_path / 'out'
    proc = start('mapclust', *paths, '--mirror', '--outdir', out)
    assert proc.stdout.readline().startswith('4 maps; common grid')    # aligning now
    proc.send_signal(signal.SIGINT)
    _, proc.stderr = proc.communicate()
    assert_one_line(proc, 130, 'scipion-reciprocal mapclust: interrupted; ')
    assert not folder_status(out)
