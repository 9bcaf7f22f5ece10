"""RELION Euler convention and Scipion transforms, against pwem's own reference functions."""
import numpy as np
import pytest

from scipion_reciprocal.core.geometry import (matrix_to_relion_euler, relion_euler_to_matrix,
                                              relion_from_scipion_matrices,
                                              scipion_matrices_from_relion)
from scipion_reciprocal.tests.references import relion_euler_matrix


ANGLES = np.array([[10.0, 20.0, 30.0], [-170.0, 95.0, 45.0], [123.0, 150.0, -60.0],
                   [0.0, 90.0, 0.0]])


def test_matrix_equals_relion_formula():
    matrices = relion_euler_to_matrix(*ANGLES.T)
    for angles, matrix in zip(ANGLES, matrices):
        np.testing.assert_allclose(matrix, relion_euler_matrix(*angles), atol=1e-12)


def test_euler_round_trip_gives_same_rotation():
    back = matrix_to_relion_euler(relion_euler_to_matrix(*ANGLES.T))
    np.testing.assert_allclose(relion_euler_to_matrix(*back.T), relion_euler_to_matrix(*ANGLES.T),
                               atol=1e-10)
    np.testing.assert_allclose(back[:3], ANGLES[:3], atol=1e-8)


def test_scipion_transform_matches_pwem_convention():
    pytest.importorskip("pwem")
    from pwem.convert.transformations import euler_matrix, translation_from_matrix, euler_from_matrix
    origins = np.array([[1.5, -2.0], [0.0, 3.25], [-4.0, 0.5], [0.0, 0.0]])
    matrices = scipion_matrices_from_relion(ANGLES, origins)
    for angles, origin, matrix in zip(ANGLES, origins, matrices):
        # Scipion's relion plugin: M = inv(euler_matrix(-angles, 'szyz') with -shifts).
        expected = euler_matrix(*(-np.deg2rad(angles)), axes="szyz")
        expected[:3, 3] = -np.array([origin[0], origin[1], 0.0])
        np.testing.assert_allclose(matrix, np.linalg.inv(expected), atol=1e-10)
        inverse = np.linalg.inv(matrix)
        np.testing.assert_allclose(-translation_from_matrix(inverse)[:2], origin, atol=1e-10)
        np.testing.assert_allclose(
            relion_euler_to_matrix(*(-np.rad2deg(euler_from_matrix(inverse, axes="szyz"))))[0],
            relion_euler_to_matrix(*angles)[0], atol=1e-10)
    angles_back, origins_back = relion_from_scipion_matrices(matrices)
    np.testing.assert_allclose(origins_back, origins, atol=1e-10)
    np.testing.assert_allclose(relion_euler_to_matrix(*angles_back.T),
                               relion_euler_to_matrix(*ANGLES.T), atol=1e-10)


def _random_angles(n, seed):
    """Random RELION angles, with exact and near gimbal locks (tilt 0, 180 and within 1e-7)."""
    rng = np.random.default_rng(seed)
    tilts = np.rad2deg(np.arccos(rng.uniform(-1, 1, n)))
    angles = np.column_stack([rng.uniform(-180, 180, n), tilts, rng.uniform(-180, 180, n)])
    angles[:8, 1] = [0.0, 180.0, 1e-7, 180.0 - 1e-7, 1e-3, 179.999, 1e-5, 90.0]
    return angles


def test_matrix_equals_scipy_and_relion_formula_on_random_angles():
    from scipy.spatial.transform import Rotation
    angles = _random_angles(200, seed=1)
    matrices = relion_euler_to_matrix(*angles.T)
    np.testing.assert_allclose(
        matrices, Rotation.from_euler("ZYZ", angles, degrees=True).inv().as_matrix(), atol=1e-12)
    np.testing.assert_allclose(matrices[10], relion_euler_matrix(*angles[10]), atol=1e-12)


def test_euler_from_random_rotations_is_relion_canonical():
    from scipy.spatial.transform import Rotation
    rotations = Rotation.random(500, random_state=2).as_matrix()
    angles = matrix_to_relion_euler(rotations)
    np.testing.assert_allclose(relion_euler_to_matrix(*angles.T), rotations, atol=1e-12)
    assert angles[:, 1].min() >= 0 and angles[:, 1].max() <= 180
    assert np.abs(angles[:, [0, 2]]).max() <= 180


def test_euler_gimbal_lock_puts_in_plane_rotation_in_psi():
    angles = np.array([[30.0, 0.0, 40.0], [30.0, 180.0, 40.0], [-100.0, 0.0, -120.0]])
    back = matrix_to_relion_euler(relion_euler_to_matrix(*angles.T))
    # RELION's Euler_matrix2angles: rot 0; psi = rot + psi at tilt 0, psi - rot at tilt 180.
    np.testing.assert_allclose(back, [[0.0, 0.0, 70.0], [0.0, 180.0, 10.0], [0.0, 0.0, 140.0]],
                               atol=1e-9)


def test_closed_form_matches_pwem_geometry_on_random_transforms():
    pytest.importorskip("pwem")
    relion_convert = pytest.importorskip("relion.convert.convert_deprecated")
    angles = _random_angles(300, seed=3)
    origins = np.random.default_rng(4).uniform(-20, 20, (len(angles), 2))
    matrices = np.array([relion_convert.matrixFromGeometry(np.append(o, 0.0), a, True)
                         for a, o in zip(angles, origins)])
    np.testing.assert_allclose(scipion_matrices_from_relion(angles, origins), matrices, atol=1e-10)
    ours, our_origins = relion_from_scipion_matrices(matrices)
    theirs = [relion_convert.geometryFromMatrix(m, True) for m in matrices]
    np.testing.assert_allclose(our_origins, [s[:2] for s, _ in theirs], atol=1e-9)
    their_angles = np.array([a for _, a in theirs])
    # Within GIMBAL_EPSILON of a gimbal lock tilt is rounded to 0 or 180: errs by |sin(tilt)|.
    np.testing.assert_allclose(relion_euler_to_matrix(*ours.T),
                               relion_euler_to_matrix(*their_angles.T), atol=2e-8)
    # Away from the gimbal lock the angles are pwem's, written with tilt in [0, 180]
    # (pwem gives the equivalent rot + 180, -tilt, psi + 180 when its tilt is negative).
    regular = np.abs(np.sin(np.deg2rad(angles[:, 1]))) > 1e-4
    flip = their_angles[:, 1] < 0
    canonical = their_angles + np.where(flip[:, None], [180.0, 0.0, 180.0], 0.0)
    canonical[:, 1] = np.abs(canonical[:, 1])
    difference = (ours - canonical + 180.0) % 360.0 - 180.0
    np.testing.assert_allclose(difference[regular], 0.0, atol=1e-7)
    np.testing.assert_allclose(ours[regular], angles[regular], atol=1e-7)
