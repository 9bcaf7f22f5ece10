"""Classifications from RELION, cryoSPARC and label files, matched across software."""
import pickle

import numpy as np
import pandas as pd
import pytest
import starfile

from scipion_reciprocal.core.classification_inputs import (attach_star_sources,
                                                           classifications_from_inputs,
                                                           parse_input)
from scipion_reciprocal.core.reciprocal import ReciprocalError, reciprocal_analysis
from scipion_reciprocal.formats.cryosparc import CsError
from scipion_reciprocal.formats.errors import FormatError
from scipion_reciprocal.simulate.cryosparc import IMPORT_JOB, demo_with_cryosparc, join_fields

N = 90


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('engines')
    demo, _, cs = demo_with_cryosparc(root, {
        'J30': ('hetero_refine', 'Class3D/job085', 'J1'),
        'J31': ('class_3D', 'Class3D/job086', 'J2'),
        'J33': ('hetero_refine', 'Class3D/job087', 'J1')}, n_particles=N, seed=2,
        cryosparc_seed=8)
    return root, demo, cs


def _pairs(result, a, b):
    """(row in a, row in b) of every particle the analysis matched."""
    rows = result.assignments
    return rows[f'row_{a}'].to_numpy(), rows[f'row_{b}'].to_numpy()


def _truth_counts(x, y):
    return pd.crosstab(pd.Series(x, name='a'), pd.Series(y, name='b')).to_numpy()


def test_input_kinds(data, tmp_path):
    root, demo, cs = data
    assert parse_input(root / 'relion/Class3D/job085').kind == 'relion_job'
    assert parse_input(str(demo.class_jobs['Class3D/job085'])).kind == 'star'
    assert parse_input(root / 'P12/J30').kind == 'cryosparc_job'
    assert parse_input(str(cs.files['J30'][0])).kind == 'cs'
    spec = parse_input(f'{tmp_path}/labels.pkl@{cs.files["J30"][0]}')
    assert (spec.kind, spec.path.name, spec.particles.kind) == ('labels', 'labels.pkl', 'cs')
    with pytest.raises(FormatError, match='nothing.star: input not found'):
        parse_input(tmp_path / 'nothing.star')
    with pytest.raises(FormatError, match='neither a RELION classification job'):
        parse_input(tmp_path)
    (tmp_path / 'a.txt').write_text('1')
    with pytest.raises(FormatError, match='unknown input kind'):
        parse_input(tmp_path / 'a.txt')


def test_relion_and_cryosparc_runs_match_row_for_row_by_image(data):
    root, demo, cs = data
    clfs, note = classifications_from_inputs([root / 'relion/Class3D/job085', root / 'P12/J30'],
                                             read_confidence=True)
    assert [c.name for c in clfs] == ['job085', 'J30'] and note.startswith('image location')
    assert [c.number for c in clfs] == [85, 2]
    assert clfs[1].kind == '3D' and clfs[1].cs_source is not None
    assert clfs[1].classes.min() == 1              # cryoSPARC's 0-based classes, + 1
    result = reciprocal_analysis(clfs)
    rows_relion, rows_cs = _pairs(result, 'job085', 'J30')
    assert len(rows_relion) == N                    # every particle matched
    assert np.array_equal(cs.order['J30'][rows_cs], rows_relion)     # the same particles
    labels = demo.labels['Class3D/job085']
    assert np.array_equal(result.count_matrix('job085', 'J30'),
                          _truth_counts(labels, labels[cs.order['J30']][np.argsort(
                              cs.order['J30'])]))


def test_reextracted_cryosparc_run_matches_relion_by_coordinates(data):
    root, demo, cs = data
    clfs, note = classifications_from_inputs([root / 'relion/Class3D/job086', root / 'P12/J31'])
    assert note.startswith('micrograph + coordinates') and 'image location (stack + index): 0' \
        in note
    result = reciprocal_analysis(clfs)
    rows_relion, rows_cs = _pairs(result, 'job086', 'J31')
    assert len(rows_relion) == N
    assert np.array_equal(cs.order['J31'][rows_cs], rows_relion)
    labels = demo.labels['Class3D/job086']
    assert np.array_equal(result.count_matrix('job086', 'J31'), _truth_counts(labels, labels))


def test_cryosparc_runs_of_one_lineage_match_by_uid(data):
    root, demo, cs = data
    clfs, note = classifications_from_inputs([cs.files['J30'][0], cs.files['J33'][0]],
                                             names=['hetero A', 'hetero B'])
    assert note.startswith('cryoSPARC uid') and [c.name for c in clfs] == ['hetero A',
                                                                          'hetero B']
    clfs_numbered, _ = classifications_from_inputs(
        [cs.files['J30'][0], cs.files['J33'][0], root / 'relion/Class3D/job085'],
        names=['a', 'b', 'job002'], key='image')
    assert [c.number for c in clfs_numbered] == [1, 3, 2]      # job002 keeps 2
    result = reciprocal_analysis(clfs)
    rows_a, rows_b = _pairs(result, 'hetero A', 'hetero B')
    assert len(rows_a) == N and np.array_equal(cs.order['J30'][rows_a], cs.order['J33'][rows_b])
    truth = _truth_counts(demo.labels['Class3D/job085'], demo.labels['Class3D/job087'])
    assert np.array_equal(result.count_matrix('hetero A', 'hetero B'), truth)


def test_label_files_follow_their_particle_file(data, tmp_path):
    root, demo, cs = data
    star = demo.particles_star
    kmeans = np.random.default_rng(0).integers(0, 4, N)
    with open(tmp_path / 'labels.pkl', 'wb') as fh:
        pickle.dump(kmeans, fh)
    clfs, _ = classifications_from_inputs([f'{tmp_path}/labels.pkl@{star}',
                                           root / 'relion/Class3D/job085'])
    assert clfs[0].name == f'{tmp_path.name}_labels'
    assert np.array_equal(clfs[0].classes, kmeans + 1)
    result = reciprocal_analysis(clfs)
    assert np.array_equal(result.count_matrix(clfs[0].name, 'job085'),
                          _truth_counts(kmeans + 1, demo.labels['Class3D/job085']))
    # the same labels in the order of a .cs file
    on_cs = kmeans[cs.order['J30']]
    with open(tmp_path / 'cs_labels.pkl', 'wb') as fh:
        pickle.dump(on_cs, fh)
    clfs, note = classifications_from_inputs([f'{tmp_path}/cs_labels.pkl@{cs.files["J30"][0]}',
                                              root / 'P12/J30'])
    assert note.startswith('cryoSPARC uid') and clfs[0].cs_source is not None
    result = reciprocal_analysis(clfs)
    assert np.trace(result.count_matrix('cs_labels', 'J30')) < N     # labels are not classes
    assert result.count_matrix('cs_labels', 'J30').sum() == N


def test_bad_inputs_name_the_file(data, tmp_path):
    root, demo, cs = data
    imported = root / 'P12' / IMPORT_JOB / 'imported_particles.cs'
    with pytest.raises(CsError, match=r'imported_particles\.cs: no class field'):
        classifications_from_inputs([imported, root / 'P12/J30'])
    with open(tmp_path / 'short.pkl', 'wb') as fh:
        pickle.dump(np.zeros(N - 1, dtype=int), fh)
    with pytest.raises(FormatError, match=rf'short\.pkl: {N - 1} labels for the {N} particles'):
        classifications_from_inputs([f'{tmp_path}/short.pkl@{demo.particles_star}',
                                     root / 'P12/J30'])
    with open(tmp_path / 'negative.pkl', 'wb') as fh:
        pickle.dump(np.full(N, -1), fh)
    with pytest.raises(FormatError, match=r'negative\.pkl: 90 labels below 0'):
        classifications_from_inputs([f'{tmp_path}/negative.pkl@{demo.particles_star}',
                                     root / 'P12/J30'])
    # particles of another dataset: no uid, stack or micrograph in common
    other = join_fields({'uid': np.arange(N, dtype=np.uint64),
                         'blob/path': np.array([b'J9/extract/other.mrc'] * N),
                         'blob/idx': np.arange(N, dtype=np.uint32),
                         'alignments3D/class': np.zeros(N, dtype=np.uint32)})
    from scipion_reciprocal.formats.cryosparc import write_cs
    write_cs(tmp_path / 'other.cs', other)
    with pytest.raises(ReciprocalError, match=r'no particle in common across all inputs '
                                              r'\(job085: .*run_it002_data\.star; other: '
                                              r'.*other\.cs\)'):
        classifications_from_inputs([root / 'relion/Class3D/job085', tmp_path / 'other.cs'])
    with pytest.raises(ReciprocalError, match='job085 .* cannot be matched by cryoSPARC uid'):
        classifications_from_inputs([root / 'relion/Class3D/job085', root / 'P12/J30'],
                                    key='uid')


def test_automatic_key_skips_a_key_that_cannot_be_built(data, tmp_path):
    """A STAR file without micrograph pixel size and a re-extracted cryoSPARC run: no image
    in common, coordinates not usable: the error says both (not only the pixel size)."""
    root, demo, cs = data
    star = starfile.read(demo.class_jobs['Class3D/job085'])
    optics = star['optics'].drop(columns=[c for c in star['optics'].columns
                                          if c.startswith('rlnMicrograph')])
    starfile.write({'optics': optics, 'particles': star['particles']},
                   tmp_path / 'no_psize.star')
    inputs = [tmp_path / 'no_psize.star', root / 'P12/J31']
    with pytest.raises(ReciprocalError, match=r'no particle in common .*image location '
                                              r'\(stack \+ index\): 0, micrograph \+ '
                                              r'coordinates: not usable \(.*no_psize\.star: no '
                                              r'micrograph pixel size'):
        classifications_from_inputs(inputs)
    with pytest.raises(FormatError, match=r'no_psize\.star: no micrograph pixel size'):
        classifications_from_inputs(inputs, key='coordinates')
    clfs, note = classifications_from_inputs(inputs, pixel_size=float(
        star['optics']['rlnMicrographOriginalPixelSize'].iloc[0]))
    assert note.startswith('micrograph + coordinates (90 particles in every run')


def test_star_source_of_cryosparc_input(data, tmp_path):
    root, demo, cs = data
    clfs, _ = classifications_from_inputs([root / 'relion/Class3D/job085', root / 'P12/J30'])
    written = attach_star_sources(clfs, tmp_path)
    assert written == [tmp_path / 'J30.star'] and clfs[1].source.path == written[0]
    converted = starfile.read(written[0])
    assert 'optics' in converted and len(converted['particles']) == N
    assert converted['particles']['rlnClassNumber'].tolist() == list(clfs[1].classes)
    clfs[1].source.write_subset(tmp_path / 'subset.star', [0, 5])
    assert len(starfile.read(tmp_path / 'subset.star')['particles']) == 2


def test_cryosparc_class_maps_and_the_space_their_conversion_takes(data, tmp_path):
    root, demo, cs = data
    clfs, _ = classifications_from_inputs([root / 'relion/Class3D/job085', root / 'P12/J30'])
    maps = clfs[1].class_maps            # the job's class volumes, as RELION's are listed
    assert clfs[0].class_maps is None
    assert maps['class'].tolist() == [1, 2, 3] and maps['exists'].all()
    assert [p.name for p in maps['path']] == [f'J30_class_{k:02d}_00020_volume.mrc'
                                              for k in range(3)]
    assert (maps['index'] == 0).all()
    np.testing.assert_allclose(maps['distribution'], np.bincount(
        demo.labels['Class3D/job085'], minlength=4)[1:] / N)
    # the free-space estimate counts inputs/J30.star and J30's STAR subsets
    from scipion_reciprocal.core.reciprocal_io import (conversions_size, subsets_size,
                                                       write_subsets)
    result = reciprocal_analysis(clfs, min_overlap=1)
    estimate = subsets_size(result) + conversions_size(result)
    attach_star_sources(clfs, tmp_path, 'inputs')
    write_subsets(result, tmp_path)
    written = sum(p.stat().st_size for p in tmp_path.rglob('*') if p.is_file())
    assert (tmp_path / 'inputs' / 'J30.star').exists()
    assert written <= estimate <= 1.5 * written
