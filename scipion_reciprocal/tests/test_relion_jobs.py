"""Finding RELION classification jobs, their last iteration, history and class maps."""
import numpy as np
import pandas as pd
import pytest

from scipion_reciprocal.core.relion_jobs import (RelionJobError, class_maps,
                                                 find_iteration_file, iteration_files,
                                                 job_kind, parse_job_list, read_job_history,
                                                 resolve_jobs)
from scipion_reciprocal.simulate.particles import optics_table
from scipion_reciprocal.simulate.relion_jobs import write_classification_job
from scipion_reciprocal.tests.realdata import REALDATA, requires_realdata

BOX = 8
PIXEL = 2.0


def particle_rows(n, stack='Extract/job007/particles.mrcs'):
    """Minimal RELION particle rows: image names, micrographs, coordinates."""
    idx = np.arange(n)
    return pd.DataFrame({
        'rlnImageName': [f'{i + 1:06d}@{stack}' for i in idx],
        'rlnMicrographName': [f'MotionCorr/job002/mic{i % 4:03d}.mrc' for i in idx],
        'rlnCoordinateX': 100.0 + 37.0 * (idx // 4),
        'rlnCoordinateY': 50.0 + 11.0 * (idx % 7),
        'rlnOpticsGroup': np.ones(n, dtype=int),
    })


def write_job(project, job_path, labels, kind='3D', n_classes=None, n_iterations=3, **kw):
    """A simulated RELION job folder whose last iteration has ``labels``."""
    labels = np.asarray(labels)
    n_classes = n_classes or int(labels.max())
    shape = (n_classes,) + (BOX,) * (3 if kind == '3D' else 2)
    maps = np.random.default_rng(len(job_path)).normal(size=shape).astype(np.float32)
    rows = kw.pop('rows', None)
    rows = particle_rows(len(labels)) if rows is None else rows
    return write_classification_job(project, job_path, rows, labels, n_iterations=n_iterations,
                                    kind=kind, class_maps=maps, n_classes=n_classes,
                                    optics=optics_table(PIXEL, BOX), seed=1, **kw)


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp('relion')
    labels = np.array([1, 1, 2, 2, 3, 3, 1, 2])
    write_job(root, 'Class3D/job085', labels, n_iterations=4, continue_from=2)
    write_job(root, 'Class2D/job013', labels, kind='2D', n_classes=4)
    write_job(root, 'InitialModel/job086', np.arange(8) % 2 + 1, n_iterations=2)
    (root / 'Class3D' / 'job090').mkdir()
    return root


def test_parse_job_list():
    assert parse_job_list('85,86,87') == ['job085', 'job086', 'job087']
    assert parse_job_list('85 86  87') == ['job085', 'job086', 'job087']
    assert parse_job_list('job85') == ['job085']
    assert parse_job_list('Class3D/job085, Class2D/job13/') == ['Class3D/job085', 'Class2D/job013']
    assert parse_job_list([85, 'job1024']) == ['job085', 'job1024']
    with pytest.raises(ValueError, match='not a job number'):
        parse_job_list('85,abc')
    with pytest.raises(ValueError, match='no job given'):
        parse_job_list(' , ')


def test_resolve_jobs(project):
    assert resolve_jobs('85 13', project_dir=project) == [project / 'Class3D' / 'job085',
                                                         project / 'Class2D' / 'job013']
    assert resolve_jobs('85', jobs_dir=project / 'Class3D') == [project / 'Class3D' / 'job085']
    assert resolve_jobs('Class2D/job013', jobs_dir=project / 'Class3D') == \
        [project / 'Class2D' / 'job013']
    with pytest.raises(RelionJobError, match=r'job job099: no folder \*/job099'):
        resolve_jobs('99', project_dir=project)
    with pytest.raises(RelionJobError, match=r'Class3D/job013: job job013: folder not found'):
        resolve_jobs('13', jobs_dir=project / 'Class3D')
    (project / 'Class2D' / 'job090').mkdir()
    try:
        with pytest.raises(RelionJobError, match='job090 is ambiguous'):
            resolve_jobs('90', project_dir=project)
    finally:
        (project / 'Class2D' / 'job090').rmdir()


def test_iteration_files_count_continued_runs_by_iteration(project):
    job = project / 'Class3D' / 'job085'
    files = iteration_files(job)
    assert files['iteration'].tolist() == [0, 1, 2, 3, 4]
    assert find_iteration_file(job).name == 'run_ct2_it004_data.star'
    assert find_iteration_file(job, 2).name == 'run_it002_data.star'
    (job / 'run_ct3_it004_data.star').write_bytes((job / 'run_ct2_it004_data.star').read_bytes())
    try:
        assert find_iteration_file(job).name == 'run_ct3_it004_data.star'
    finally:
        (job / 'run_ct3_it004_data.star').unlink()
    with pytest.raises(RelionJobError, match=r'job Class3D/job085: no iteration 7 '
                                             r'\(available: 0-4\)'):
        find_iteration_file(job, 7)
    with pytest.raises(RelionJobError, match=r'job090.*job Class3D/job090: no iteration files'):
        find_iteration_file(project / 'Class3D' / 'job090')
    with pytest.raises(RelionJobError, match=r'job Class3D/job091: folder not found'):
        find_iteration_file(project / 'Class3D' / 'job091')


def test_history_kind_and_maps(project):
    job = project / 'Class3D' / 'job085'
    history = read_job_history(job)
    assert set(history['quantity']) == {'changes_optimal_classes', 'changes_optimal_orientations',
                                        'changes_optimal_offsets', 'class_distribution',
                                        'estimated_resolution'}
    dist = history[history['quantity'] == 'class_distribution']
    assert sorted(set(dist['iteration'])) == [0, 1, 2, 3, 4]
    last = dist[dist['iteration'] == 4].sort_values('class')
    np.testing.assert_allclose(last['value'], [3 / 8, 3 / 8, 2 / 8], atol=1e-6)
    assert job_kind(job) == '3D' and job_kind(project / 'Class2D' / 'job013') == '2D'
    maps = class_maps(job)
    assert maps['class'].tolist() == [1, 2, 3] and maps['exists'].all()
    assert maps['path'].iloc[0] == job / 'run_ct2_it004_class001.mrc'
    maps2d = class_maps(project / 'Class2D' / 'job013')
    assert maps2d['index'].tolist() == [1, 2, 3, 4]
    assert maps2d['distribution'].tolist()[3] == 0.0


@requires_realdata
def test_real_job_history():
    history = read_job_history(REALDATA / 'Class3D' / 'job016')
    value = history[(history['quantity'] == 'changes_optimal_classes')]['value']
    assert value.tolist() == [0.011179]
    res = history[history['quantity'] == 'estimated_resolution'].sort_values('class')
    assert res['value'].tolist() == [20.596363, 22.656, 20.596363, 10.298182]
