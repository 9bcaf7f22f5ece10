"""A small synthetic molecule in several conformations, built from Gaussian blobs.

The molecule is a core domain with a knob on one side (shared by every state, and making the
molecule unlike its mirror images), an arm that swings rigidly about a hinge (state 0 closed,
the last state fully open) and a small extra domain present only in odd-numbered states.
Everything is generated from ``seed``, so the molecule is asymmetric but reproducible.

Coordinates follow the projection convention of :mod:`.particles`: a voxel's position is
``(x, y, z)`` in pixels relative to the box centre at index ``box // 2``; arrays are indexed
``[z, y, x]``.
"""

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

#: Outer radius of the molecule (blob centres plus two blob widths) at its nominal size, in Å.
NOMINAL_RADIUS_A = 44.0
#: Fraction of the box radius the molecule may fill.
FIT_FRACTION = 0.7
#: Hinge opening of the last state, in degrees.
MAX_OPENING_DEG = 60.0

_N_CORE, _N_KNOB, _N_ARM, _N_EXTRA = 26, 4, 9, 5


def molecule_blobs(n_states=3, box=32, pixel_size=4.0, seed=0):
    """Blob models of the molecule's conformations.

    Parameters
    ----------
    n_states : int
        Number of conformations.
    box : int
        Box size in pixels; the molecule is shrunk if it would not fit within
        ``FIT_FRACTION`` of the box radius.
    pixel_size : float
        Pixel size in Å; the molecule has a fixed size in Å (``NOMINAL_RADIUS_A``).
    seed : int
        Seed of the random geometry.

    Returns
    -------
    list of numpy.ndarray
        One ``(m, 5)`` array per state, columns ``x, y, z, sigma, amplitude`` in pixels
        (positions relative to the box centre).
    """
    if n_states < 1:
        raise ValueError(f'n_states must be at least 1, got {n_states}')
    if box < 8:
        raise ValueError(f'box must be at least 8 pixels, got {box}')
    rng = np.random.default_rng(seed)
    core = _ellipsoid_points(rng, _N_CORE, semi_axes=(18.0, 13.0, 9.0))
    # A knob under one end of the core makes every mirror image of the molecule distinct.
    core[:_N_KNOB] = np.array([-9.0, 7.0, -12.0]) + rng.normal(0.0, 2.0, (_N_KNOB, 3))
    core_sigma = rng.uniform(5.5, 7.0, _N_CORE)
    core_amp = rng.uniform(0.7, 1.3, _N_CORE)

    # The arm leaves the core's +x end as a slightly bent chain of blobs.
    hinge = np.array([16.0, 4.0, 0.0])
    direction = np.array([0.55, 0.8, 0.25])
    direction /= np.linalg.norm(direction)
    steps = np.arange(1, _N_ARM + 1)[:, None] * 3.4
    bend = np.outer(np.linspace(0.0, 1.0, _N_ARM) ** 2, [-6.0, 0.0, 5.0])
    arm = hinge + steps * direction + bend + rng.normal(0.0, 1.0, (_N_ARM, 3))
    arm_sigma = rng.uniform(5.0, 6.0, _N_ARM)
    arm_amp = rng.uniform(1.0, 1.4, _N_ARM)
    hinge_axis = np.cross(direction, [0.0, 0.0, 1.0])
    hinge_axis /= np.linalg.norm(hinge_axis)

    # A small domain docked on the core's far side, opposite the arm.
    extra = np.array([-12.0, -12.0, 9.0]) + rng.normal(0.0, 2.5, (_N_EXTRA, 3))
    extra_sigma = rng.uniform(5.0, 6.0, _N_EXTRA)
    extra_amp = rng.uniform(1.0, 1.4, _N_EXTRA)

    centre = np.average(core, axis=0, weights=core_amp * core_sigma ** 3)
    states = []
    for state in range(n_states):
        fraction = state / (n_states - 1) if n_states > 1 else 0.0
        turn = Rotation.from_rotvec(np.deg2rad(MAX_OPENING_DEG * fraction) * hinge_axis)
        moved_arm = hinge + turn.apply(arm - hinge)
        parts = [np.column_stack([core, core_sigma, core_amp]),
                 np.column_stack([moved_arm, arm_sigma, arm_amp])]
        if state % 2 == 1:
            parts.append(np.column_stack([extra, extra_sigma, extra_amp]))
        blobs = np.concatenate(parts)
        blobs[:, :3] -= centre
        states.append(blobs)

    extent = max(np.max(np.linalg.norm(b[:, :3], axis=1) + 2.0 * b[:, 3]) for b in states)
    fit_radius_a = FIT_FRACTION * box * pixel_size / 2.0
    scale = min(NOMINAL_RADIUS_A, fit_radius_a) / extent / pixel_size
    for blobs in states:
        blobs[:, :4] *= scale
    return states


def render_blobs(blobs, box):
    """Sample a sum of isotropic Gaussian blobs on a ``box``³ grid.

    Parameters
    ----------
    blobs : numpy.ndarray
        ``(m, 5)`` array ``x, y, z, sigma, amplitude`` in pixels (relative to the box centre).
    box : int
        Box size.

    Returns
    -------
    numpy.ndarray
        ``(box, box, box)`` float32 volume indexed ``[z, y, x]``; a blob's peak value is its
        amplitude.
    """
    axis = np.arange(box) - box // 2
    volume = np.zeros((box, box, box))
    for x, y, z, sigma, amp in blobs:
        gx = np.exp(-(axis - x) ** 2 / (2.0 * sigma ** 2))
        gy = np.exp(-(axis - y) ** 2 / (2.0 * sigma ** 2))
        gz = np.exp(-(axis - z) ** 2 / (2.0 * sigma ** 2))
        volume += amp * gz[:, None, None] * gy[None, :, None] * gx[None, None, :]
    return volume.astype(np.float32)


def project_blobs(blobs, matrix, box):
    """Analytic projection of a blob model, for checking numerical projectors.

    Computes ``p(x, y) = integral over z of V(Aᵀ (x, y, z))``: each blob moves to
    ``(A r)[:2]`` and becomes a 2D Gaussian with its amplitude times ``sqrt(2 pi) sigma``.

    Parameters
    ----------
    blobs : numpy.ndarray
        ``(m, 5)`` blob model (see :func:`molecule_blobs`).
    matrix : numpy.ndarray
        ``(3, 3)`` RELION projection matrix ``A``.
    box : int
        Image size.

    Returns
    -------
    numpy.ndarray
        ``(box, box)`` float64 image indexed ``[y, x]``.
    """
    axis = np.arange(box) - box // 2
    centres = blobs[:, :3] @ np.asarray(matrix).T
    image = np.zeros((box, box))
    for (x, y, _), sigma, amp in zip(centres, blobs[:, 3], blobs[:, 4]):
        gx = np.exp(-(axis - x) ** 2 / (2.0 * sigma ** 2))
        gy = np.exp(-(axis - y) ** 2 / (2.0 * sigma ** 2))
        image += amp * np.sqrt(2.0 * np.pi) * sigma * np.outer(gy, gx)
    return image


def molecule_maps(n_states=3, box=32, pixel_size=4.0, seed=0):
    """Density maps of the synthetic molecule in ``n_states`` conformations.

    State 0 is closed and the last state fully open (the arm turns by
    ``MAX_OPENING_DEG * s / (n_states - 1)``); odd states also carry a small extra domain.
    The core's centre of mass sits at the box centre.

    Parameters
    ----------
    n_states : int
        Number of conformations.
    box : int
        Box size in pixels.
    pixel_size : float
        Pixel size in Å.
    seed : int
        Seed of the geometry.

    Returns
    -------
    numpy.ndarray
        ``(n_states, box, box, box)`` float32 maps indexed ``[state, z, y, x]``.
    """
    blobs = molecule_blobs(n_states, box, pixel_size, seed)
    return np.stack([render_blobs(b, box) for b in blobs])


def rotate_map(volume, rotation_matrix, shift_px=(0.0, 0.0, 0.0), order=3):
    """Rotate a map about its centre, then shift it.

    The result ``W`` satisfies ``W(R r + t) = V(r)`` for positions ``r = (x, y, z)`` in
    pixels relative to the box centre: the density at ``r`` moves to ``R r + t``.

    Parameters
    ----------
    volume : numpy.ndarray
        ``(nz, ny, nx)`` map indexed ``[z, y, x]``.
    rotation_matrix : numpy.ndarray
        ``(3, 3)`` rotation ``R`` acting on ``(x, y, z)`` column vectors.
    shift_px : sequence of float
        Translation ``t = (tx, ty, tz)`` in pixels.
    order : int
        Spline order of the interpolation (1 or 3).

    Returns
    -------
    numpy.ndarray
        The moved map, same shape, float32; density moved in from outside the box is zero.
    """
    volume = np.asarray(volume, dtype=np.float64)
    if volume.ndim != 3:
        raise ValueError(f'rotate_map expects a 3D volume, got shape {volume.shape}')
    rotation = np.asarray(rotation_matrix, dtype=np.float64)
    shift = np.asarray(shift_px, dtype=np.float64)
    centre = np.array([volume.shape[2] // 2, volume.shape[1] // 2, volume.shape[0] // 2])
    z, y, x = np.indices(volume.shape, dtype=np.float64)
    out_xyz = np.stack([x.ravel(), y.ravel(), z.ravel()]) - centre[:, None] - shift[:, None]
    src_xyz = rotation.T @ out_xyz + centre[:, None]
    moved = ndimage.map_coordinates(volume, src_xyz[::-1], order=order, mode='constant',
                                    cval=0.0, prefilter=order > 1)
    return moved.reshape(volume.shape).astype(np.float32)


def _ellipsoid_points(rng, n, semi_axes):
    """``n`` points drawn uniformly inside an axis-aligned ellipsoid (Å)."""
    points = []
    while len(points) < n:
        candidate = rng.uniform(-1.0, 1.0, 3)
        if candidate @ candidate <= 1.0:
            points.append(candidate)
    return np.array(points) * np.asarray(semi_axes)
