"""End-to-end map clustering on simulated conformations: grouping, files written, bad input."""
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.transform import Rotation
from sklearn.metrics import adjusted_rand_score

from scipion_reciprocal.core.mapsim import (MapClusteringError, check_inputs, collect_inputs,
                                            read_results, run_map_clustering, write_results)
from scipion_reciprocal.core.mapsim.align import apply_transform
from scipion_reciprocal.formats.mrc import read_map, write_map
from scipion_reciprocal.simulate.molecule import molecule_maps, rotate_map

BOX, PIXEL = 32, 4.0


def corr(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    """Three conformations, four noisy copies each; copies 1-3 rotated and shifted, and one copy
    of state 2 stored on another grid (40 voxels of 3.2 A, the same 128 A box)."""
    folder = tmp_path_factory.mktemp('maps')
    states = molecule_maps(3, box=BOX, pixel_size=PIXEL, seed=0)
    fine = molecule_maps(3, box=40, pixel_size=3.2, seed=0)
    rng = np.random.default_rng(11)
    paths, truth, poses = [], [], []
    for s in range(3):
        for c in range(4):
            base, pixel = (fine[s], 3.2) if (s, c) == (2, 3) else (states[s], PIXEL)
            rotation = np.eye(3) if c == 0 else Rotation.random(random_state=100 + 4 * s + c
                                                                ).as_matrix()
            shift = np.zeros(3) if c == 0 else rng.uniform(-3, 3, 3)
            volume = rotate_map(base, rotation, shift)
            volume += rng.normal(0, 0.15 * volume.std(), volume.shape).astype(np.float32)
            path = folder / f'state{s}_copy{c}.mrc'
            write_map(path, volume, pixel)
            paths.append(str(path))
            truth.append(s)
            poses.append((rotation, shift))
    return {'paths': paths, 'truth': np.array(truth), 'poses': poses, 'states': states,
            'folder': folder}


@pytest.fixture(scope='module')
def run(dataset, tmp_path_factory):
    outdir = tmp_path_factory.mktemp('out')
    messages = []
    result = run_map_clustering(dataset['paths'], outdir=outdir, progress=messages.append)
    return result, outdir, messages


def test_alignment_recovers_the_three_conformations(dataset, run):
    result, _, messages = run
    assert adjusted_rand_score(dataset['truth'], result.labels) == 1.0
    assert result.k == 3 and result.clustering.k_method == 'silhouette'
    assert list(result.labels) == [1] * 4 + [2] * 4 + [3] * 4
    # Each aligned copy correlates with its own conformation's first copy above 0.95.
    same = result.correlation[np.ix_([0, 4, 8], range(12))]
    for s in range(3):
        assert same[s, 4 * s + 1:4 * s + 4].min() > 0.95
    assert any('global scan' in m for m in messages)


def test_aligned_maps_match_the_reference_frame(dataset, run):
    result, _, _ = run
    aligned = result.aligned_maps
    # Copies of the reference's conformation land on it; the other conformations are placed
    # by their best fit to the reference, consistently within each cluster.
    for i in (1, 2, 3):
        assert corr(aligned[i], dataset['states'][0]) > 0.95
    for members in ([4, 5, 6, 7], [8, 9, 10, 11]):
        for i in members[1:]:
            assert corr(aligned[i], aligned[members[0]]) > 0.95
    rotation, shift = dataset['poses'][2]
    found = result.transforms[2]
    # The transform undoes the applied pose: its rotation is the inverse one.
    angle = np.degrees(Rotation.from_matrix(found[:3, :3] @ rotation).magnitude())
    assert angle < 2.0
    np.testing.assert_allclose(found[:3, 3], -rotation.T @ shift, atol=0.5)


def test_resampled_map_is_reported(dataset, run):
    result, outdir, _ = run
    assert result.resampled_names() == ['state2_copy3']
    grid = pd.read_csv(outdir / 'grid.csv')
    row = grid.set_index('name').loc['state2_copy3']
    assert row['box'] == 40 and row['voxel_size'] == pytest.approx(3.2)
    assert row['grid_voxel_size'] == pytest.approx(4.0) and bool(row['resampled'])
    summary = (outdir / 'summary.txt').read_text()
    assert 'Resampled onto the common grid (1):' in summary
    assert 'state2_copy3: 40 voxels of 3.2 A' in summary
    assert 'Clusters: 3 (automatic, silhouette' in summary


def test_files_written_hold_the_results(dataset, run):
    result, outdir, _ = run
    names = [f'state{s}_copy{c}' for s in range(3) for c in range(4)]
    sim = pd.read_csv(outdir / 'similarity_matrix.csv', index_col=0)
    assert list(sim.index) == names and list(sim.columns) == names
    np.testing.assert_allclose(sim.to_numpy(), result.similarity, atol=1e-12)
    clusters = pd.read_csv(outdir / 'cluster_results.csv')
    assert list(clusters.columns) == ['name', 'cluster']
    assert list(clusters['cluster']) == list(result.labels)
    transforms = pd.read_csv(outdir / 'transforms.csv')
    assert transforms.loc[0, 'reference'] and transforms['score'].iloc[1:].min() > 0.9
    r = transforms.loc[5, [f'r{i}{j}' for i in (1, 2, 3) for j in (1, 2, 3)]].to_numpy(float)
    np.testing.assert_allclose(r.reshape(3, 3), result.transforms[5][:3, :3], atol=1e-9)
    np.testing.assert_allclose(transforms.loc[5, ['shift_x', 'shift_y', 'shift_z']].to_numpy(float),
                               result.transforms[5][:3, 3] * PIXEL, atol=1e-9)
    k_table = pd.read_csv(outdir / 'k_selection.csv')
    assert k_table.loc[k_table['chosen'], 'k'].tolist() == [3]
    mds = pd.read_csv(outdir / 'mds.csv')
    assert list(mds.columns) == ['name', 'x', 'y', 'cluster'] and len(mds) == 12
    for i, name in enumerate(names):
        data, voxel = read_map(outdir / 'aligned' / f'{name}.mrc')
        assert voxel == pytest.approx(PIXEL) and data.shape == (BOX,) * 3
        if i in (0, 7):
            np.testing.assert_allclose(data, result.aligned_maps[i], atol=1e-6)
    average, _ = read_map(outdir / 'cluster_averages' / 'cluster_1.mrc')
    assert corr(average, dataset['states'][0]) > 0.98        # less noisy than any copy
    for k in (2, 3):
        average, _ = read_map(outdir / 'cluster_averages' / f'cluster_{k}.mrc')
        members = np.flatnonzero(result.labels == k)
        assert min(corr(average, result.aligned_maps[i]) for i in members) > 0.97
    tables = read_results(outdir)
    assert tables['slices']['slices'].shape == (12, 3, BOX, BOX)
    assert list(tables['slices']['average_labels']) == [1, 2, 3]


def test_chimerax_script_opens_each_cluster_as_a_group(run):
    _, outdir, _ = run
    lines = (outdir / 'chimerax_clusters.cxc').read_text().splitlines()
    opens = [line for line in lines if line.startswith('open ')]
    assert len(opens) == 12
    for line in opens:
        assert (outdir / line.split()[1]).exists()
    assert 'rename #1000-1003 id #1' in lines and 'rename #1008-1011 id #3' in lines
    assert sum(line.startswith('volume #') and ' color #' in line for line in lines) == 3


def test_pairwise_mode_recovers_the_conformations(dataset):
    picked = [0, 1, 4, 5, 8, 9]
    result = run_map_clustering([dataset['paths'][i] for i in picked], align_mode='pairwise',
                                n_clusters='auto')
    assert adjusted_rand_score(dataset['truth'][picked], result.labels) == 1.0
    assert result.alignment.pair_scores.shape == (6, 6)
    assert set(result.medoids) == {1, 2, 3}
    # Members are placed in the reference frame through their cluster's medoid.
    moved = [apply_transform(read_map(dataset['paths'][p])[0], result.transforms[i])
             for i, p in enumerate(picked)]
    for label, medoid in result.medoids.items():
        for i in np.flatnonzero(result.labels == label):
            assert corr(moved[i], moved[medoid]) > 0.95
    assert corr(moved[1], dataset['states'][0]) > 0.95


def test_fsc_similarity_without_alignment(dataset, tmp_path):
    states = dataset['states']
    rng = np.random.default_rng(0)
    maps = [states[i // 2] + rng.normal(0, 0.05, states[0].shape).astype(np.float32)
            for i in range(6)]
    result = run_map_clustering(maps, voxel_sizes=PIXEL, align=False, similarity='fsc',
                                fsc_mode='mean', n_clusters=3, names=list('abcdef'))
    assert list(result.labels) == [1, 1, 2, 2, 3, 3]
    assert result.fsc_curves.shape == (6, 6, BOX // 2)
    assert np.all(result.similarity <= 1.0) and result.similarity[0, 1] > result.similarity[0, 2]
    assert result.fsc_resolution[0, 0] == pytest.approx(2 * PIXEL)
    assert result.similarity_table().index.tolist() == list('abcdef')
    # Written after the run: unmoved maps come out as they went in.
    outdir = tmp_path / 'later'
    files = write_results(result, outdir)
    np.testing.assert_array_equal(read_map(outdir / 'aligned' / 'c.mrc')[0], maps[2])
    fsc = pd.read_csv(files['fsc_resolution'], index_col=0)
    np.testing.assert_allclose(fsc.to_numpy(), result.fsc_resolution)
    assert 'Similarity: FSC (mean FSC up to Nyquist)' in (outdir / 'summary.txt').read_text()
    assert 'Alignment: none' in (outdir / 'summary.txt').read_text()


# ----------------------------------------------------------------------------- bad input

@pytest.fixture(scope='module')
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp('bad')
    good = molecule_maps(1, box=16, pixel_size=6.0, seed=0)[0]
    files = {}
    for name, data in [('good_a', good), ('good_b', good * 1.1), ('zeros', np.zeros_like(good)),
                       ('flat', good[:, :, :12])]:
        files[name] = folder / f'{name}.mrc'
        write_map(files[name], data, 6.0)
    nan = good.copy()
    nan[3, 3, 3] = np.nan
    files['nan'] = folder / 'nan.mrc'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)     # mrcfile warns about the NaN
        write_map(files['nan'], nan, 6.0)
    files['mask'] = folder / 'mask.mrc'
    write_map(files['mask'], np.ones((20, 20, 20), np.float32), 6.0)
    return folder, files


@pytest.mark.parametrize('bad, message', [
    ('zeros', 'zeros.mrc: all values are zero'),
    ('nan', 'nan.mrc: contains 1 NaN'),
    ('flat', 'flat.mrc: not cubic (12 x 16 x 16 voxels)'),
])
def test_bad_maps_are_named(bad_files, bad, message):
    _, files = bad_files
    with pytest.raises(MapClusteringError, match=message.replace('(', r'\(').replace(')', r'\)')):
        run_map_clustering([files['good_a'], files[bad], files['good_b']])


def test_single_map_mask_and_names_errors(bad_files):
    folder, files = bad_files
    with pytest.raises(MapClusteringError, match=r'at least 2 maps, got 1 \(.*good_a.mrc\)'):
        run_map_clustering([files['good_a']])
    with pytest.raises(MapClusteringError, match=r'mask .*mask.mrc: size 20 x 20 x 20 differs'):
        run_map_clustering([files['good_a'], files['good_b']], mask=files['mask'], align=False)
    wrong = folder / 'wrong_header.csv'
    wrong.write_text('file,name\ngood_a.mrc,A\n')
    with pytest.raises(MapClusteringError, match=r'wrong_header.csv: header is "file,name", '
                                                 r'expected "original_filename,custom_name"'):
        run_map_clustering([files['good_a'], files['good_b']], names_csv=wrong)
    partial = folder / 'partial.csv'
    partial.write_text('original_filename,custom_name\ngood_a.mrc,A\n')
    with pytest.raises(MapClusteringError, match='partial.csv: no custom name for good_b.mrc'):
        run_map_clustering([files['good_a'], files['good_b']], names_csv=partial)
    with pytest.raises(MapClusteringError, match='missing.mrc: file not found'):
        run_map_clustering([files['good_a'], folder / 'missing.mrc'], align=False)


def test_names_csv_renames(bad_files):
    folder, files = bad_files
    table = folder / 'names.csv'
    table.write_text('original_filename,custom_name\ngood_a.mrc,closed state\n'
                     'good_b,open state\nunused.mrc,x\n')
    result = run_map_clustering([files['good_a'], files['good_b']], names_csv=table,
                                align=False, n_clusters=1)
    assert result.names == ['closed state', 'open state'] and list(result.labels) == [1, 1]
    # Keys written with the job folders RELION uses still match by file name.
    table.write_text('original_filename,custom_name\nClass3D/job010/good_a.mrc,A\n'
                     '/elsewhere/good_b.mrc,B\n')
    assert collect_inputs([files['good_a'], files['good_b']], names_csv=table)[1].name == 'B'
    table.write_text('original_filename,custom_name\nx/good_a.mrc,A\ny/good_a.mrc,B\n'
                     'good_b.mrc,C\n')
    with pytest.raises(MapClusteringError, match='no custom name for good_a.mrc'):
        collect_inputs([files['good_a'], files['good_b']], names_csv=table)


def test_check_inputs_lists_problems_before_running(bad_files):
    _, files = bad_files
    assert check_inputs([files['good_a'], files['good_b']]) == []
    problems = check_inputs([files['good_a'], files['flat'], files['zeros']], mask=files['mask'],
                            read_data=True)
    assert any('flat.mrc: not a cubic 3D map' in p for p in problems)
    assert any('zeros.mrc: all values are zero' in p for p in problems)
    assert any('mask.mrc: size 20 x 20 x 20 differs from the reference map good_a' in p
               for p in problems)
    assert check_inputs([files['good_a']]) == [
        f'map clustering needs at least 2 maps, got 1 ({files["good_a"]})']
