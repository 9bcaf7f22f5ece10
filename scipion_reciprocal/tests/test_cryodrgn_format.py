"""RECOVAR inputs (cryoDRGN layout) from RELION particle tables: numbers, files and errors."""
import os
import pickle

import numpy as np
import pandas as pd
import pytest

from scipion_reciprocal.formats import cryodrgn
from scipion_reciprocal.formats.mrc import read_images, write_stack
from scipion_reciprocal.formats.relion import parse_image_names
from scipion_reciprocal.formats.star import read_particles_star


def _relion_euler_matrix(rot, tilt, psi):
    """RELION's Euler_angles2matrix (src/euler.cpp), element by element."""
    alpha, beta, gamma = np.deg2rad([rot, tilt, psi])
    ca, sa = np.cos(alpha), np.sin(alpha)
    cb, sb = np.cos(beta), np.sin(beta)
    cg, sg = np.cos(gamma), np.sin(gamma)
    cc, cs = cb * ca, cb * sa
    sc, ss = sb * ca, sb * sa
    return np.array([
        [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
        [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
        [sc, ss, cb],
    ])


ANGLES = np.array([[0.0, 0.0, 0.0], [90.0, 0.0, 0.0], [0.0, 90.0, 0.0], [0.0, 0.0, 90.0],
                   [10.0, 20.0, 30.0], [-170.0, 95.0, 45.0], [123.0, 150.0, -60.0],
                   [359.0, 179.9, -359.0]])


def _particles(n=6, box=16, pixel_size=2.0, stack='Extract/job001/a.mrcs', seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        'rlnImageName': [f'{i + 1:06d}@{stack}' for i in range(n)],
        'rlnAngleRot': rng.uniform(-180, 180, n), 'rlnAngleTilt': rng.uniform(0, 180, n),
        'rlnAnglePsi': rng.uniform(-180, 180, n),
        'rlnOriginXAngst': rng.uniform(-4, 4, n), 'rlnOriginYAngst': rng.uniform(-4, 4, n),
        'rlnDefocusU': rng.uniform(10000, 20000, n), 'rlnDefocusV': rng.uniform(10000, 20000, n),
        'rlnDefocusAngle': rng.uniform(0, 180, n), 'rlnPhaseShift': np.zeros(n),
        'rlnOpticsGroup': np.ones(n, dtype=int), 'rlnVoltage': 300.0,
        'rlnSphericalAberration': 2.7, 'rlnAmplitudeContrast': 0.1,
        'rlnImagePixelSize': pixel_size, 'rlnImageSize': box,
        'rlnRandomSubset': np.arange(n) % 2 + 1,
    })


def _project(tmp_path, names_and_sizes, box=16, pixel_size=2.0):
    """Stacks whose image k holds the constant value 1000 * stack + k."""
    for s, (name, size) in enumerate(names_and_sizes):
        values = (1000 * s + np.arange(1, size + 1))[:, None, None]
        images = np.ones((size, box, box), np.float32) * values
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        write_stack(tmp_path / name, images, pixel_size)
    return tmp_path


# ------------------------------------------------------------------ numbers

def test_rotations_equal_relion_euler_matrix():
    matrices = cryodrgn.relion_to_rotations(*ANGLES.T)
    assert matrices.shape == (len(ANGLES), 3, 3)
    for angles, matrix in zip(ANGLES, matrices):
        np.testing.assert_allclose(matrix, _relion_euler_matrix(*angles), atol=1e-12)


def test_rotation_by_rot_about_z_moves_x_to_minus_y():
    # RELION: a density at map x = +1 appears at image y = -1 for rot = 90.
    matrix = cryodrgn.relion_to_rotations([90.0], [0.0], [0.0])[0]
    np.testing.assert_allclose(matrix @ [1.0, 0.0, 0.0], [0.0, -1.0, 0.0], atol=1e-12)


def test_translations_from_angstrom_and_from_pixels():
    box, pixel_size = 64, 2.5
    angst = pd.DataFrame({'rlnOriginXAngst': [5.0, -10.0], 'rlnOriginYAngst': [2.5, 0.0]})
    np.testing.assert_allclose(cryodrgn.translations_fraction(angst, pixel_size, box),
                               [[2.0 / 64, 1.0 / 64], [-4.0 / 64, 0.0]])
    pixels = pd.DataFrame({'rlnOriginX': [2.0, -4.0], 'rlnOriginY': [1.0, 0.0]})
    np.testing.assert_allclose(cryodrgn.translations_fraction(pixels, pixel_size, box),
                               [[2.0 / 64, 1.0 / 64], [-4.0 / 64, 0.0]])
    both = pd.concat([angst, pixels * 100], axis=1)
    np.testing.assert_allclose(cryodrgn.translations_fraction(both, pixel_size, box),
                               cryodrgn.translations_fraction(angst, pixel_size, box))
    none = pd.DataFrame({'rlnAngleRot': [0.0, 1.0]})
    np.testing.assert_array_equal(cryodrgn.translations_fraction(none, pixel_size, box), 0.0)


def test_shift_larger_than_box_is_refused():
    origins = pd.DataFrame({'rlnOriginX': [1.0, 40.0], 'rlnOriginY': [0.0, 0.0]})
    with pytest.raises(cryodrgn.RecovarInputError, match='row 1.*32 px box'):
        cryodrgn.translations_fraction(origins, 1.0, 32)


def test_ctf_columns_equal_the_star_values():
    p = _particles(n=5)
    ctf = cryodrgn.ctf_parameters(16, 2.0, p.rlnDefocusU, p.rlnDefocusV, p.rlnDefocusAngle,
                                  p.rlnVoltage, p.rlnSphericalAberration, p.rlnAmplitudeContrast,
                                  [0.0, 30.0, np.nan, 90.0, 0.0])
    assert ctf.dtype == np.float32 and ctf.shape == (5, 9)
    expected = np.column_stack([np.full(5, 16.0), np.full(5, 2.0), p.rlnDefocusU, p.rlnDefocusV,
                                p.rlnDefocusAngle, np.full(5, 300.0), np.full(5, 2.7),
                                np.full(5, 0.1), [0.0, 30.0, 0.0, 90.0, 0.0]])
    np.testing.assert_allclose(ctf, expected, rtol=1e-7)


def test_missing_phase_shift_becomes_zero():
    p = _particles(n=3)
    ctf = cryodrgn.ctf_parameters(16, 2.0, p.rlnDefocusU, p.rlnDefocusV, p.rlnDefocusAngle,
                                  300.0, 2.7, 0.1)
    np.testing.assert_array_equal(ctf[:, 8], 0.0)


def test_pickles_have_cryodrgn_layout(tmp_path):
    rotations = cryodrgn.relion_to_rotations(*ANGLES.T)
    trans = np.linspace(-0.5, 0.5, 2 * len(ANGLES)).reshape(-1, 2)
    cryodrgn.write_poses_pkl(tmp_path / 'poses.pkl', rotations, trans)
    with open(tmp_path / 'poses.pkl', 'rb') as fh:
        poses = pickle.load(fh)
    assert isinstance(poses, tuple) and len(poses) == 2
    assert poses[0].shape == (len(ANGLES), 3, 3) and poses[0].dtype == np.float32
    np.testing.assert_allclose(poses[1], trans, atol=1e-7)
    with pytest.raises(cryodrgn.RecovarInputError, match='rotations must have shape'):
        cryodrgn.write_poses_pkl(tmp_path / 'bad.pkl', rotations[:, :2], trans)
    with pytest.raises(cryodrgn.RecovarInputError, match='NaN'):
        cryodrgn.write_ctf_pkl(tmp_path / 'ctf.pkl', np.full((2, 9), np.nan))


# ------------------------------------------------------------------ files

def test_inputs_point_at_the_right_images_in_id_order(tmp_path):
    root = _project(tmp_path / 'proj', [('Extract/job001/a.mrcs', 4),
                                        ('Extract/job002/b b.mrcs', 3)])
    rows = pd.concat([_particles(4, stack='Extract/job001/a.mrcs', seed=1),
                      _particles(3, stack='Extract/job002/b b.mrcs', seed=2)])
    rows = rows.iloc[[5, 0, 3, 6, 1]].reset_index(drop=True)  # a subset, reordered
    ids = np.array([50, 10, 40, 70, 20])
    inputs = cryodrgn.write_recovar_inputs(rows, tmp_path / 'recovar', 2.0, 16, ids=ids,
                                           image_root=root)

    np.testing.assert_array_equal(inputs.id_map, ids)
    np.testing.assert_array_equal(cryodrgn.read_id_map(inputs.id_map_file), ids)
    star = read_particles_star(inputs.particles)
    indices, paths = parse_image_names(star.particles['rlnImageName'])
    values = [read_images(inputs.particles.parent / p, [i])[0, 0, 0]
              for i, p in zip(indices, paths)]
    np.testing.assert_array_equal(values, [1002, 1, 4, 1003, 2])
    links = sorted((tmp_path / 'recovar' / cryodrgn.STACKS_DIR).iterdir())
    assert len(links) == 2 and all(p.is_symlink() for p in links)
    assert not any(' ' in p.name for p in links)
    assert star.optics['rlnImageSize'].tolist() == [16]
    np.testing.assert_array_equal(star.particles['rlnRandomSubset'], rows['rlnRandomSubset'])

    rot, trans = cryodrgn.read_poses_pkl(inputs.poses)
    np.testing.assert_allclose(rot, cryodrgn.relion_to_rotations(
        rows.rlnAngleRot, rows.rlnAngleTilt, rows.rlnAnglePsi), atol=1e-6)
    np.testing.assert_allclose(trans * 16 * 2.0, rows[['rlnOriginXAngst', 'rlnOriginYAngst']],
                               atol=1e-5)
    ctf = cryodrgn.read_ctf_pkl(inputs.ctf)
    np.testing.assert_allclose(ctf[:, 2:5], rows[['rlnDefocusU', 'rlnDefocusV', 'rlnDefocusAngle']],
                               rtol=1e-7)
    assert list(star.particles.columns) == ['rlnImageName', 'rlnOpticsGroup', 'rlnRandomSubset']
    assert star.optics[['rlnVoltage', 'rlnImagePixelSize']].values.tolist() == [[300.0, 2.0]]


def test_rewriting_replaces_the_links(tmp_path):
    root = _project(tmp_path / 'proj', [('a.mrcs', 3)])
    rows = _particles(3, stack='a.mrcs')
    for _ in range(2):
        inputs = cryodrgn.write_recovar_inputs(rows, tmp_path / 'recovar', 2.0, 16,
                                               image_root=root)
    link = next((tmp_path / 'recovar' / cryodrgn.STACKS_DIR).iterdir())
    assert os.readlink(link) == str(root / 'a.mrcs')
    np.testing.assert_array_equal(inputs.id_map, [1, 2, 3])


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize('drop, message', [
    (['rlnDefocusU'], 'no CTF.*rlnDefocusU'),
    (['rlnVoltage', 'rlnAmplitudeContrast'], 'no CTF.*rlnVoltage, rlnAmplitudeContrast'),
    (['rlnAngleTilt'], 'no 3D alignment.*rlnAngleTilt'),
    (['rlnImageName'], 'no image names'),
])
def test_missing_columns_are_named(tmp_path, drop, message):
    rows = _particles(3).drop(columns=drop)
    with pytest.raises(cryodrgn.RecovarInputError, match=message):
        cryodrgn.write_recovar_inputs(rows, tmp_path, 2.0, 16, image_root=tmp_path)


def test_bad_values_are_refused(tmp_path):
    root = _project(tmp_path / 'proj', [('Extract/job001/a.mrcs', 6)])
    rows = _particles(6)
    with pytest.raises(cryodrgn.RecovarInputError, match='box size is 15 px.*even'):
        cryodrgn.write_recovar_inputs(rows.assign(rlnImageSize=15), tmp_path / 'o', 2.0, 15,
                                      image_root=root)
    nan_angle = rows.copy()
    nan_angle.loc[2, 'rlnAnglePsi'] = np.nan
    with pytest.raises(cryodrgn.RecovarInputError, match='missing angles.*row 2, rlnAnglePsi'):
        cryodrgn.write_recovar_inputs(nan_angle, tmp_path / 'o', 2.0, 16, image_root=root)
    with pytest.raises(cryodrgn.RecovarInputError, match='rlnImagePixelSize is 2.0.*not 1.5'):
        cryodrgn.write_recovar_inputs(rows, tmp_path / 'o', 1.5, 16, image_root=root)
    far = rows.assign(rlnOriginXAngst=rows.rlnOriginXAngst.where(rows.index != 4, 40.0))
    with pytest.raises(cryodrgn.RecovarInputError, match='larger than the box.*row 4'):
        cryodrgn.write_recovar_inputs(far, tmp_path / 'o', 2.0, 16, image_root=root)
    with pytest.raises(cryodrgn.RecovarInputError, match='2 ids for 6 particles'):
        cryodrgn.write_recovar_inputs(rows, tmp_path / 'o', 2.0, 16, ids=[1, 2], image_root=root)
    with pytest.raises(cryodrgn.RecovarInputError, match='ids are not unique'):
        cryodrgn.write_recovar_inputs(rows, tmp_path / 'o', 2.0, 16, ids=[1, 2, 3, 4, 5, 1],
                                      image_root=root)
    with pytest.raises(cryodrgn.RecovarInputError, match='no particles'):
        cryodrgn.write_recovar_inputs(rows.iloc[:0], tmp_path / 'o', 2.0, 16, image_root=root)


def test_unusable_stacks_are_named(tmp_path):
    root = _project(tmp_path / 'proj', [('short.mrcs', 2), ('big.mrcs', 3)], box=16)
    _project(tmp_path / 'proj', [('other.mrcs', 6)], box=20)
    (root / 'x.spi').write_bytes(b'\0' * 2048)
    cases = [('missing.mrcs', 'missing.mrcs: file not found'),
             ('x.spi', 'x.spi: RECOVAR reads MRC stacks only'),
             ('short.mrcs', 'short.mrcs: has 2 images but image 3 is referenced'),
             ('other.mrcs', 'other.mrcs: images are 20 x 20 px, expected 16 x 16')]
    for stack, message in cases:
        with pytest.raises(Exception, match=message):
            cryodrgn.write_recovar_inputs(_particles(3, stack=stack), tmp_path / 'o', 2.0, 16,
                                          image_root=root)
    assert not (tmp_path / 'o' / cryodrgn.STACKS_DIR).exists()  # nothing linked before the checks
