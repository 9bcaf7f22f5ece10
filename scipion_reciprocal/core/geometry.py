"""RELION's Euler-angle convention and Scipion's 4x4 projection transforms, vectorised.

RELION: ``A = Euler_angles2matrix(rot, tilt, psi)`` rotates the reference; a particle's centre
sits at the image centre minus its origin (``rlnOriginX/Y``, pixels).  In scipy terms
``A = Rotation.from_euler('ZYZ', [rot, tilt, psi], degrees=True).inv()``.

Scipion stores a projection alignment as the inverse of ``[[A, -origin], [0, 1]]`` (its
``inverseTransform`` convention for ``ALIGN_PROJ``), with the origin in pixels.
"""
import warnings

import numpy as np
from scipy.spatial.transform import Rotation


def relion_euler_to_matrix(rot, tilt, psi):
    """(N, 3, 3) RELION rotation matrices from angles in degrees."""
    angles = np.column_stack([np.ravel(rot), np.ravel(tilt), np.ravel(psi)]).astype(float)
    return Rotation.from_euler("ZYZ", angles, degrees=True).inv().as_matrix()


def matrix_to_relion_euler(matrices):
    """(N, 3) RELION (rot, tilt, psi) in degrees from (N, 3, 3) rotation matrices."""
    with warnings.catch_warnings():
        # tilt = 0 or 180 is a gimbal lock: scipy warns and sets psi = 0, which is exact.
        warnings.simplefilter("ignore", UserWarning)
        return Rotation.from_matrix(np.asarray(matrices)).inv().as_euler("ZYZ", degrees=True)


def scipion_matrices_from_relion(angles, origins_px):
    """(N, 4, 4) Scipion projection transforms from RELION angles (N, 3) and origins (N, 2) px."""
    angles = np.asarray(angles, dtype=float).reshape(-1, 3)
    origins = np.asarray(origins_px, dtype=float).reshape(-1, 2)
    forward = np.zeros((len(angles), 4, 4))
    forward[:, :3, :3] = relion_euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    forward[:, :2, 3] = -origins
    forward[:, 3, 3] = 1.0
    return np.linalg.inv(forward)


def relion_from_scipion_matrices(matrices):
    """RELION (angles (N, 3) degrees, origins (N, 2) px) from Scipion projection transforms."""
    forward = np.linalg.inv(np.asarray(matrices, dtype=float).reshape(-1, 4, 4))
    return matrix_to_relion_euler(forward[:, :3, :3]), -forward[:, :2, 3]
