"""``scipion-reciprocal reciprocal --inputs`` / ``--cryosparc_dir``: RELION, cryoSPARC and label
files of the same simulated particles, end to end, and their bad-input errors."""
import json
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
import starfile

from scipion_reciprocal.cli import main
from scipion_reciprocal.formats.cryosparc import CsParticles, write_cs
from scipion_reciprocal.formats.star import read_particles_star
from scipion_reciprocal.simulate.cryosparc import IMPORT_JOB, demo_with_cryosparc, join_fields

N = 90


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('cli-engines')
    demo, _, cs = demo_with_cryosparc(root, {
        'J30': ('hetero_refine', 'Class3D/job085', 'J1'),
        'J31': ('class_3D', 'Class3D/job086', 'J2')}, n_particles=N, seed=4, cryosparc_seed=6)
    kmeans = np.random.default_rng(5).integers(0, 3, N)
    with open(root / 'labels.pkl', 'wb') as fh:
        pickle.dump(kmeans, fh)
    return root, demo, cs, kmeans


def _counts(out, a, b, n_a, n_b):
    counts = pd.read_csv(out / 'matrices' / f'counts_{a}_vs_{b}.csv', index_col=0)
    assert counts.shape == (n_a, n_b)
    return counts.to_numpy()


def _truth(x, y, n_x, n_y):
    table = np.zeros((n_x, n_y), dtype=int)
    np.add.at(table, (np.asarray(x) - 1, np.asarray(y) - 1), 1)
    return table


def test_any_engine_as_input(data, tmp_path, capsys):
    root, demo, cs, kmeans = data
    out = tmp_path / 'out'
    status = main(['reciprocal', '--inputs', str(root / 'relion/Class3D/job085'),
                   str(root / 'P12/J30'), str(cs.files['J31'][0]),
                   f'{root}/labels.pkl@{demo.particles_star}',
                   '--names', 'relion', 'hetero', 'class3D', 'kmeans', '--outdir', str(out),
                   '--no-plots', '--min-overlap', '3'])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert 'particles matched by micrograph + coordinates' in printed.out
    jobs = pd.read_csv(out / 'jobs.csv')
    assert jobs['job'].tolist() == ['relion', 'hetero', 'class3D', 'kmeans']
    assert jobs['rows_shared'].tolist() == [N] * 4          # every particle matched
    labels = demo.labels
    assert np.array_equal(_counts(out, 'relion', 'hetero', 3, 3),
                          _truth(labels['Class3D/job085'], labels['Class3D/job085'], 3, 3))
    assert np.array_equal(_counts(out, 'hetero', 'class3D', 3, 4),
                          _truth(labels['Class3D/job085'], labels['Class3D/job086'], 3, 4))
    assert np.array_equal(_counts(out, 'kmeans', 'class3D', 3, 4),
                          _truth(kmeans + 1, labels['Class3D/job086'], 3, 4))
    # .cs subsets: the input's rows with every field and uid, loadable with numpy.load
    particles = CsParticles(cs.files['J30'][0], [cs.files['J30'][1]])
    classes = particles.column('alignments3D/class')
    for k in (1, 2, 3):
        subset = np.load(out / 'per_class' / f'hetero_class{k}.cs')
        expected = particles.subset(np.flatnonzero(classes == k - 1))
        assert subset.dtype == expected.dtype and len(subset) == np.sum(labels[
            'Class3D/job085'] == k)
        assert subset.tobytes() == expected.tobytes()
        assert set(subset.dtype.names) == set(particles.fields) and 'uid' in subset.dtype.names
        star_subset = starfile.read(out / 'per_class' / f'hetero_class{k}.star')
        assert (star_subset['particles']['rlnClassNumber'] == k).all()
        assert len(star_subset['particles']) == len(subset)
    # an intersection of two cryoSPARC runs, from each side
    pair = pd.read_csv(out / 'matrices' / 'counts_hetero_vs_class3D.csv', index_col=0)
    i, j = np.unravel_index(np.argmax(pair.to_numpy()), pair.shape)
    name = f'hetero_class{i + 1}_vs_class3D_class{j + 1}'
    subset = np.load(out / 'intersections' / f'{name}.cs')
    assert len(subset) == pair.to_numpy().max()
    assert np.all(subset['alignments3D/class'] == i)
    assert not (out / 'per_class' / 'relion_class1.cs').exists()       # RELION: STAR only
    assert (out / 'per_class' / 'relion_class1.star').exists()
    manifest = json.loads((out / 'manifest.json').read_text())
    listed = json.dumps(manifest)
    assert 'per_class/hetero_class1.cs' in listed and 'inputs/hetero.star' in listed
    assert 'kmeans' in (out / 'summary.txt').read_text()


def test_class_maps_of_cryosparc_jobs_are_drawn(data, tmp_path, capsys):
    root, _, _, _ = data
    out = tmp_path / 'out'
    status = main(['reciprocal', '--inputs', str(root / 'relion/Class3D/job085'),
                   str(root / 'P12/J30'), '--outdir', str(out), '--no-subsets'])
    assert status == 0, capsys.readouterr().err
    listed = json.dumps(json.loads((out / 'manifest.json').read_text()))
    for job in ('job085', 'J30'):
        png = out / 'plots' / f'class_slices_{job}.png'
        assert png.stat().st_size > 10000 and f'plots/class_slices_{job}.png' in listed


def test_cryosparc_project_by_job(data, tmp_path, capsys):
    root, demo, cs, _ = data
    out = tmp_path / 'out'
    status = main(['reciprocal', '--cryosparc_dir', str(root / 'P12'), '--jobs', 'J30,J31',
                   '--outdir', str(out), '--no-plots', '--no-subsets', '--min-confidence',
                   '0.7'])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    jobs = pd.read_csv(out / 'jobs.csv')
    assert jobs['job'].tolist() == ['J30', 'J31']
    posterior = CsParticles(cs.files['J30'][0]).column('alignments3D/class_posterior')
    assert jobs['below_confidence'].iloc[0] == int(np.sum(posterior < 0.7))
    assert not (out / 'per_class').exists()


def test_stable_particles_of_a_first_cryosparc_run_as_cs(data, tmp_path, capsys):
    """With a cryoSPARC job first, its stable and unstable particles are also .cs files: its
    rows verbatim, the same particles as the STAR files."""
    root, demo, cs, _ = data
    out = tmp_path / 'out'
    status = main(['reciprocal', '--inputs', str(root / 'P12/J30'),
                   str(root / 'relion/Class3D/job086'), '--outdir', str(out), '--no-plots',
                   '--no-subsets'])
    assert status == 0, capsys.readouterr().err
    verdict = json.loads((out / 'verdict.json').read_text())
    particles = CsParticles(cs.files['J30'][0], [cs.files['J30'][1]])
    membership = pd.read_csv(out / 'consensus_membership.csv')
    stable_rows = np.sort(membership.loc[membership['stability'] >= 0.75, 'row_J30'])
    stable, unstable = (np.load(out / f'{kind}_particles.cs') for kind in ('stable', 'unstable'))
    assert 0 < len(stable) == verdict['stable_particles'] < N
    assert len(unstable) == verdict['unstable_particles'] == N - len(stable)
    assert stable.tobytes() == particles.subset(stable_rows).tobytes()
    assert set(stable.dtype.names) == set(particles.fields)
    assert not set(stable['uid']) & set(unstable['uid'])
    star = starfile.read(out / 'stable_particles.star')['particles']
    assert len(star) == len(stable)
    listed = json.dumps(json.loads((out / 'manifest.json').read_text()))
    assert 'stable_particles.cs' in listed and 'unstable_particles.cs' in listed


def test_only_particles_of_a_relion_star_in_cryosparc_runs_matched_by_coordinates(
        data, tmp_path, capsys):
    """J31's particles were re-extracted from cryoSPARC's own micrographs
    (``..._patch_aligned_doseweighted``): the RELION particles to keep match them by
    micrograph stem + coordinates, as the runs match each other."""
    root, demo, cs, _ = data
    star = read_particles_star(demo.particles_star)
    from scipion_reciprocal.formats.star import write_particles_star
    write_particles_star(tmp_path / 'keep.star', star.particles.iloc[:40], star.optics)
    out = tmp_path / 'out'
    status = main(['reciprocal', '--inputs', str(root / 'P12/J30'), str(root / 'P12/J31'),
                   '--outdir', str(out), '--no-plots', '--no-subsets', '--only-particles',
                   str(tmp_path / 'keep.star')])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    assert 'particles matched by micrograph + coordinates' in printed.out
    assert pd.read_csv(out / 'jobs.csv')['rows_kept'].tolist() == [40, 40]


def test_relion_folders_keep_working_with_names(data, tmp_path, capsys):
    root, demo, _, _ = data
    out = tmp_path / 'out'
    assert main(['reciprocal', '--relion_dir', str(root / 'relion'), '--jobs', '85,86',
                 '--names', 'first', 'second', '--outdir', str(out), '--no-plots']) == 0
    assert pd.read_csv(out / 'jobs.csv')['job'].tolist() == ['first', 'second']
    assert (out / 'per_class' / 'first_class1.star').exists()


def test_names_with_spaces_and_keywords(data, tmp_path, capsys):
    root, demo, _, _ = data
    out = tmp_path / 'out'
    status = main(['reciprocal', '--relion_dir', str(root / 'relion'), '--jobs', '85,86',
                   '--names', 'first run', 'class', '--outdir', str(out), '--no-plots',
                   '--no-subsets'])
    assert status == 0, capsys.readouterr().err
    summary = (out / 'summary.txt').read_text()
    first = pd.read_csv(out / 'consensus_groups.csv').iloc[0]
    assert (f'group 1: {first["size"]} particles (first run class {first["class_first run"]}, '
            f'class class {first["class_class"]})') in summary


def _fails(capsys, args, out, *expected):
    status = main(['reciprocal'] + [str(a) for a in args] + ['--outdir', str(out)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1 and 'Traceback' not in err
    for text in expected:
        assert text in err, err
    assert not out.exists() or not any(out.iterdir())        # nothing written
    return err


def test_bad_inputs(data, tmp_path, capsys):
    root, demo, cs, kmeans = data
    relion = root / 'relion/Class3D/job085'
    out = tmp_path / 'out'
    _fails(capsys, ['--inputs', relion, root / 'P12' / IMPORT_JOB / 'imported_particles.cs'],
           out, 'imported_particles.cs: no class field')
    with open(tmp_path / 'short.pkl', 'wb') as fh:
        pickle.dump(kmeans[:-1], fh)
    _fails(capsys, ['--inputs', relion, f'{tmp_path}/short.pkl@{demo.particles_star}'], out,
           'short.pkl', f'{N - 1} labels for the {N} particles')
    foreign = join_fields({'uid': np.arange(N, dtype=np.uint64),
                           'blob/path': np.array([b'J9/extract/other.mrc'] * N),
                           'blob/idx': np.arange(N, dtype=np.uint32),
                           'alignments3D/class': np.zeros(N, dtype=np.uint32)})
    write_cs(tmp_path / 'foreign.cs', foreign)
    _fails(capsys, ['--inputs', relion, tmp_path / 'foreign.cs'], out,
           'no particle in common', 'foreign.cs', 'run_it002_data.star')
    with open(tmp_path / 'negative.pkl', 'wb') as fh:
        pickle.dump(kmeans - 1, fh)
    _fails(capsys, ['--inputs', relion, f'{tmp_path}/negative.pkl@{demo.particles_star}'], out,
           'negative.pkl', 'class numbers below 1')
    bad_star = tmp_path / 'class0.star'
    table = read_particles_star(demo.class_jobs['Class3D/job085'])
    particles = table.particles.copy()
    particles.loc[3, 'rlnClassNumber'] = 0
    from scipion_reciprocal.formats.star import write_particles_star
    write_particles_star(bad_star, particles, table.optics)
    _fails(capsys, ['--inputs', bad_star, root / 'P12/J30'], out, 'class0.star',
           'class number 0')
    _fails(capsys, ['--inputs', relion, root / 'P12/J30', '--names', 'one'], out,
           '--names gives 1 names for 2 inputs')
    _fails(capsys, ['--cryosparc_dir', root / 'P12'], out, '--jobs is required')
    _fails(capsys, ['--cryosparc_dir', root / 'P12', '--jobs', 'J30,J77'], out,
           'J77: folder not found')


def test_label_file_on_cs_particles_and_folder_without_job_json(data, tmp_path, capsys):
    root, demo, cs, kmeans = data
    copy = tmp_path / 'P12'
    shutil.copytree(root / 'P12' / 'J31', copy / 'J31')
    (copy / 'J31' / 'job.json').unlink()
    on_cs = kmeans[cs.order['J31']]
    with open(tmp_path / 'labels.pkl', 'wb') as fh:
        pickle.dump(on_cs, fh)
    out = tmp_path / 'out'
    status = main(['reciprocal', '--inputs', f'{tmp_path}/labels.pkl@{copy}/J31/'
                   f'{cs.files["J31"][0].name}', str(copy / 'J31'), '--names', 'kmeans', 'J31',
                   '--outdir', str(out), '--no-plots'])
    assert status == 0, capsys.readouterr().err
    assert 'cryoSPARC uid' in capsys.readouterr().out
    counts = _counts(out, 'kmeans', 'J31', 3, 4)
    assert np.array_equal(counts, _truth(kmeans + 1, demo.labels['Class3D/job086'], 3, 4))
    assert (out / 'per_class' / 'kmeans_class1.cs').exists()
