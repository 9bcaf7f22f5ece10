"""STAR reading and writing: exact values, round trips, errors.

Real-data tests read the RELION 3.1 beta-galactosidase tutorial (EMPIAR-10204, S.H.W. Scheres,
via dials/data-files, CC-BY-4.0) and are skipped when it is absent.
"""
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile
from hypothesis import given, settings, strategies as st

from scipion_reciprocal.formats.errors import FormatError, StarError
from scipion_reciprocal.formats.relion import (format_image_names, merge_optics, parse_image_names,
                                               upgrade_to_relion31)
from scipion_reciprocal.formats.star import (read_particles_star, read_star, write_particles_star,
                                             write_star)
from scipion_reciprocal.tests.realdata import REALDATA, requires_realdata

DATA = Path(__file__).resolve().parent / 'data'


def assert_blocks_equal(expected, actual):
    """Same block names in order; DataFrames equal (dtypes too), floats to the written precision."""
    assert list(actual) == list(expected)
    for name, block in expected.items():
        if isinstance(block, dict):
            assert actual[name].keys() == block.keys()
            for key, value in block.items():
                if isinstance(value, float):
                    assert actual[name][key] == pytest.approx(value, rel=1e-6, abs=5e-7)
                else:
                    assert actual[name][key] == value and type(actual[name][key]) is type(value)
        else:
            pd.testing.assert_frame_equal(actual[name], block, check_exact=False,
                                          rtol=1e-6, atol=5e-7)


def round_trip(doc, tmp_path):
    out = tmp_path / 'out.star'
    write_star(out, doc.blocks, version=doc.version)
    return read_star(out)


# ------------------------------------------------------------------ reading hand-written files

def test_read_relion30_has_one_unnamed_block_and_no_version():
    doc = read_star(DATA / 'relion30_particles.star')
    assert doc.version is None
    assert list(doc.blocks) == ['']
    df = doc.blocks['']
    assert df.shape == (5, 16)
    assert df['rlnImageName'].tolist()[:2] == ['000001@Extract/job007/mic_001.mrcs',
                                               '000002@Extract/job007/mic_001.mrcs']
    assert df['rlnClassNumber'].dtype == np.int64
    assert df['rlnClassNumber'].tolist() == [1, 2, 1, 2, 1]
    assert df['rlnDefocusU'].iloc[2] == 9821.125
    assert df['rlnVoltage'].tolist() == [300.0, 300.0, 300.0, 200.0, 200.0]


def test_read_relion31_optics_and_particles():
    doc = read_star(DATA / 'relion31_particles.star')
    assert doc.version == '30001'
    assert list(doc.blocks) == ['optics', 'particles']
    optics, particles = doc.blocks['optics'], doc.blocks['particles']
    assert optics['rlnOpticsGroupName'].tolist() == ['opticsGroup1', 'opticsGroup2']
    assert optics['rlnImageSize'].tolist() == [64, 128]
    assert optics['rlnImageSize'].dtype == np.int64
    assert optics['rlnImagePixelSize'].tolist() == [3.54, 1.66]
    # exponent notation as RELION writes it
    assert particles['rlnLogLikeliContribution'].tolist() == [10507.305735, 1.052345e+05, -2.5e-04]
    assert particles['rlnNrOfSignificantSamples'].tolist() == [5, 1, 12]


def test_read_relion5_key_value_block_and_version():
    doc = read_star(DATA / 'relion5_particles.star')
    assert doc.version == '50001'
    assert list(doc.blocks) == ['general', 'optics', 'particles']
    assert doc.blocks['general'] == {'rlnTomoSubTomosAre2DStacks': 1}
    p = doc.blocks['particles']
    assert p['rlnTomoVisibleFrames'].tolist() == ['[1,1,1,1,0,1]', '[1,1,1,1,1,1]', '[0,1,1,1,1,0]']
    assert p['rlnTomoParticleName'].tolist() == ['TS_01/1', 'TS_01/2', 'TS_03/1']
    assert p['rlnCenteredCoordinateYAngst'].tolist() == [812.25, -1024.75, 0.0]


def test_read_quotes_comments_and_several_blocks():
    doc = read_star(DATA / 'mixed_blocks.star')
    assert doc.version == '30001'
    assert list(doc.blocks) == ['run_general', 'model_classes', '', 'empty_loop', 'last']
    assert doc.blocks['run_general'] == {
        'rlnOutputRootName': 'Class3D/job016/run with spaces', 'rlnNrClasses': 4,
        'rlnPixelSize': 3.54, 'rlnLogLikelihood': 5.599779e+07, 'rlnSolventMaskName': 'None',
        'rlnTitle': 'single quoted title'}
    classes = doc.blocks['model_classes']
    assert classes['rlnNote'].tolist() == ['good class, keep', 'it is junk', 'plain']
    assert classes['rlnEstimatedResolution'].tolist() == [20.596363, 22.656, 10.298182]
    assert doc.blocks['']['rlnGroupName'].tolist() == ['group 1', 'group 1']
    assert list(doc.blocks['empty_loop'].columns) == ['rlnSpectralIndex', 'rlnResolution']
    assert len(doc.blocks['empty_loop']) == 0
    assert doc.blocks['last'] == {'rlnIsHelix': 0}


def test_read_selected_blocks_only():
    doc = read_star(DATA / 'relion31_particles.star', blocks=['optics'])
    assert list(doc.blocks) == ['optics']
    with pytest.raises(StarError, match=r'relion31_particles\.star: no data_model block'):
        read_star(DATA / 'relion31_particles.star', blocks=['model'])


def test_file_names_are_text_even_when_they_look_numeric(tmp_path):
    path = tmp_path / 'numeric_names.star'
    path.write_text('data_\nloop_\n_rlnImageName #1\n_rlnMicrographName #2\n_rlnClassNumber #3\n'
                    '1 001 3\n2 002 4\n')
    df = read_star(path).blocks['']
    assert df['rlnImageName'].tolist() == ['1', '2']
    assert df['rlnMicrographName'].tolist() == ['001', '002']
    assert df['rlnClassNumber'].tolist() == [3, 4]


def test_nan_values_are_read_as_nan(tmp_path):
    path = tmp_path / 'nan.star'
    path.write_text('data_x\nloop_\n_rlnA #1\n_rlnB #2\n1.5 nan\nnan 2\n')
    df = read_star(path).blocks['x']
    assert np.isnan(df['rlnB'].iloc[0]) and df['rlnB'].iloc[1] == 2
    assert np.isnan(df['rlnA'].iloc[1]) and df['rlnA'].iloc[0] == 1.5


# ------------------------------------------------------------------ round trips

@pytest.mark.parametrize('name', ['relion30_particles.star', 'relion31_particles.star',
                                  'relion5_particles.star', 'mixed_blocks.star'])
def test_round_trip_keeps_blocks_columns_values_and_version(name, tmp_path):
    doc = read_star(DATA / name)
    back = round_trip(doc, tmp_path)
    assert back.version == doc.version
    assert_blocks_equal(doc.blocks, back.blocks)


def test_written_text_is_relion_style(tmp_path):
    out = tmp_path / 'x.star'
    df = pd.DataFrame({'rlnImageName': ['000001@a b.mrcs', '000002@c.mrcs'],
                       'rlnNote': ['say hi now', ''],
                       'rlnClassNumber': [1, 2], 'rlnDefocusU': [10000.5, 1.25e-5]})
    write_star(out, {'optics': {'rlnVoltage': 300.0, 'rlnName': 'a b'}, 'particles': df})
    text = out.read_text()
    assert text.count('# version 30001\n') == 2
    assert text.index('data_optics') < text.index('data_particles')
    assert '_rlnImageName #1\n_rlnNote #2\n_rlnClassNumber #3\n_rlnDefocusU #4\n' in text
    rows = text.split('_rlnDefocusU #4\n')[1].strip().splitlines()
    # fixed-width columns as RELION writes them; tiny values in exponent notation like RELION
    assert [shlex.split(row, posix=False) for row in rows] == [
        ['"000001@a b.mrcs"', '"say hi now"', '1', '10000.500000'],
        ['000002@c.mrcs', '""', '2', '1.250000e-05']]
    assert len(set(map(len, rows))) == 1
    assert '"a b"' in text
    back = read_star(out).blocks['particles']
    assert back['rlnImageName'].tolist() == df['rlnImageName'].tolist()
    assert back['rlnNote'].tolist() == ['say hi now', '']


TRICKY_TEXTS = ['a#b', '#start', 'x # y', '_under', 'data_x', 'loop_', '', ' padded ', '5']


def test_tricky_text_round_trips_exactly(tmp_path):
    out = tmp_path / 'tricky.star'
    loop = pd.DataFrame({'rlnNote': ['first', *TRICKY_TEXTS], 'rlnN': range(len(TRICKY_TEXTS) + 1)})
    write_star(out, {'t': loop, 'kv': {f'rlnK{i}': t for i, t in enumerate(TRICKY_TEXTS)}})
    back = read_star(out).blocks
    assert back['t']['rlnNote'].tolist() == loop['rlnNote'].tolist()
    last = len(TRICKY_TEXTS) - 1
    assert back['kv'] == {f'rlnK{i}': t for i, t in enumerate(TRICKY_TEXTS[:-1])} | {f'rlnK{last}': 5}


NO_QUOTES = st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters='"\'')
# Texts pandas (under starfile) reads as missing or as booleans: no RELION file has them.
NOT_NA = st.text(NO_QUOTES, max_size=12).filter(
    lambda t: t not in ('nan', 'NaN', '<NA>') and t.lower() not in ('true', 'false'))


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(NOT_NA, min_size=1, max_size=8))
def test_text_with_comments_and_blanks_round_trips(tmp_path_factory, texts):
    # 'a b' keeps the column text whatever the other values are ('5', '#', ' ', '_x', ...)
    loop = pd.DataFrame({'rlnNote': ['a b', *texts], 'rlnN': range(len(texts) + 1)})
    out = tmp_path_factory.mktemp('quotes') / 'q.star'
    write_star(out, {'t': loop})
    back = read_star(out).blocks['t']
    assert back['rlnNote'].tolist() == loop['rlnNote'].tolist()
    assert back['rlnN'].tolist() == loop['rlnN'].tolist()


@pytest.mark.parametrize('bad, reason', [('tab\there', 'a tab or a line break'),
                                         ('new\nline', 'a tab or a line break'),
                                         ('it\'s "x" y', 'both quote characters'),
                                         ("it's", 'both quote characters')])
def test_unwritable_text_is_refused(tmp_path, bad, reason):
    out = tmp_path / 'bad.star'
    with pytest.raises(ValueError, match=f'bad\\.star: data_t column _rlnNote: value .* {reason}'):
        write_star(out, {'t': pd.DataFrame({'rlnNote': ['ok', bad]})})
    assert not out.exists()


def test_write_without_version_line(tmp_path):
    out = tmp_path / 'x.star'
    write_star(out, {'': pd.DataFrame({'rlnImageName': ['1@a.mrcs']})}, version=None)
    assert 'version' not in out.read_text()
    assert read_star(out).version is None


def test_write_is_atomic(tmp_path):
    out = tmp_path / 'x.star'
    write_star(out, {'a': {'rlnX': 1}})
    before = out.read_bytes()
    with pytest.raises(TypeError, match='block data_b is a list'):
        write_star(out, {'a': {'rlnX': 2}, 'b': [1, 2]})
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['x.star']


finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None)
@given(floats=st.lists(finite, min_size=1, max_size=20),
       ints=st.lists(st.integers(-2**62, 2**62), min_size=1, max_size=20),
       texts=st.lists(NOT_NA, min_size=1, max_size=20))
def test_round_trip_property(tmp_path_factory, floats, ints, texts):
    n = min(len(floats), len(ints), len(texts))
    df = pd.DataFrame({'rlnF': floats[:n], 'rlnI': ints[:n], 'rlnT': texts[:n]})
    out = tmp_path_factory.mktemp('prop') / 'p.star'
    write_star(out, {'p': df})
    back = read_star(out).blocks['p']
    x, y = df['rlnF'].to_numpy(), back['rlnF'].to_numpy()
    # %.6f rounds to 5e-7 absolute; exponent notation (tiny and huge values) to 5e-7 relative.
    assert np.all(np.abs(x - y) <= 5e-7 * np.maximum(1.0, np.abs(x)) * (1 + 1e-9))
    assert back['rlnI'].dtype == np.int64 and back['rlnI'].tolist() == df['rlnI'].tolist()
    if back['rlnT'].dtype == object:
        assert back['rlnT'].tolist() == df['rlnT'].tolist()
    else:  # every text happened to be a number (or empty after one): it reads back as one
        pd.testing.assert_series_equal(back['rlnT'], pd.to_numeric(df['rlnT']))


def test_numbers_are_written_like_relion(tmp_path):
    out = tmp_path / 'numbers.star'
    values = [0.0, 1.5, -1.5, 99999.999999, 12.25, -0.0004, 2.5e-7, 123456.7, np.nan, np.inf,
              -np.inf]
    ints = [0, -7, 42, np.iinfo(np.int64).min, 1, 2, 3, 4, 5, 6, 7]
    write_star(out, {'n': pd.DataFrame({'rlnF': values, 'rlnI': ints}),
                     'kv': {'rlnTiny': 1.950925e-05, 'rlnFlag': True, 'rlnCount': np.int64(3)}})
    text = out.read_text()
    rows = [row.split() for row in text.split('_rlnI #2\n')[1].split('\n\n')[0].splitlines()]
    assert [r[0] for r in rows] == [
        '0.000000', '1.500000', '-1.500000', '99999.999999', '12.250000', '-4.000000e-04',
        '2.500000e-07', '1.234567e+05', 'nan', 'inf', '-inf']
    assert [r[1] for r in rows] == [str(i) for i in ints]
    assert '_rlnTiny\t\t\t1.950925e-05\n_rlnFlag\t\t\t1\n_rlnCount\t\t\t3\n' in text
    back = read_star(out).blocks
    assert back['n']['rlnI'].dtype == np.int64 and back['n']['rlnI'].tolist() == ints
    np.testing.assert_array_equal(back['n']['rlnF'].to_numpy(),
                                  [0.0, 1.5, -1.5, 99999.999999, 12.25, -0.0004, 2.5e-7, 123456.7,
                                   np.nan, np.inf, -np.inf])
    assert back['kv'] == {'rlnTiny': 1.950925e-05, 'rlnFlag': 1, 'rlnCount': 3}


def test_other_float_format(tmp_path):
    out = tmp_path / 'g.star'
    write_star(out, {'n': pd.DataFrame({'rlnF': [1e-7, 2.5]})}, float_format='%.3g')
    assert out.read_text().split('_rlnF #1\n')[1].split() == ['1e-07', '2.5']


def test_hand_written_quirks_that_starfile_misreads(tmp_path):
    """Loops without rows followed by comments (RELION's '# version' line of the next block),
    empty blocks: read as STAR says (starfile alone fails on each)."""
    path = tmp_path / 'quirks.star'
    path.write_text(
        "data_empty_first\n\n"
        "data_kv\n_rlnA 'quoted'\n_rlnB \"a b\"\n"
        "data_no_rows\nloop_\n_rlnX #1\n\n# version 30001\n\n"
        "data_t\nloop_\n_rlnNote #1\n_rlnN #2\n"
        "'say hi now' 1\n\"x\" 2\n'#x' 4\n\n"
        "data_empty_last\n")
    doc = read_star(path)
    assert list(doc.blocks) == ['empty_first', 'kv', 'no_rows', 't', 'empty_last']
    assert doc.blocks['empty_first'] == {} and doc.blocks['empty_last'] == {}
    assert doc.blocks['kv'] == {'rlnA': 'quoted', 'rlnB': 'a b'}
    assert list(doc.blocks['no_rows'].columns) == ['rlnX'] and len(doc.blocks['no_rows']) == 0
    assert doc.blocks['t']['rlnNote'].tolist() == ['say hi now', 'x', '#x']
    assert doc.blocks['t']['rlnN'].tolist() == [1, 2, 4]
    assert read_star(path, blocks=['kv']).blocks == {'kv': doc.blocks['kv']}
    back = round_trip(doc, tmp_path)
    assert_blocks_equal(doc.blocks, back.blocks)



def test_file_rewritten_after_an_error_is_read_again(tmp_path):
    path = tmp_path / 'again.star'
    path.write_text('data_x\nloop_\n_rlnA #1\n_rlnB #2\n1 2\n3 4 5\n')
    with pytest.raises(StarError, match='3 fields instead of 2'):
        read_star(path)
    path.write_text('data_x\nloop_\n_rlnA #1\n_rlnB #2\n1 2\n3 4\n')
    assert read_star(path).blocks['x']['rlnB'].tolist() == [2, 4]


def test_written_files_do_not_depend_on_the_clock(tmp_path):
    blocks = {'optics': {'rlnVoltage': 300.0}, 'p': pd.DataFrame({'rlnImageName': ['1@a.mrcs']})}
    write_star(tmp_path / 'a.star', blocks)
    text = (tmp_path / 'a.star').read_text()
    assert text.startswith('\n# version 30001\n\ndata_optics\n') and 'Created' not in text


# ------------------------------------------------------------------ particles and optics

def test_read_particles_star_relion31():
    ps = read_particles_star(DATA / 'relion31_particles.star')
    assert ps.version == '30001'
    assert len(ps.particles) == 3 and ps.optics['rlnOpticsGroup'].tolist() == [1, 2]


def test_read_particles_star_relion30_images_block(tmp_path):
    path = tmp_path / 'images.star'
    text = (DATA / 'relion30_particles.star').read_text()
    path.write_text(text.replace('data_\n', 'data_images\n'))
    ps = read_particles_star(path)
    assert ps.optics is None and ps.version is None
    assert len(ps.particles) == 5


def test_read_particles_star_finds_any_block_with_image_names(tmp_path):
    path = tmp_path / 'other.star'
    write_star(path, {'model_general': {'rlnNrClasses': 2},
                      'my_set': pd.DataFrame({'rlnImageName': ['1@a.mrcs'],
                                              'rlnClassNumber': [2]})})
    assert read_particles_star(path).particles['rlnClassNumber'].tolist() == [2]


def test_relion30_upgraded_on_write(tmp_path):
    src = read_particles_star(DATA / 'relion30_particles.star')
    out = tmp_path / 'particles.star'
    write_particles_star(out, src.particles, image_size=100)
    doc = read_star(out)
    assert doc.version == '30001'
    assert list(doc.blocks) == ['optics', 'particles']
    optics, particles = doc.blocks['optics'], doc.blocks['particles']
    assert optics['rlnOpticsGroup'].tolist() == [1, 2]
    assert optics['rlnOpticsGroupName'].tolist() == ['opticsGroup1', 'opticsGroup2']
    assert optics['rlnVoltage'].tolist() == [300.0, 200.0]
    assert optics['rlnSphericalAberration'].tolist() == [2.7, 2.0]
    assert optics['rlnAmplitudeContrast'].tolist() == [0.1, 0.07]
    assert optics['rlnImagePixelSize'].tolist() == [14.0, 7.0]  # 14 um * 1e4 / 10000x
    assert optics['rlnImageSize'].tolist() == [100, 100]
    assert optics['rlnImageDimensionality'].tolist() == [2, 2]
    assert particles['rlnOpticsGroup'].tolist() == [1, 1, 1, 2, 2]
    for gone in ('rlnVoltage', 'rlnMagnification', 'rlnDetectorPixelSize', 'rlnOriginX',
                 'rlnSphericalAberration', 'rlnAmplitudeContrast'):
        assert gone not in particles.columns
    # pixel origins become Angstrom: 1.5 px * 14 A, ..., 2 px * 7 A
    assert particles['rlnOriginXAngst'].tolist() == [21.0, -7.0, 0.0, 7.0, 14.0]
    assert particles['rlnOriginYAngst'].tolist() == [-28.0, 42.0, 0.0, 7.0, -7.0]
    assert particles['rlnImageName'].tolist() == src.particles['rlnImageName'].tolist()
    assert particles['rlnDefocusU'].tolist() == src.particles['rlnDefocusU'].tolist()


def test_relion30_without_box_size_is_refused(tmp_path):
    src = read_particles_star(DATA / 'relion30_particles.star')
    with pytest.raises(StarError,
                       match=r'out\.star: cannot build the optics table: no rlnImageSize'):
        write_particles_star(tmp_path / 'out.star', src.particles)
    assert not (tmp_path / 'out.star').exists()


def test_upgrade_keeps_consistent_group_numbers():
    ps = read_particles_star(DATA / 'relion31_particles.star')
    flat = merge_optics(ps.particles, ps.optics)
    particles, optics = upgrade_to_relion31(flat)
    pd.testing.assert_frame_equal(particles, ps.particles)
    pd.testing.assert_frame_equal(optics[list(ps.optics.columns)], ps.optics)


def test_upgrade_renumbers_groups_with_mixed_optics():
    flat = pd.DataFrame({'rlnImageName': ['1@a', '2@a', '3@a'], 'rlnOpticsGroup': [5, 5, 5],
                         'rlnVoltage': [300.0, 200.0, 300.0], 'rlnSphericalAberration': 2.7,
                         'rlnAmplitudeContrast': 0.1, 'rlnImagePixelSize': 1.0,
                         'rlnImageSize': 64})
    particles, optics = upgrade_to_relion31(flat)
    assert particles['rlnOpticsGroup'].tolist() == [1, 2, 1]
    assert optics['rlnVoltage'].tolist() == [300.0, 200.0]


def test_upgrade_needs_voltage():
    with pytest.raises(ValueError, match='no column rlnVoltage'):
        upgrade_to_relion31(pd.DataFrame({'rlnImageName': ['1@a'], 'rlnSphericalAberration': [2.7],
                                          'rlnAmplitudeContrast': [0.1]}))


def test_merge_optics_adds_group_columns_in_particle_order():
    ps = read_particles_star(DATA / 'relion31_particles.star')
    particles = ps.particles.iloc[[2, 0, 1]]
    flat = merge_optics(particles, ps.optics)
    assert flat.index.tolist() == [2, 0, 1]
    assert flat['rlnImagePixelSize'].tolist() == [1.66, 3.54, 3.54]
    assert flat['rlnImageSize'].tolist() == [128, 64, 64]
    assert flat['rlnOpticsGroupName'].tolist() == ['opticsGroup2', 'opticsGroup1', 'opticsGroup1']
    assert len(flat.columns) == len(particles.columns) + len(ps.optics.columns) - 1


def test_merge_optics_refuses_unknown_group():
    ps = read_particles_star(DATA / 'relion31_particles.star')
    with pytest.raises(ValueError, match=r'optics groups \[2\] absent'):
        merge_optics(ps.particles, ps.optics.iloc[:1])


def test_write_particles_with_optics_round_trip(tmp_path):
    ps = read_particles_star(DATA / 'relion31_particles.star')
    out = tmp_path / 'subset.star'
    write_particles_star(out, ps.particles.iloc[[0, 2]], ps.optics)
    back = read_particles_star(out)
    pd.testing.assert_frame_equal(back.optics, ps.optics)
    pd.testing.assert_frame_equal(back.particles, ps.particles.iloc[[0, 2]].reset_index(drop=True))


def test_write_particles_refuses_incomplete_optics(tmp_path):
    ps = read_particles_star(DATA / 'relion31_particles.star')
    optics = ps.optics.drop(columns=['rlnImageSize', 'rlnVoltage'])
    with pytest.raises(StarError) as err:
        write_particles_star(tmp_path / 'bad.star', ps.particles, optics)
    assert str(err.value) == (f'{tmp_path / "bad.star"}: the optics table lacks rlnVoltage, '
                              f'rlnImageSize (RELION needs them)')


def test_upgrade_keeps_group_numbers_sorted():
    flat = pd.DataFrame({'rlnImageName': ['1@a', '2@a', '3@a'], 'rlnOpticsGroup': [2, 1, 2],
                         'rlnVoltage': [200.0, 300.0, 200.0], 'rlnSphericalAberration': 2.7,
                         'rlnAmplitudeContrast': 0.1, 'rlnImagePixelSize': 1.0,
                         'rlnImageSize': 64})
    particles, optics = upgrade_to_relion31(flat)
    assert particles['rlnOpticsGroup'].tolist() == [2, 1, 2]
    assert optics['rlnOpticsGroup'].tolist() == [1, 2]
    assert optics['rlnVoltage'].tolist() == [300.0, 200.0]
    assert optics['rlnOpticsGroupName'].tolist() == ['opticsGroup1', 'opticsGroup2']


def test_write_particles_refuses_unknown_optics_group(tmp_path):
    ps = read_particles_star(DATA / 'relion31_particles.star')
    with pytest.raises(StarError, match=r'bad\.star: particles refer to optics groups \[2\]'):
        write_particles_star(tmp_path / 'bad.star', ps.particles, ps.optics.iloc[:1])


# ------------------------------------------------------------------ image names

def test_parse_image_names():
    idx, paths = parse_image_names(pd.Series(['000012@Extract/job007/x.mrcs', '1@a.mrcs',
                                              'single.mrc', '000003@dir with space/y.mrcs']))
    assert idx.dtype == np.int64 and idx.tolist() == [12, 1, 1, 3]
    assert paths.tolist() == ['Extract/job007/x.mrcs', 'a.mrcs', 'single.mrc',
                              'dir with space/y.mrcs']


@pytest.mark.parametrize('bad', ['abc@x.mrcs', '0@x.mrcs', '-3@x.mrcs', '@x.mrcs'])
def test_parse_image_names_refuses_bad_index(bad):
    with pytest.raises(ValueError, match='positive image number'):
        parse_image_names(['1@ok.mrcs', bad])


def test_format_image_names():
    names = format_image_names([12, 1, 1234567], ['a.mrcs', 'b.mrcs', 'c.mrcs'])
    assert names.tolist() == ['000012@a.mrcs', '000001@b.mrcs', '1234567@c.mrcs']
    assert format_image_names(np.array([2, 3]), 'one.mrcs').tolist() == ['000002@one.mrcs',
                                                                         '000003@one.mrcs']
    with pytest.raises(ValueError, match='positive integers'):
        format_image_names([0], ['a'])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 10**7),
                          st.text(st.characters(blacklist_characters='@', min_codepoint=33,
                                                max_codepoint=126), min_size=1, max_size=20)),
                min_size=1, max_size=30))
def test_image_names_round_trip(pairs):
    indices, paths = zip(*pairs)
    idx, back = parse_image_names(format_image_names(indices, paths))
    assert idx.tolist() == list(indices) and back.tolist() == list(paths)


# ------------------------------------------------------------------ errors

def test_missing_file(tmp_path):
    path = tmp_path / 'nowhere.star'
    with pytest.raises(StarError) as err:
        read_star(path)
    assert str(err.value) == f'{path}: file not found'
    assert isinstance(err.value, FormatError) and isinstance(err.value, ValueError)
    assert err.value.path == str(path)



def test_binary_file(tmp_path):
    path = tmp_path / 'binary.star'
    path.write_bytes(b'data_\n\xff\xfe\x00')
    with pytest.raises(StarError, match=r'binary\.star: not a text STAR file'):
        read_star(path)


def test_no_particles_table(tmp_path):
    path = tmp_path / 'optics_only.star'
    write_star(path, {'optics': read_star(DATA / 'relion31_particles.star').blocks['optics']})
    with pytest.raises(StarError) as err:
        read_particles_star(path)
    assert str(err.value) == f'{path}: no particles table (no loop block with _rlnImageName)'


def test_truncated_last_row(tmp_path):
    src = DATA / 'relion31_particles.star'
    text = src.read_text()
    cut = text.index('000001@Extract/job020') + 10
    path = tmp_path / 'cut.star'
    path.write_text(text[:cut])
    with pytest.raises(StarError) as err:
        read_star(path)
    assert str(err.value) == f'{path}: data_particles, line 44: 5 fields instead of 16 ' \
                             f'(truncated or corrupt row)'


def test_truncated_inside_a_number(tmp_path):
    path = tmp_path / 'cut.star'
    path.write_text('data_x\nloop_\n_rlnA #1\n_rlnB #2\n1 2.5\n3 4.5e')
    with pytest.raises(StarError, match=r"cut\.star: data_x: last row has '4\.5e' in numeric "
                                        r"column _rlnB \(truncated file\?\)"):
        read_star(path)


def test_text_after_numbers_in_last_row_is_text(tmp_path):
    path = tmp_path / 'ok.star'
    path.write_text('data_x\nloop_\n_rlnA #1\n_rlnB #2\n1 2.5\n3 4.5e\n')
    assert read_star(path).blocks['x']['rlnB'].tolist() == ['2.5', '4.5e']







# ------------------------------------------------------------------ real RELION 3.1 files

REAL_FILES = ['Class3D/job016/run_it025_data.star', 'Class3D/job016/run_it025_model.star',
              'Class3D/job016/run_it025_optimiser.star', 'Class3D/job016/run_it025_sampling.star',
              'Select/job014/particles.star', 'Class2D/job013/run_it025_model.star',
              'Extract/job018/particles.star', 'CtfFind/job003/micrographs_ctf.star']


@requires_realdata
@pytest.mark.parametrize('name', REAL_FILES)
def test_real_round_trip(name, tmp_path):
    doc = read_star(REALDATA / name)
    assert doc.version == '30001'
    back = round_trip(doc, tmp_path)
    assert back.version == '30001'
    assert_blocks_equal(doc.blocks, back.blocks)


@requires_realdata
@pytest.mark.parametrize('name', REAL_FILES[:3])
def test_real_files_read_as_starfile_reads_them(name):
    ours = read_star(REALDATA / name).blocks
    theirs = starfile.read(REALDATA / name, always_dict=True)
    assert list(ours) == list(theirs)
    for block in theirs:
        if isinstance(theirs[block], dict):
            assert ours[block] == theirs[block]
        else:
            pd.testing.assert_frame_equal(ours[block], theirs[block])


@requires_realdata
def test_real_class3d_particles():
    ps = read_particles_star(REALDATA / 'Class3D/job016/run_it025_data.star')
    assert len(ps.particles) == 5367
    assert ps.particles['rlnClassNumber'].value_counts().sort_index().tolist() == [300, 179, 387,
                                                                                  4501]
    assert ps.optics['rlnImagePixelSize'].tolist() == [3.54]
    assert ps.optics['rlnImageSize'].tolist() == [64]
    idx, paths = parse_image_names(ps.particles['rlnImageName'])
    assert idx[0] == 3 and paths[0] == 'Extract/job012/Movies/20170629_00021_frameImage.mrcs'
    assert format_image_names(idx, paths).tolist() == ps.particles['rlnImageName'].tolist()


@requires_realdata
def test_real_model_and_optimiser_values():
    model = read_star(REALDATA / 'Class3D/job016/run_it025_model.star')
    assert model.blocks['model_general']['rlnNrClasses'] == 4
    assert model.blocks['model_general']['rlnLogLikelihood'] == 5.599779e+07
    assert model.blocks['model_classes']['rlnClassDistribution'].tolist() == [
        0.055685, 0.033127, 0.072245, 0.838943]
    assert model.blocks['model_class_1']['rlnReferenceSigma2'].iloc[0] == 1.950925e-05
    opt = read_star(REALDATA / 'Class3D/job016/run_it025_optimiser.star')
    general = opt.blocks['optimiser_general']
    assert general['rlnOutputRootName'] == 'Class3D/job016/run'
    assert general['rlnRandomSeed'] == 1564557917
    assert general['rlnSolventMaskName'] == 'None'


@requires_realdata
def test_real_file_cut_mid_row(tmp_path):
    text = (REALDATA / 'Class3D/job016/run_it025_data.star').read_text()
    path = tmp_path / 'run_it025_data.star'
    path.write_text(text[:len(text) // 2])
    with pytest.raises(StarError) as err:
        read_star(path)
    message = str(err.value)
    assert message.startswith(f'{path}: data_particles, line ')
    assert 'fields instead of 25' in message or 'numeric column' in message


@requires_realdata
def test_real_particles_subset_written_for_relion(tmp_path):
    ps = read_particles_star(REALDATA / 'Select/job014/particles.star')
    subset = ps.particles[ps.particles.index % 7 == 0]
    out = tmp_path / 'subset.star'
    write_particles_star(out, subset, ps.optics)
    back = read_particles_star(out)
    assert back.version == '30001'
    pd.testing.assert_frame_equal(back.optics, ps.optics)
    pd.testing.assert_frame_equal(back.particles, subset.reset_index(drop=True),
                                  check_exact=False, rtol=1e-6, atol=5e-7)


#: Malformed files: (file name, content, expected error message).
MALFORMED = [
    pytest.param('open_quote.star', 'data_t\nloop_\n_rlnNote #1\n_rlnN #2\n"abc 1\ndef" 2\nx 3\n',
                 r'open_quote\.star: data_t',
                 id='unclosed_quote'),
    pytest.param('empty.star', '\n\n',
                 r'empty\.star: empty file: not a STAR file',
                 id='empty_file'),
    pytest.param('extra.star', 'data_x\nloop_\n_rlnA #1\n_rlnB #2\n1 2\n\n# note\n3 4 5\n6 7\n',
                 r'extra\.star: data_x, line 8: 3 fields instead of 2',
                 id='row_with_extra_field'),
    pytest.param('short.star', 'data_x\nloop_\n_rlnA #1\n_rlnB #2\n_rlnC #3\n1 2\n3 4 5\n',
                 r'short\.star: data_x, line 6: 2 fields instead of 3',
                 id='first_row_short'),
    pytest.param('long.star', 'data_x\nloop_\n_rlnA #1\n1 2\n3 4\n',
                 r'long\.star: data_x \(line 4\): rows have 2 fields but ' r'the loop declares 1 columns',
                 id='all_rows_too_long'),
    pytest.param('kv.star', 'data_general\n_rlnA 1\n_rlnB\n',
                 r'kv\.star: data_general, line 3: expected "_label value"',
                 id='bad_key_value_line'),
    pytest.param('dup.star', 'data_a\n_rlnA 1\ndata_a\n_rlnA 2\n',
                 r'dup\.star: duplicate block data_a \(line 3\)',
                 id='duplicate_block'),
]


@pytest.mark.parametrize('name, text, message', MALFORMED)
def test_malformed_file_error_names_file_and_reason(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(StarError, match=message):
        read_star(path)
