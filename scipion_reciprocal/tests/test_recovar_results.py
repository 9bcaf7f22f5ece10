"""Readers of RECOVAR result folders, on small folders laid out as RECOVAR 1.0.5 writes them."""
import json
import pickle
import sys
import types

import numpy as np
import pytest

from scipion_reciprocal.formats import recovar_results as rr
from scipion_reciprocal.formats.mrc import write_map


def _job(folder, command, status='completed', log=''):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / rr.JOB_JSON).write_text(json.dumps({'command': command, 'status': status}))
    (folder / rr.RUN_LOG).write_text(log)
    return folder


def _dump(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'wb') as fh:
        pickle.dump(obj, fh)


class _JaxLikeArray:
    """Pickles the way a JAX array does: through jax._src.array._reconstruct_array."""

    def __init__(self, value):
        self.value = np.asarray(value)

    def __reduce__(self):
        fun, args, state = self.value.__reduce__()
        return _reconstruct_array, (fun, args, state, None)


def _reconstruct_array(fun, args, arr_state, aval_state):
    raise AssertionError('the reader must not call JAX')


_reconstruct_array.__module__ = 'jax._src.array'


@pytest.fixture
def pipeline_dir(tmp_path, monkeypatch):
    """A pipeline folder for 5 particles, the last two left out (--ind): rows 0..2 stored."""
    folder = _job(tmp_path / 'pipeline', 'pipeline')
    with monkeypatch.context() as patch:
        for name in ('jax', 'jax._src', 'jax._src.array'):
            patch.setitem(sys.modules, name, types.ModuleType(name))
        sys.modules['jax._src.array']._reconstruct_array = _reconstruct_array
        _dump(folder / rr.PARAMS_PKL, {'s': np.array([9.0, 4.0, 1.0], np.float32),
                                       'variance_fsc': _JaxLikeArray(np.arange(4.0))})
    _dump(folder / rr.PARTICLES_HALFSETS_PKL, [np.array([0, 2]), np.array([1])])
    zdir = folder / 'model' / 'zdim_2'
    zdir.mkdir(parents=True)
    coords = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]], np.float32)
    np.save(zdir / 'latent_coords.npy', coords)
    np.save(zdir / 'latent_coords_noreg.npy', 2 * coords)
    for suffix in ('', '_noreg'):
        np.save(zdir / f'latent_precision{suffix}.npy',
                np.tile(np.eye(2, dtype=np.float32), (3, 1, 1)))
        np.save(zdir / f'contrasts{suffix}.npy', np.ones(3, np.float32))
    volumes = folder / rr.VOLUMES_DIR
    volumes.mkdir(parents=True)
    rng = np.random.default_rng(0)
    signal = rng.normal(size=(16, 16, 16))
    for name in ('mean', 'mean_filt', 'mask', 'variance4', 'variance10', 'eigen_pos0010',
                 'eigen_pos0002', 'eigen_pos0000'):
        write_map(volumes / f'{name}.mrc', np.ones((16, 16, 16)), 3.0)
    write_map(volumes / 'mean_half1_unfil.mrc', signal, 3.0)
    write_map(volumes / 'mean_half2_unfil.mrc', signal, 3.0)
    return folder


def test_pipeline_results(pipeline_dir):
    assert rr.check_job(pipeline_dir, 'pipeline')['status'] == 'completed'
    np.testing.assert_array_equal(rr.read_eigenvalues(pipeline_dir), [9.0, 4.0, 1.0])
    np.testing.assert_array_equal(rr.read_params(pipeline_dir)['variance_fsc'], np.arange(4.0))
    assert rr.available_zdims(pipeline_dir) == [2]

    reg = rr.read_embedding(pipeline_dir, 2, n_rows=5)
    noreg = rr.read_embedding(pipeline_dir, 2, regularized=False, n_rows=5)
    np.testing.assert_array_equal(reg.coords[:3], [[0, 1], [2, 3], [4, 5]])
    assert np.isnan(reg.coords[3:]).all() and np.isnan(reg.contrasts[3:]).all()
    np.testing.assert_array_equal(noreg.coords[:3], 2 * reg.coords[:3])
    assert reg.precision.shape == (5, 2, 2)
    np.testing.assert_array_equal(rr.read_halfsets(pipeline_dir, 5), [1, 2, 1, 0, 0])

    volumes = rr.pipeline_volumes(pipeline_dir)
    assert volumes.mean.name == 'mean.mrc' and volumes.focus_mask is None
    assert list(volumes.variances) == [4, 10]
    assert [p.name for p in volumes.eigenvolumes] == ['eigen_pos0000.mrc', 'eigen_pos0002.mrc',
                                                      'eigen_pos0010.mrc']
    fsc = rr.read_mean_fsc(pipeline_dir)
    assert len(fsc['frequency']) == 8 and fsc['voxel_size'] == pytest.approx(3.0)
    np.testing.assert_allclose(fsc['unmasked'], 1.0, atol=1e-6)


def test_missing_pieces_are_named(pipeline_dir):
    with pytest.raises(rr.RecovarResultError, match='zdim 4 not computed.*available: \\[2\\]'):
        rr.read_embedding(pipeline_dir, 4)
    with pytest.raises(rr.RecovarResultError, match='3 rows but the id map has 2'):
        rr.read_embedding(pipeline_dir, 2, n_rows=2)
    (pipeline_dir / rr.VOLUMES_DIR / 'mean_half2_unfil.mrc').unlink()
    with pytest.raises(rr.RecovarResultError, match='mean_half2_unfil.mrc: half map 2 not found'):
        rr.pipeline_volumes(pipeline_dir)
    with pytest.raises(rr.RecovarResultError, match="is a 'pipeline' job, expected 'analyze'"):
        rr.check_job(pipeline_dir, 'analyze')
    with pytest.raises(rr.RecovarResultError, match='job.json: not found'):
        rr.check_job(pipeline_dir / 'nothing')


def test_killed_job_shows_log_tail_and_memory_options(tmp_path):
    log = '\n'.join(f'line {i}' for i in range(100))
    log += '\njaxlib.XlaRuntimeError: RESOURCE_EXHAUSTED'
    folder = _job(tmp_path / 'p', 'pipeline', status='failed', log=log)
    with pytest.raises(rr.RecovarResultError) as error:
        rr.check_job(folder, 'pipeline', log_lines=5)
    message = str(error.value)
    assert 'pipeline failed' in message and '--low-memory-option' in message
    assert 'line 96' in message and 'line 95' not in message
    assert message.endswith('RESOURCE_EXHAUSTED')
    killed = _job(tmp_path / 'k', 'analyze', status='running', log='computing centers')
    with pytest.raises(rr.RecovarResultError,
                       match='(?s)did not finish.*killed.*low-memory.*computing centers'):
        rr.check_job(killed)


def test_analyze_results(tmp_path):
    folder = _job(tmp_path / 'analysis', 'analyze')
    _dump(folder / rr.KMEANS_PKL, {'centers': np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]]),
                                   'labels': np.array([2.0, 0.0, np.nan, 1.0, 2.0])})
    _dump(folder / rr.UMAP_PKL, np.arange(10.0).reshape(5, 2))
    kmeans = rr.read_kmeans(folder, n_rows=6)
    np.testing.assert_array_equal(kmeans.labels, [2, 0, -1, 1, 2, -1])
    assert kmeans.n_clusters == 3
    np.testing.assert_array_equal(kmeans.members([2]), [0, 4])
    np.testing.assert_array_equal(kmeans.members([2], invert=True), [1, 3])
    assert rr.read_umap(folder, 6).shape == (6, 2)
    assert rr.read_umap(tmp_path) is None

    centres = folder / rr.KMEANS_DIR
    centres.mkdir()
    for k in (1, 0):
        write_map(centres / f'center{k:03d}.mrc', np.zeros((4, 4, 4)), 1.0)
        (centres / 'diagnostics' / f'center{k:03d}').mkdir(parents=True)
        np.savetxt(centres / 'diagnostics' / f'center{k:03d}' / 'latent_coords.txt', [[k, -k]])
    volumes = rr.kernel_volumes(centres, 'center')
    assert [p.name for p in volumes.volumes] == ['center000.mrc', 'center001.mrc']
    assert volumes.half2[1].name == 'center001_half2_unfil.mrc'
    np.testing.assert_array_equal(volumes.latent_points, [[0, 0], [1, -1]])

    traj = folder / 'traj000'
    traj.mkdir()
    (traj / rr.PATH_JSON).write_text(json.dumps({
        'path': [[0, 0], [0.5, 0.5], [1, 1]], 'density': [1.0, 0.5, 2.0],
        'path_subsampled': [[0, 0], [1, 1]], 'density_subsampled': [1.0, 2.0]}))
    trajectories = rr.analysis_trajectories(folder)
    assert len(trajectories) == 1
    assert trajectories[0].path.shape == (3, 2) and trajectories[0].volumes.volumes == []
    np.testing.assert_array_equal(trajectories[0].point_density, [1.0, 2.0])


def test_density_and_subsets(tmp_path):
    folder = tmp_path / 'density'
    alphas = [10.0, 1.0, 0.1]
    for i, alpha in enumerate(alphas):
        _dump(folder / rr.DENSITY_ALL_DIR / f'deconv_density_{i}.pkl',
              {'density': np.full((3, 3), i), 'latent_space_bounds': np.ones((2, 2)),
               'alpha': alpha})
    _dump(folder / rr.DENSITY_KNEE_PKL, {'density': np.full((3, 3), 1), 'alpha': 1.0,
                                         'latent_space_bounds': np.ones((2, 2))})
    density = rr.read_density(folder)
    np.testing.assert_array_equal(density.alphas, alphas)
    assert density.knee_index == 1 and density.knee_alpha == 1.0 and density.lcurve_plot is None
    np.testing.assert_array_equal(density.density(2)[0], 2)

    np.savetxt(tmp_path / rr.STABLE_STATES_TXT, [[0.0, 1.0], [2.0, 3.0]])
    assert rr.read_stable_states(tmp_path).shape == (2, 2)
    _dump(tmp_path / 'subset' / rr.SUBSET_PKL, np.array([4, 1, 2]))
    np.testing.assert_array_equal(rr.read_subset_indices(tmp_path / 'subset', n_rows=5), [1, 2, 4])
    with pytest.raises(rr.RecovarResultError, match='row 4 outside the 3 particles'):
        rr.read_subset_indices(tmp_path / 'subset', n_rows=3)


def test_outliers(tmp_path):
    combined = tmp_path / rr.OUTLIERS_DIR
    _dump(combined / 'combined_image_outliers_4.pkl', np.array([7, 2], np.int64))
    _dump(combined / 'combined_image_inliers_4.pkl', np.array([0, 1, 3, 4, 5, 6], np.int32))
    outliers, inliers = rr.read_outliers(tmp_path, 4, n_rows=8)
    np.testing.assert_array_equal(outliers, [2, 7])
    np.testing.assert_array_equal(inliers, [0, 1, 3, 4, 5, 6])
    with pytest.raises(rr.RecovarResultError,
                       match='combined_image_outliers_2.pkl: subset indices not found'):
        rr.read_outliers(tmp_path, 2)
