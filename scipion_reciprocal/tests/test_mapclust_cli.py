"""``scipion-reciprocal mapclust`` end to end: files read back, errors, exit status."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.transform import Rotation

from scipion_reciprocal.cli import main
from scipion_reciprocal.formats.mrc import read_map, write_map
from scipion_reciprocal.plotting.mapclust import save_plots_from_dir
from scipion_reciprocal.simulate.molecule import molecule_maps, rotate_map


@pytest.fixture(scope='module')
def maps(tmp_path_factory):
    """Three conformations x two copies (the second rotated and shifted), and a names CSV."""
    folder = tmp_path_factory.mktemp('cli_maps')
    states = molecule_maps(3, box=24, pixel_size=5.0, seed=2)
    rng = np.random.default_rng(3)
    paths, rows = [], ['original_filename,custom_name']
    for s in range(3):
        for c in range(2):
            rotation = Rotation.random(random_state=7 * s + c).as_matrix() if c else np.eye(3)
            volume = rotate_map(states[s], rotation, rng.uniform(-2, 2, 3) if c else (0, 0, 0))
            volume += rng.normal(0, 0.1 * volume.std(), volume.shape).astype(np.float32)
            path = folder / f'run_it025_class00{2 * s + c + 1}.mrc'
            write_map(path, volume, 5.0)
            paths.append(str(path))
            rows.append(f'{path.name},state {s} copy {c}')
    names = folder / 'names.csv'
    names.write_text('\n'.join(rows) + '\n')
    return folder, paths, names


def test_mapclust_end_to_end(maps, tmp_path, capsys):
    folder, paths, names = maps
    out = tmp_path / 'out'
    status = main(['mapclust', *paths, '--names', str(names), '--clusters', 'auto',
                   '--linkage', 'average', '--outdir', str(out)])
    assert status == 0
    printed = capsys.readouterr().out
    assert 'cluster 1: state 0 copy 0, state 0 copy 1' in printed
    expected = [f'state {s} copy {c}' for s in range(3) for c in range(2)]
    clusters = pd.read_csv(out / 'cluster_results.csv')
    assert list(clusters.columns) == ['name', 'cluster']
    assert clusters['name'].tolist() == expected
    assert clusters['cluster'].tolist() == [1, 1, 2, 2, 3, 3]
    sim = pd.read_csv(out / 'similarity_matrix.csv', index_col=0)
    assert sim.index.tolist() == expected and sim.columns.tolist() == expected
    values = sim.to_numpy()
    np.testing.assert_allclose(values, values.T)
    np.testing.assert_array_equal(np.diag(values), 1.0)
    same = [values[0, 1], values[2, 3], values[4, 5]]
    assert min(same) > 0.95 and min(same) > values[np.ix_([0, 1], [2, 3, 4, 5])].max()
    for name in ('similarity_matrix_heatmap.png', 'dendrogram.png', 'mds.png',
                 'cluster_1_montage.png', 'cluster_3_montage.png'):
        assert (out / name).stat().st_size > 5000
    for k in (1, 2, 3):
        average, voxel = read_map(out / 'cluster_averages' / f'cluster_{k}.mrc')
        assert average.shape == (24, 24, 24) and voxel == pytest.approx(5.0)
    assert sorted(p.name for p in (out / 'aligned').iterdir()) == sorted(
        f'state_{s}_copy_{c}.mrc' for s in range(3) for c in range(2))
    transforms = pd.read_csv(out / 'transforms.csv')
    assert transforms['name'].tolist() == expected and transforms['score'].min() > 0.9
    assert 'Clusters: 3 (automatic, silhouette' in (out / 'summary.txt').read_text()
    # A viewer redraws every figure from the files alone.
    figures = save_plots_from_dir(out, tmp_path / 'figures')
    assert sorted(figures) == ['dendrogram', 'heatmap', 'mds', 'montage_1', 'montage_2',
                               'montage_3']
    assert all((tmp_path / 'figures' / Path(f).name).stat().st_size > 5000
               for f in figures.values())


def test_mapclust_without_alignment_fixed_k(maps, tmp_path):
    _, paths, _ = maps
    out = tmp_path / 'flat'
    unrotated = paths[0::2]          # the three unmoved copies: one per conformation
    assert main(['mapclust', *unrotated, '--no-align', '--clusters', '3', '--similarity', 'fsc',
                 '--no-plots', '--quiet', '--reference', 'run_it025_class003.mrc',
                 '--outdir', str(out)]) == 0
    clusters = pd.read_csv(out / 'cluster_results.csv')
    assert clusters['name'].tolist() == ['run_it025_class001', 'run_it025_class003',
                                         'run_it025_class005']
    assert clusters['cluster'].tolist() == [1, 2, 3]
    assert (out / 'fsc_resolution.csv').exists() and not (out / 'dendrogram.png').exists()
    transforms = pd.read_csv(out / 'transforms.csv')
    assert transforms['reference'].tolist() == [False, True, False]


@pytest.mark.parametrize('extra, message', [
    (['--names', 'bad_header.csv'], 'bad_header.csv: header is'),
    (['--names', 'missing_rows.csv'],
     'missing_rows.csv: no custom name for run_it025_class002.mrc'),
    (['--mask', 'small_mask.mrc'], 'small_mask.mrc: size 10 x 10 x 10 differs'),
    (['--reference', '9'], '--reference 9: there are 2 maps'),
])
def test_mapclust_errors_are_one_line_and_exit_2(maps, tmp_path, capsys, extra, message):
    folder, paths, _ = maps
    (folder / 'bad_header.csv').write_text('filename,name\n')
    (folder / 'missing_rows.csv').write_text('original_filename,custom_name\n'
                                             'run_it025_class001.mrc,A\n')
    write_map(folder / 'small_mask.mrc', np.ones((10, 10, 10), np.float32), 5.0)
    extra = [str(folder / a) if a.endswith(('.csv', '.mrc')) else a for a in extra]
    status = main(['mapclust', *paths[:2], '--no-align', '--quiet', *extra,
                   '--outdir', str(tmp_path / 'x')])
    assert status == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('scipion-reciprocal mapclust: ')
    assert message in err


def test_mapclust_single_map_and_bad_clusters(maps, tmp_path, capsys):
    _, paths, _ = maps
    assert main(['mapclust', paths[0], '--outdir', str(tmp_path / 'one')]) == 2
    err = capsys.readouterr().err
    assert 'at least 2 maps, got 1' in err and 'run_it025_class001.mrc' in err
    with pytest.raises(SystemExit) as info:
        main(['mapclust', *paths, '--clusters', 'many', '--outdir', str(tmp_path / 'k')])
    assert info.value.code == 2
