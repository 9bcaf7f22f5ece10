"""StarTable: column reads equal a full parse; subsets are the source rows byte for byte."""
import numpy as np
import pandas as pd
import pytest
import starfile
from hypothesis import given, settings
from hypothesis import strategies as st

from scipion_reciprocal.formats.errors import StarError
from scipion_reciprocal.formats.star import StarTable, table as star_table, write_star
from scipion_reciprocal.tests.realdata import REALDATA, requires_realdata

OPTICS = pd.DataFrame({'rlnOpticsGroupName': ['opticsGroup1'], 'rlnOpticsGroup': [1],
                       'rlnMicrographOriginalPixelSize': [0.885], 'rlnVoltage': [300.0],
                       'rlnSphericalAberration': [2.7], 'rlnAmplitudeContrast': [0.1],
                       'rlnImagePixelSize': [1.77], 'rlnImageSize': [64],
                       'rlnImageDimensionality': [2]})


def particles(n, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        'rlnCoordinateX': np.round(rng.uniform(0, 4000, n), 6),
        'rlnCoordinateY': np.round(rng.uniform(0, 4000, n), 6),
        'rlnClassNumber': rng.integers(1, 5, n),
        'rlnImageName': [f'{i + 1:06d}@Extract/job007/mic{i % 3}.mrcs' for i in range(n)],
        'rlnMicrographName': [f'MotionCorr/job002/mic{i % 3}.mrc' for i in range(n)],
        'rlnOpticsGroup': np.ones(n, dtype=int),
        'rlnAnglePsi': np.round(rng.uniform(-180, 180, n), 6),
        'rlnMaxValueProbDistribution': np.round(rng.uniform(0, 1, n), 6),
    })


def fixed_width_text(frame):
    """Rows as RELION writes them: right-aligned numbers in fixed-width fields."""
    cols = []
    for c in frame.columns:
        v = frame[c]
        if v.dtype.kind == 'f':
            cols.append(v.map(lambda x: f'{x:12.6f}'))
        elif v.dtype.kind in 'iu':
            cols.append(v.map(lambda x: f'{x:12d}'))
        else:
            cols.append(v.astype(str))
    return ''.join(' '.join(parts) + ' \n' for parts in zip(*cols))


def write_fixed(path, frame, optics=OPTICS):
    head = '\n# version 30001\n\ndata_optics\n\nloop_\n'
    head += ''.join(f'_{c} #{i}\n' for i, c in enumerate(optics.columns, 1))
    head += ' '.join(str(v) for v in optics.iloc[0]) + '\n \n\n# version 30001\n\n'
    head += 'data_particles\n\nloop_ \n'
    head += ''.join(f'_{c} #{i} \n' for i, c in enumerate(frame.columns, 1))
    path.write_text(head + fixed_width_text(frame) + ' \n')
    return path


@pytest.fixture(params=['fixed', 'tabs'])
def star(request, tmp_path):
    frame = particles(500)
    path = tmp_path / f'{request.param}.star'
    if request.param == 'fixed':
        write_fixed(path, frame)
    else:
        write_star(path, {'optics': OPTICS, 'particles': frame})
    return path, frame


@pytest.fixture
def small_chunks(monkeypatch):
    """Tokenise in 4 KB chunks so that tests cross many chunk boundaries."""
    monkeypatch.setattr(star_table, '_CHUNK', 4096)


def test_columns_equal_a_full_parse(star, small_chunks):
    path, frame = star
    table = StarTable.open(path)
    assert table.block == 'particles' and table.columns == list(frame.columns)
    assert table.version == '30001' and table.has_optics and len(table) == len(frame)
    read = table.read_columns(frame.columns)
    pd.testing.assert_frame_equal(read, frame, check_dtype=False)
    raw = table.read_raw(['rlnClassNumber', 'rlnImageName', 'rlnAnglePsi'])
    assert raw['rlnClassNumber'].dtype == np.int64
    assert raw['rlnImageName'].dtype.kind == 'S'
    assert raw['rlnImageName'][3] == b'000004@Extract/job007/mic0.mrcs'
    np.testing.assert_array_equal(raw['rlnAnglePsi'], frame['rlnAnglePsi'].to_numpy())
    pd.testing.assert_frame_equal(table.optics(), OPTICS, check_dtype=False)


def test_subset_rows_are_copied_verbatim(star, tmp_path, small_chunks):
    path, frame = star
    table = StarTable.open(path)
    rows = np.flatnonzero(frame['rlnClassNumber'].to_numpy() == 2)
    out = tmp_path / 'subset.star'
    assert table.write_subset(out, rows) == len(rows)
    back = starfile.read(out)
    pd.testing.assert_frame_equal(back['optics'], OPTICS, check_dtype=False)
    pd.testing.assert_frame_equal(back['particles'], frame.iloc[rows].reset_index(drop=True),
                                  check_dtype=False)
    lines = path.read_text().splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if '@Extract' in line)
    header = ''.join(lines[:first])
    assert out.read_text() == header + ''.join(lines[first + r] for r in rows)
    mask = np.zeros(len(frame), dtype=bool)
    mask[[0, 7]] = True
    table.write_subset(out, mask)
    assert out.read_text() == header + lines[first] + lines[first + 7]
    table.write_subset(out, [])
    assert out.read_text() == header


def test_subset_with_extra_columns(star, tmp_path, small_chunks):
    """Extra columns go last, in the loop header and in every row; the rest stays verbatim."""
    path, frame = star
    table = StarTable.open(path)
    rows = np.array([9, 2, 400, 3])
    stability = np.array([1.0, 0.5, 2 / 3, 0.0])
    out = tmp_path / 'extra.star'
    assert table.write_subset(out, rows, extra_columns={'rlnReciprocalStability': stability,
                                                        'rlnReciprocalGroup': [3, 1, 12, 0]}) == 4
    back = starfile.read(out)
    expected = frame.iloc[rows].reset_index(drop=True)
    expected['rlnReciprocalStability'] = np.round(stability, 6)
    expected['rlnReciprocalGroup'] = [3, 1, 12, 0]
    pd.testing.assert_frame_equal(back['particles'], expected, check_dtype=False)
    pd.testing.assert_frame_equal(back['optics'], OPTICS, check_dtype=False)
    lines = path.read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if '@Extract' in line)
    written = out.read_text().splitlines()
    labels = [line for line in written if line.startswith('_rlnReciprocal')]
    assert labels == ['_rlnReciprocalStability #9', '_rlnReciprocalGroup #10']
    body = written[written.index(labels[-1]) + 1:]
    assert [line.split()[-2:] for line in body] == [['1.000000', '3'], ['0.500000', '1'],
                                                    ['0.666667', '12'], ['0.000000', '0']]
    assert [line[:len(lines[first + r])] for line, r in zip(body, rows)] == \
        [lines[first + r] for r in rows]
    with pytest.raises(ValueError, match='already has a column _rlnClassNumber'):
        table.write_subset(out, rows, extra_columns={'rlnClassNumber': [1, 2, 3, 4]})
    with pytest.raises(ValueError, match='3 values of _rlnX for 4 rows'):
        table.write_subset(out, rows, extra_columns={'rlnX': [1, 2, 3]})
    with pytest.raises(ValueError, match='without the leading underscore'):
        table.write_subset(out, rows, extra_columns={'_rlnX': [1, 2, 3, 4]})


def test_closed_table_maps_the_file_again(star, tmp_path):
    path, frame = star
    with StarTable.open(path) as table:
        n = len(table)
    assert table.write_subset(tmp_path / 'a.star', [0, n - 1]) == 2
    table.close()
    assert table.read_raw(['rlnClassNumber'])['rlnClassNumber'].tolist() == \
        frame['rlnClassNumber'].tolist()


def test_relion30_subsets_get_an_optics_table(tmp_path):
    frame = particles(20).drop(columns='rlnOpticsGroup')
    frame['rlnVoltage'] = 300.0
    frame['rlnSphericalAberration'] = 2.7
    frame['rlnAmplitudeContrast'] = 0.1
    frame['rlnDetectorPixelSize'] = 14.0
    frame['rlnMagnification'] = 100000.0
    frame['rlnImageSize'] = 64
    path = tmp_path / 'relion30.star'
    write_star(path, {'': frame}, version=None)
    table = StarTable.open(path)
    assert table.block == '' and not table.has_optics
    table.write_subset(tmp_path / 'out.star', [1, 2, 5])
    back = starfile.read(tmp_path / 'out.star')
    assert back['optics']['rlnImagePixelSize'].tolist() == [1.4]
    assert back['particles']['rlnImageName'].tolist() == frame['rlnImageName'].iloc[[1, 2, 5]].tolist()
    table.write_subset(tmp_path / 'extra.star', [5, 1],
                       extra_columns={'rlnReciprocalStability': [0.25, 1.0]})
    back = starfile.read(tmp_path / 'extra.star')['particles']
    # the upgraded table gains rlnOpticsGroup after the file's own columns
    assert list(back.columns[-2:]) == ['rlnReciprocalStability', 'rlnOpticsGroup']
    assert back['rlnReciprocalStability'].tolist() == [0.25, 1.0]
    assert back['rlnImageName'].tolist() == frame['rlnImageName'].iloc[[5, 1]].tolist()


def test_body_ends_at_the_next_block_and_comments_take_the_slow_path(tmp_path):
    text = ('data_first\nloop_\n_rlnA #1\n_rlnB #2\n_rlnC #3\n1 2.5 x\n3 4.5 y\n\n'
            '# version 30001\ndata_second\nloop_\n_rlnD\n7\n')
    path = tmp_path / 'multi.star'
    path.write_text(text)
    table = StarTable.open(path)
    assert table.block == 'first' and len(table) == 2
    assert table.read_raw(['rlnA'])['rlnA'].tolist() == [1, 3]
    second = StarTable.open(path, 'second')
    assert second.read_raw(['rlnD'])['rlnD'].tolist() == [7]
    assert second.blocks_before == ['first']
    quoted = tmp_path / 'quoted.star'
    quoted.write_text('data_\nloop_\n_rlnA\n_rlnB\n_rlnC\n1 "a b" 2  # comment\n# note\n3 c 4\n')
    table = StarTable.open(quoted)
    assert table.read_columns(['rlnB', 'rlnC']).to_dict('list') == {'rlnB': ['a b', 'c'],
                                                                    'rlnC': [2, 4]}
    assert len(table) == 2


def test_errors_name_the_file(tmp_path):
    with pytest.raises(StarError, match='file not found'):
        StarTable.open(tmp_path / 'missing.star')
    path = tmp_path / 'bad.star'
    path.write_text('data_optics\nloop_\n_rlnA\n_rlnB\n_rlnC\n1 2 3\n'
                    'data_particles\nloop_\n_rlnA\n_rlnB\n_rlnC\n1 2 3\n4 5\n')
    with pytest.raises(StarError, match='no data_other block'):
        StarTable.open(path, 'other')
    table = StarTable.open(path)
    with pytest.raises(StarError, match=r'bad.star: data_particles, line 13: 2 fields instead of 3'):
        len(table)
    with pytest.raises(StarError, match=r'bad.star: data_particles has no column _rlnClassNumber'):
        table.read_raw(['rlnClassNumber'])
    kv = tmp_path / 'kv.star'
    kv.write_text('data_general\n_rlnA 1\n')
    with pytest.raises(StarError, match='not a loop'):
        StarTable.open(kv, 'general')
    with pytest.raises(StarError, match='no particle loop block'):
        StarTable.open(kv)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64,
                          min_value=-1e9, max_value=1e9), min_size=1, max_size=40),
       st.integers(0, 9), st.booleans())
def test_float_parsing_is_exact(values, decimals, right_aligned):
    texts = [f'{v:.{decimals}f}' for v in values] + [f'{v:.6e}' for v in values[:3]]
    width = max(len(t) for t in texts)
    cells = [t.rjust(width) if right_aligned else t.ljust(width, '\0') for t in texts]
    tokens = np.frombuffer(''.join(cells).encode(), dtype=np.uint8).reshape(len(cells), width)
    np.testing.assert_array_equal(star_table._convert(tokens, 'float'), [float(t) for t in texts])


@requires_realdata
def test_real_relion31_file_matches_starfile():
    path = REALDATA / 'Class3D' / 'job016' / 'run_it025_data.star'
    table = StarTable.open(path)
    full = starfile.read(path)['particles']
    pd.testing.assert_frame_equal(table.read_columns(table.columns), full, check_dtype=False)
