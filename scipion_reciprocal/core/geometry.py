"""RELION's Euler-angle convention and Scipion's 4x4 projection transforms, vectorised.

RELION: ``A = Euler_angles2matrix(rot, tilt, psi)`` rotates the reference; a particle's centre
sits at the image centre minus its origin (``rlnOriginX/Y``, pixels).  In scipy terms
``A = Rotation.from_euler('ZYZ', [rot, tilt, psi], degrees=True).inv()``.

Scipion stores a projection alignment as the inverse of ``[[A, -origin], [0, 1]]`` (its
``inverseTransform`` convention for ``ALIGN_PROJ``), with the origin in pixels: a rigid
transform ``[[R, t], [0, 1]]`` with ``R = A^T`` and ``t = A^T origin``, so ``A = R^T`` and
``origin = R^T t``.  Every conversion here is written in closed form on whole arrays (no
matrix inversion, no per-row work): a million transforms take a fraction of a second.
"""
import numpy as np

#: Below this ``|sin(tilt)|``, rot and psi are taken as not separable.  Rounding errors of
#: about 1e-16 in the matrix make rot and psi err by 1e-16 / |sin(tilt)|, while setting tilt
#: to 0 or 180 errs by |sin(tilt)|: the square root of the float64 epsilon balances the two
#: (RELION, in single precision, uses ``16 * FLT_EPSILON``).
GIMBAL_EPSILON = np.sqrt(np.finfo(np.float64).eps)


def relion_euler_to_matrix(rot, tilt, psi):
    """(N, 3, 3) RELION rotation matrices ``A`` from angles in degrees (``Euler_angles2matrix``)."""
    a, b, g = (np.deg2rad(np.ravel(v).astype(float)) for v in (rot, tilt, psi))
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    matrices = np.empty((len(a), 3, 3))
    matrices[:, 0] = np.column_stack([cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb])
    matrices[:, 1] = np.column_stack([-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb])
    matrices[:, 2] = np.column_stack([sc, ss, cb])
    return matrices


def matrix_to_relion_euler(matrices):
    """(N, 3) RELION (rot, tilt, psi) in degrees from (N, 3, 3) rotation matrices ``A``.

    RELION's ``Euler_matrix2angles``: tilt in [0, 180]; rot and psi in (-180, 180].  At a
    gimbal lock (tilt 0 or 180, ``|sin(tilt)|`` below :data:`GIMBAL_EPSILON`) only rot + psi
    (or psi - rot) is defined: rot is set to 0 and psi carries the in-plane rotation.
    """
    m = np.asarray(matrices, dtype=float).reshape(-1, 3, 3)
    abs_sb = np.hypot(m[:, 0, 2], m[:, 1, 2])
    rot = np.arctan2(m[:, 2, 1], m[:, 2, 0])
    tilt = np.arctan2(abs_sb, m[:, 2, 2])
    psi = np.arctan2(m[:, 1, 2], -m[:, 0, 2])
    gimbal = abs_sb <= GIMBAL_EPSILON
    if gimbal.any():
        flipped = m[gimbal, 2, 2] < 0  # tilt 180: psi - rot is defined
        sign = np.where(flipped, -1.0, 1.0)
        rot[gimbal] = 0.0
        tilt[gimbal] = np.where(flipped, np.pi, 0.0)
        psi[gimbal] = np.arctan2(-sign * m[gimbal, 1, 0], sign * m[gimbal, 0, 0])
    return np.rad2deg(np.column_stack([rot, tilt, psi]))


def scipion_matrices_from_relion(angles, origins_px):
    """(N, 4, 4) Scipion projection transforms from RELION angles (N, 3) and origins (N, 2) px."""
    angles = np.asarray(angles, dtype=float).reshape(-1, 3)
    origins = np.asarray(origins_px, dtype=float).reshape(-1, 2)
    rotations = relion_euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    matrices = np.zeros((len(angles), 4, 4))
    matrices[:, :3, :3] = rotations.transpose(0, 2, 1)
    # t = A^T (ox, oy, 0): the first two rows of A weighted by the origin.
    matrices[:, :3, 3] = (rotations[:, 0, :] * origins[:, :1]
                          + rotations[:, 1, :] * origins[:, 1:])
    matrices[:, 3, 3] = 1.0
    return matrices


def relion_from_scipion_matrices(matrices):
    """RELION (angles (N, 3) degrees, origins (N, 2) px) from Scipion projection transforms.

    The transforms are rigid (rotation and translation, last row ``0 0 0 1``), as Scipion
    stores projection alignments: ``A = R^T`` and ``origin = (R^T t)[:2]``.
    """
    matrices = np.asarray(matrices, dtype=float).reshape(-1, 4, 4)
    rotations = matrices[:, :3, :3]
    translations = matrices[:, :3, 3]
    angles = matrix_to_relion_euler(rotations.transpose(0, 2, 1))
    # (R^T t)_j = sum_i R_ij t_i, for the columns j = x, y.
    origins = np.einsum("nij,ni->nj", rotations[:, :, :2], translations)
    return angles, origins
