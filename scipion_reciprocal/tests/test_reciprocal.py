"""Reciprocal analysis engine: exact matrices, statistics, consensus, subsets and bad input."""
import numpy as np
import pandas as pd
import pytest
import starfile
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from scipion_reciprocal.core.reciprocal import (ReciprocalError, classification_from_dataframe,
                                                classification_from_star,
                                                classifications_from_relion,
                                                reciprocal_analysis)
from scipion_reciprocal.core.reciprocal_io import sankey_table, write_results
from scipion_reciprocal.formats.errors import StarError
from scipion_reciprocal.formats.star import write_star
from scipion_reciprocal.tests.realdata import REALDATA, requires_realdata

OPTICS = pd.DataFrame({'rlnOpticsGroupName': ['opticsGroup1'], 'rlnOpticsGroup': [1],
                       'rlnMicrographOriginalPixelSize': [1.0], 'rlnVoltage': [300.0],
                       'rlnSphericalAberration': [2.7], 'rlnAmplitudeContrast': [0.1],
                       'rlnImagePixelSize': [1.0], 'rlnImageSize': [64],
                       'rlnImageDimensionality': [2]})

# Hand-built case: 10 particles, job085 classes A, job086 classes B.
A = [1, 1, 1, 2, 2, 2, 2, 3, 3, 3]
B = [1, 1, 2, 2, 2, 3, 3, 3, 3, 1]
COUNTS_AB = [[2, 1, 0], [0, 2, 2], [1, 0, 2]]
JACCARD_AB = [[0.5, 0.2, 0.0], [0.0, 0.4, 1 / 3], [0.2, 0.0, 0.4]]


def write_job_star(path, classes, names=None, order=None, **extra):
    n = len(classes)
    names = names or [f'{i + 1:06d}@Extract/job007/stack.mrcs' for i in range(n)]
    frame = pd.DataFrame({'rlnImageName': names, 'rlnClassNumber': classes,
                          'rlnOpticsGroup': 1, 'rlnAnglePsi': np.arange(n) * 1.5, **extra})
    if order is not None:
        frame = frame.iloc[order].reset_index(drop=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_star(path, {'optics': OPTICS, 'particles': frame})
    return path


@pytest.fixture
def hand_built(tmp_path):
    a = write_job_star(tmp_path / 'Class3D' / 'job085' / 'run_it025_data.star', A)
    order = [9, 3, 0, 5, 1, 8, 2, 7, 4, 6]      # job086 lists the particles in another order
    names = [f'{i + 1}@./Extract/job007//stack.mrcs' for i in range(10)]
    b = write_job_star(tmp_path / 'Class3D' / 'job086' / 'run_it025_data.star', B, names, order)
    return tmp_path, classification_from_star(a), classification_from_star(b), order


def test_hand_built_matrices(hand_built):
    _, a, b, order = hand_built
    assert (a.name, a.number, b.name, b.number) == ('job085', 85, 'job086', 86)
    result = reciprocal_analysis([a, b])
    assert result.warnings == []
    np.testing.assert_array_equal(result.matrix('counts', 'job085', 'job086'), COUNTS_AB)
    np.testing.assert_array_equal(result.matrix('counts', 'job086', 'job085'),
                                  np.transpose(COUNTS_AB))
    np.testing.assert_allclose(result.matrix('fractions', 'job085', 'job086'),
                               [[2 / 3, 1 / 3, 0], [0, 0.5, 0.5], [1 / 3, 0, 2 / 3]])
    np.testing.assert_allclose(result.matrix('fractions', 'job086', 'job085'),
                               [[2 / 3, 0, 1 / 3], [1 / 3, 2 / 3, 0], [0, 0.5, 0.5]])
    np.testing.assert_allclose(result.matrix('jaccard', 'job085', 'job086'), JACCARD_AB)
    counts = result.counts
    assert list(counts.columns) == ['job1', 'job2', 'class1', 'class2', 'value']
    assert len(counts) == 18 and set(counts['job1']) == {85, 86}
    row = counts[(counts.job1 == 86) & (counts.job2 == 85) & (counts.class1 == 3) &
                 (counts.class2 == 2)]
    assert row['value'].tolist() == [2]
    assert result.matrix('counts', 'job085', 'job086').index[0] == 'job085_class1'
    labels_b = np.asarray(B)
    assert result.agreement['adjusted_rand'].iloc[0] == pytest.approx(
        adjusted_rand_score(A, labels_b), abs=1e-12)
    assert result.agreement['normalized_mutual_info'].iloc[0] == pytest.approx(
        normalized_mutual_info_score(A, labels_b), abs=1e-12)
    consensus = result.consensus
    assert consensus['size'].tolist() == [2, 2, 2, 2, 1, 1]
    assert consensus['class_job085'].tolist() == [1, 2, 2, 3, 1, 3]
    assert consensus['class_job086'].tolist() == [1, 2, 3, 3, 2, 1]
    groups = result.assignments.set_index('row_job085')['group'].sort_index()
    assert groups.tolist() == [1, 1, 5, 2, 2, 3, 3, 4, 4, 6]
    stability = result.stability.set_index(['job', 'class'])
    assert stability.loc[('job085', 2), 'best_class'] == 2
    assert stability.loc[('job085', 2), 'jaccard'] == pytest.approx(0.4)
    # B was shuffled: rows in job086 of the particles of job085 class 1 (particles 0, 1, 2)
    subset = next(s for s in result.subsets if s.name == 'job085_class1_vs_job086_class1')
    assert {k: v.tolist() for k, v in subset.rows.items()} == {
        'job085': [0, 1], 'job086': sorted([order.index(0), order.index(1)])}
    sankey = sankey_table(result)
    assert sankey.to_dict('list') == {
        'id': [0, 1, 2, 3, 4, 5],
        'jobANo_class': ['85_1', '85_1', '85_2', '85_2', '85_3', '85_3'],
        'jobBNo_class': ['86_1', '86_2', '86_2', '86_3', '86_1', '86_3'],
        '#particles': [2, 1, 2, 2, 1, 2]}


def test_written_files_and_subsets(hand_built, tmp_path):
    _, a, b, order = hand_built
    result = reciprocal_analysis([a, b], min_overlap=2)
    written = write_results(result, tmp_path / 'out')
    out = tmp_path / 'out'
    long = pd.read_csv(out / 'counts_matrix.csv')
    assert list(long.columns) == ['job1', 'job2', 'class1', 'class2', 'value']
    pd.testing.assert_frame_equal(long, result.counts)
    wide = pd.read_csv(out / 'matrices' / 'counts_job085_vs_job086.csv', index_col=0)
    assert wide.to_numpy().tolist() == COUNTS_AB
    assert list(wide.columns) == ['job086_class1', 'job086_class2', 'job086_class3']
    assert pd.read_csv(out / 'pysankey_input.csv').columns.tolist() == \
        ['id', 'jobANo_class', 'jobBNo_class', '#particles']
    membership = pd.read_csv(out / 'consensus_membership.csv')
    pd.testing.assert_frame_equal(membership, result.assignments, check_dtype=False)
    # intersections with fewer than 2 particles are not written
    assert sorted(p.name for p in written['intersections']) == [
        'job085_class1_vs_job086_class1.star', 'job085_class2_vs_job086_class2.star',
        'job085_class2_vs_job086_class3.star', 'job085_class3_vs_job086_class3.star']
    assert len(written['per_class']) == 6
    source = starfile.read(a.source.path)
    back = starfile.read(out / 'intersections' / 'job085_class2_vs_job086_class3.star')
    pd.testing.assert_frame_equal(back['optics'], source['optics'])
    pd.testing.assert_frame_equal(back['particles'],
                                  source['particles'].iloc[[5, 6]].reset_index(drop=True))
    back_b = starfile.read(out / 'per_class' / 'job086_class1.star')['particles']
    src_b = starfile.read(b.source.path)['particles']
    pd.testing.assert_frame_equal(back_b, src_b[src_b['rlnClassNumber'] == 1].reset_index(drop=True))
    summary = (out / 'summary.txt').read_text()
    assert 'job085 x job086: 10 shared' in summary and 'Warnings\n  none' in summary


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 3), st.integers(1, 60), st.integers(1, 5), st.randoms(use_true_random=False))
def test_counts_equal_brute_force(n_jobs, n, k, rnd):
    jobs, labels = [], []
    for j in range(n_jobs):
        ids = list(range(n))
        rnd.shuffle(ids)
        cls = [rnd.randint(1, k) for _ in ids]
        labels.append(dict(zip(ids, cls)))
        jobs.append(classification_from_dataframe(pd.DataFrame({'id': ids, 'class': cls}),
                                                  f'job{j + 1:03d}', key='id'))
    result = reciprocal_analysis(jobs)
    for a in range(n_jobs):
        for b in range(n_jobs):
            if a == b:
                continue
            na, nb = jobs[a].name, jobs[b].name
            matrix = result.matrix('counts', na, nb)
            sets_a = {c: {p for p, x in labels[a].items() if x == c} for c in result.classes[na]}
            sets_b = {c: {p for p, x in labels[b].items() if x == c} for c in result.classes[nb]}
            expected = [[len(sets_a[i] & sets_b[m]) for m in result.classes[nb]]
                        for i in result.classes[na]]
            assert matrix.to_numpy().tolist() == expected
            np.testing.assert_array_equal(matrix.sum(axis=1), [len(sets_a[i]) for i in sets_a])


def test_symmetry_expanded_rows_match_by_occurrence(tmp_path):
    names = ['1@s.mrcs', '2@s.mrcs', '1@s.mrcs', '2@s.mrcs']
    a = classification_from_star(write_job_star(tmp_path / 'job001.star', [1, 1, 2, 2], names))
    names_b = ['1@s.mrcs', '1@s.mrcs', '2@s.mrcs', '2@s.mrcs']
    b = classification_from_star(write_job_star(tmp_path / 'job002.star', [1, 1, 2, 1], names_b))
    result = reciprocal_analysis([a, b])
    assert result.matrix('counts', 'job001', 'job002').to_numpy().tolist() == [[1, 1], [2, 0]]
    jobs = result.jobs.set_index('job')
    assert jobs.loc['job001', 'rows_shared'] == 4 and jobs.loc['job001', 'images_shared'] == 2
    assert '4 shared by all jobs (2 unique images)' in \
        __import__('scipion_reciprocal.core.reciprocal_io', fromlist=['x']).summary_text(result)


def test_non_contiguous_and_empty_classes():
    ids = np.arange(6)
    a = classification_from_dataframe(pd.DataFrame({'id': ids, 'class': [1, 4, 4, 7, 7, 7]}),
                                      'job001', key='id', class_ids=range(1, 8))
    b = classification_from_dataframe(pd.DataFrame({'id': ids, 'class': [2, 2, 9, 9, 9, 9]}),
                                      'job002', key='id')
    result = reciprocal_analysis([a, b])
    assert result.classes['job001'].tolist() == [1, 2, 3, 4, 5, 6, 7]
    matrix = result.matrix('counts', 'job001', 'job002')
    assert matrix.shape == (7, 2) and matrix.to_numpy().tolist() == [
        [1, 0], [0, 0], [0, 0], [1, 1], [0, 0], [0, 0], [0, 3]]
    fractions = result.matrix('fractions', 'job001', 'job002').to_numpy()
    assert fractions[1].tolist() == [0.0, 0.0] and fractions[3].tolist() == [0.5, 0.5]
    assert result.sizes('job001').tolist() == [1, 0, 0, 2, 0, 0, 3]
    assert sorted(s.name for s in result.subsets if s.kind == 'class') == [
        'job001_class1', 'job001_class4', 'job001_class7', 'job002_class2', 'job002_class9']


def test_confidence_filter(tmp_path):
    conf = [0.9, 0.2, 0.95, 0.99, 0.1, 0.8]
    a = classification_from_star(write_job_star(tmp_path / 'job001.star', [1, 1, 1, 2, 2, 2],
                                                rlnMaxValueProbDistribution=conf),
                                 read_confidence=True)
    b = classification_from_star(write_job_star(tmp_path / 'job002.star', [1, 2, 1, 2, 1, 2]))
    result = reciprocal_analysis([a, b], min_confidence=0.5)
    jobs = result.jobs.set_index('job')
    assert jobs.loc['job001', 'below_confidence'] == 2 and jobs.loc['job001', 'rows_shared'] == 4
    assert result.matrix('counts', 'job001', 'job002').to_numpy().tolist() == [[2, 0], [0, 2]]
    assert any('job001: 2 of 6 rows below confidence 0.5' in w for w in result.warnings)
    assert any('job002: no rlnMaxValueProbDistribution' in w for w in result.warnings)
    assert any('job002: 2 of 6 rows (33.3%) are not in every other job' in w
               for w in result.warnings)
    per_job = reciprocal_analysis([a, b], min_confidence={'job001': 0.85})
    assert per_job.jobs['below_confidence'].tolist() == [3, 0]
    assert not any('no rlnMaxValueProbDistribution' in w for w in per_job.warnings)


def test_only_the_chosen_particles():
    from scipion_reciprocal.core.reciprocal import keys_from_dataframe
    a = classification_from_dataframe(pd.DataFrame({'id': range(10), 'class': A}), 'job001',
                                      key='id')
    b = classification_from_dataframe(pd.DataFrame({'id': range(10), 'class': B}), 'job002',
                                      key='id')
    chosen = keys_from_dataframe(pd.DataFrame({'id': [0, 1, 2, 3, 4, 42]}), 'kept', key='id')
    result = reciprocal_analysis([a, b], only=chosen)
    # class 3 of job001 keeps its (empty) row
    assert result.matrix('counts', 'job001', 'job002').to_numpy().tolist() == [
        [2, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert result.jobs['rows_kept'].tolist() == [5, 5]
    assert 'job001: 5 of 10 rows are not among the 6 chosen particles: left out' in result.warnings
    with pytest.raises(ReciprocalError, match='job001: none of its 10 rows is among the 1 chosen'):
        reciprocal_analysis([a, b], only=keys_from_dataframe(pd.DataFrame({'id': [42]}), 'x',
                                                             key='id'))
    images = keys_from_dataframe(pd.DataFrame({'image': ['1@a.mrcs']}), 'kept')
    with pytest.raises(ReciprocalError, match='chosen particles are keyed by location'):
        reciprocal_analysis([a, b], only=images)


def test_partial_overlap_and_disjoint_jobs():
    a = classification_from_dataframe(pd.DataFrame({'id': range(10), 'class': 1}), 'job001', key='id')
    b = classification_from_dataframe(pd.DataFrame({'id': range(4, 10), 'class': 2}), 'job002', key='id')
    c = classification_from_dataframe(pd.DataFrame({'id': range(20, 25), 'class': 1}), 'job003', key='id')
    result = reciprocal_analysis([a, b])
    assert result.overlap.to_dict('records') == [
        {'job1': 'job001', 'job2': 'job002', 'shared': 6, 'only_job1': 4, 'only_job2': 0}]
    assert result.warnings == ['job001: 4 of 10 rows (40.0%) are not in every other job; the '
                               'analysis uses the 6 shared particles']
    assert result.jobs['rows_not_shared'].tolist() == [4, 0]
    with pytest.raises(ReciprocalError, match='jobs job001 and job003 share no particles'):
        reciprocal_analysis([a, c])
    d = classification_from_dataframe(pd.DataFrame({'id': [0, 1, 4], 'class': 1}), 'job004', key='id')
    e = classification_from_dataframe(pd.DataFrame({'id': [1, 4, 9], 'class': 1}), 'job005', key='id')
    f = classification_from_dataframe(pd.DataFrame({'id': [0, 9], 'class': 1}), 'job006', key='id')
    with pytest.raises(ReciprocalError, match='no particle is in all of job004, job005, job006'):
        reciprocal_analysis([d, e, f])


def test_coordinates_match_reextracted_particles(tmp_path):
    xy = np.array([[100.0, 100.0], [300.0, 120.0], [500.0, 500.0], [100.0, 100.0]])
    mics = ['mic1.mrc', 'mic1.mrc', 'mic1.mrc', 'mic2.mrc']
    frame = dict(rlnMicrographName=mics, rlnCoordinateX=xy[:, 0], rlnCoordinateY=xy[:, 1])
    a = write_job_star(tmp_path / 'job001.star', [1, 1, 2, 2], **frame)
    shifted = dict(rlnMicrographName=['./mic1.mrc'] * 3 + ['mic2.mrc'],
                   rlnCoordinateX=xy[:, 0] + [3.0, -2.0, 25.0, 1.0],
                   rlnCoordinateY=xy[:, 1] + [4.0, 1.0, 0.0, -1.0])
    names = [f'{i + 1}@Extract/job018/stack.mrcs' for i in range(4)]     # re-extracted
    b = write_job_star(tmp_path / 'job002.star', [2, 1, 1, 1], names, **shifted)
    ca = classification_from_star(a, key='coordinates')
    cb = classification_from_star(b, key='coordinates')
    result = reciprocal_analysis([ca, cb], tolerance=10.0)
    assert result.overlap['shared'].tolist() == [3]       # the 25 A shift is too far
    assert result.matrix('counts', 'job001', 'job002').to_numpy().tolist() == [[1, 1], [1, 0]]
    assert any('job001: 1 of 4 rows' in w for w in result.warnings)
    with pytest.raises(ReciprocalError, match='share no particles'):
        reciprocal_analysis([classification_from_star(a), classification_from_star(b)])
    frames = classification_from_dataframe(
        pd.DataFrame({'class': [1, 1, 2, 2], 'micrograph': mics, 'x': xy[:, 0], 'y': xy[:, 1]}),
        'job003', key='coordinates', pixel_size=1.0)
    assert reciprocal_analysis([ca, frames], tolerance=0.0).overlap['shared'].tolist() == [4]


def test_scipion_style_table_with_index_and_file_name():
    frame = pd.DataFrame({'classId': [3, 3, 5], '_index': [1, 2, 3], 'id': [11, 12, 13],
                          '_filename': ['Runs/000123/extra/p.mrcs'] * 3})
    columns = {'class': 'classId', 'index': '_index', 'stack': '_filename', 'row_id': 'id'}
    a = classification_from_dataframe(frame, 'run 1', columns=columns)
    b = classification_from_dataframe(pd.DataFrame({
        'class': [1, 2, 2], 'image': ['2@Runs/000123/extra/p.mrcs', '000001@Runs/000123/extra/p.mrcs',
                                      '3@Runs/000123//extra/p.mrcs']}), 'run 2')
    result = reciprocal_analysis([a, b])
    assert result.jobs['number'].tolist() == [1, 2]
    assert result.matrix('counts', 'run 1', 'run 2').to_numpy().tolist() == [[1, 1], [0, 1]]
    subset = next(s for s in result.subsets if s.name == 'run_1_class3')
    assert result.subset_ids(subset, 'run 1').tolist() == [11, 12]


def test_bad_input(tmp_path):
    no_class = tmp_path / 'Class3D' / 'job001' / 'run_it001_data.star'
    no_class.parent.mkdir(parents=True)
    write_star(no_class, {'optics': OPTICS, 'particles': pd.DataFrame({'rlnImageName': ['1@a']})})
    with pytest.raises(StarError, match=r'job001/run_it001_data.star: data_particles has no '
                                        r'column _rlnClassNumber \(needed for the image key of '
                                        r'job job001\)'):
        classification_from_star(no_class)
    no_image = tmp_path / 'job002.star'
    write_star(no_image, {'optics': OPTICS, 'particles': pd.DataFrame({'rlnClassNumber': [1]})})
    with pytest.raises(StarError, match=r'job002.star: data_particles has no column _rlnImageName'):
        classification_from_star(no_image)
    bad_index = write_job_star(tmp_path / 'job003.star', [1], ['x@a.mrcs'])
    with pytest.raises(StarError, match=r'job003.star: rlnImageName: image name .x@a.mrcs.'):
        classification_from_star(bad_index)
    one = classification_from_dataframe(pd.DataFrame({'id': [1], 'class': [1]}), 'job004', key='id')
    with pytest.raises(ReciprocalError, match=r'at least two classifications \(got 1: job004\)'):
        reciprocal_analysis([one])
    with pytest.raises(ReciprocalError, match='job004 given twice'):
        reciprocal_analysis([one, one])
    other = classification_from_dataframe(pd.DataFrame({'image': ['1@a'], 'class': [1]}), 'job005')
    with pytest.raises(ReciprocalError, match='particle keys of different kinds'):
        reciprocal_analysis([one, other])
    with pytest.raises(ReciprocalError, match=r'job006: no column id \(needed for the id key'):
        classification_from_dataframe(pd.DataFrame({'class': [1]}), 'job006', key='id')


@requires_realdata
def test_real_class3d_against_class2d():
    """Every Class3D/job016 particle is in Class2D/job013 (RELION 3.1 tutorial, CC-BY-4.0)."""
    c3d, c2d = classifications_from_relion('Class3D/job016, Class2D/job013', project_dir=REALDATA)
    result = reciprocal_analysis([c3d, c2d])
    counts = result.matrix('counts', 'job016', 'job013')
    assert counts.sum(axis=1).tolist() == [300, 179, 387, 4501]
    assert sorted(counts.sum(axis=1).tolist(), reverse=True) == [4501, 387, 300, 179]
    jobs = result.jobs.set_index('job')
    assert jobs.loc['job016', 'rows_not_shared'] == 0 and jobs.loc['job016', 'rows'] == 5367
    assert jobs.loc['job013', 'rows_not_shared'] == 9482 - 5367
    assert result.classes['job013'].tolist() == list(range(1, 101))   # K=100 in its model
    assert (c3d.kind, c2d.kind) == ('3D', '2D')


def test_sankey_page_escapes_every_user_text(tmp_path):
    import json

    from scipion_reciprocal.plotting.reciprocal import sankey_figures
    from scipion_reciprocal.plotting.sankey import sankey_html
    evil = 'run</script><script>alert(1)</script><!--'
    a = classification_from_dataframe(pd.DataFrame({'id': range(4), 'class': [1, 1, 2, 2]}),
                                      evil, key='id')
    b = classification_from_dataframe(pd.DataFrame({'id': range(4), 'class': [1, 2, 2, 2]}),
                                      'job002 <b>&', key='id')
    nodes, links, _ = sankey_figures(reciprocal_analysis([a, b]))
    page = sankey_html(tmp_path / 'sankey.html', nodes, links).read_text()
    assert page.count('<script') == 2 and page.count('</script>') == 2
    assert '<b>' not in page and '<!--' not in page and 'alert(1)</script>' not in page
    start = page.index('id="sankey-data">') + len('id="sankey-data">')
    data = json.loads(page[start:page.index('</script>', start)])
    assert data['jobs'] == [evil, 'job002 <b>&'] and data['particles'] == 4
    assert 'run&lt;/script&gt;&lt;script&gt;alert(1)' in page        # labels in the SVG
