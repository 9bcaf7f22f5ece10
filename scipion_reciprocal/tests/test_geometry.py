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
