"""Rigid alignment of maps, coarse to fine.

Convention (shared with :func:`scipion_reciprocal.simulate.molecule.rotate_map`): positions
``x = (x, y, z)`` are in voxels relative to the box centre ``box // 2``. A transform is a
4 x 4 matrix ``H = [[A, t], [0, 1]]`` that moves density from position ``p`` of the input map to
``A p + t`` in the aligned map, i.e. ``aligned(x) = input(A⁻¹ (x - t))``. ``A = R`` for a proper
rotation, ``A = R M`` with ``M = diag(1, 1, -1)`` when the map is mirrored (z flipped) first.
Shifts ``t`` are in voxels of the common grid.

Search, for every pair (reference map, moving map):

1. Global scan on a coarse grid (``coarse_box`` voxels, Fourier-cropped): both maps are centred
   on their centres of density and the moving map is rotated by every rotation of a uniform
   SO(3) grid (super-Fibonacci spiral); the weighted correlation inside a soft sphere is a
   matrix product, so all pairs are scored together.
2. For the best few distinct rotations, the translation is found by FFT cross-correlation on
   the coarse grid, then rotation, translation, scale and offset are refined by
   Levenberg-Marquardt (trilinear interpolation with analytic gradients).
3. The best candidates are refined again on finer grids up to ``refine_box`` voxels.
"""
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import fft, ndimage, sparse
from scipy.spatial.transform import Rotation

from .grid import edge_mean, fourier_resize, soft_sphere

MIRROR = np.diag([1.0, 1.0, -1.0])


@dataclass
class AlignOptions:
    """Settings of the coarse-to-fine search.

    Attributes
    ----------
    coarse_box : int
        Grid (voxels) of the global rotation scan.
    mid_box : int
        Intermediate refinement grid.
    refine_box : int
        Finest refinement grid (maps larger than this are refined on a Fourier-cropped copy).
    n_rotations : int
        Rotations of the global scan (2000: every rotation within 17 degrees of one sampled).
    n_candidates : int
        Distinct rotations per pair refined on the coarse grid.
    n_finalists : int
        Candidates carried to the finer grids (those within ``finalist_margin`` of the best
        coarse score).
    finalist_margin : float
        Largest coarse-score deficit of a finalist.
    max_shift : float
        Largest translation searched by cross-correlation, as a fraction of the box.
    iterations : tuple of int
        Levenberg-Marquardt iterations on the coarse, middle and fine grids.
    """
    coarse_box: int = 16
    mid_box: int = 32
    refine_box: int = 64
    n_rotations: int = 2000
    n_candidates: int = 4
    n_finalists: int = 2
    finalist_margin: float = 0.03
    max_shift: float = 0.25
    iterations: tuple = (15, 10, 4)


@dataclass
class AlignmentResult:
    """Transforms found by :func:`align_maps`.

    Attributes
    ----------
    transforms : numpy.ndarray
        ``(n, 4, 4)`` transform of each map onto the reference (identity for the reference).
    scores : numpy.ndarray
        ``(n,)`` weighted correlation of each aligned map with the reference on the finest
        refinement grid (1 for the reference).
    pair_transforms : numpy.ndarray or None
        ``(n, n, 4, 4)``: entry ``[i, j]`` moves map ``j`` onto map ``i`` (pairwise mode only).
    pair_scores : numpy.ndarray or None
        ``(n, n)`` symmetric aligned correlations (pairwise mode only; 1 on the diagonal).
    reference : int
        Index of the reference map.
    timings : dict
        Seconds spent per stage.
    pyramids : list of MapPyramid
        The maps on the search grids (for scoring on the finest grid; may be dropped).
    """
    transforms: np.ndarray
    scores: np.ndarray
    pair_transforms: np.ndarray = None
    pair_scores: np.ndarray = None
    reference: int = 0
    timings: dict = field(default_factory=dict)
    pyramids: list = None


# ----------------------------------------------------------------------------- transforms

def make_transform(rotation=None, shift=(0.0, 0.0, 0.0), mirror=False):
    """4 x 4 transform from a rotation matrix, a shift (voxels) and a mirror flag."""
    rotation = np.eye(3) if rotation is None else np.asarray(rotation, dtype=float)
    h = np.eye(4)
    h[:3, :3] = rotation @ MIRROR if mirror else rotation
    h[:3, 3] = shift
    return h


def split_transform(h):
    """Rotation matrix, shift (voxels) and mirror flag of a 4 x 4 transform."""
    linear = np.asarray(h)[:3, :3]
    mirror = bool(np.linalg.det(linear) < 0)
    rotation = linear @ MIRROR if mirror else linear
    return rotation, np.asarray(h)[:3, 3].copy(), mirror


def scale_transform(h, factor):
    """The same transform on a grid whose voxels are ``1 / factor`` times as large."""
    h = np.array(h, dtype=float)
    h[:3, 3] *= factor
    return h


def mirror_map(volume):
    """Flip a cubic map along z about its centre ``box // 2``."""
    flipped = volume[::-1]
    return flipped if volume.shape[0] % 2 else np.roll(flipped, 1, axis=0)


def apply_transform(volume, h, order=3, fill=None):
    """Move a map by a transform (see the module docstring for the convention).

    Parameters
    ----------
    volume : numpy.ndarray
        Cubic map.
    h : numpy.ndarray
        4 x 4 transform, shift in voxels of this map.
    order : int
        Spline order of the interpolation (1 or 3).
    fill : float, optional
        Value for positions outside the input; default the map's edge mean.

    Returns
    -------
    numpy.ndarray
        The aligned float32 map.
    """
    volume = np.asarray(volume, dtype=np.float32)
    if np.allclose(h, np.eye(4)):
        return volume.copy()
    n = volume.shape[0]
    fill = edge_mean(volume) if fill is None else fill
    linear, shift = np.asarray(h)[:3, :3], np.asarray(h)[:3, 3]
    inverse = np.linalg.inv(linear)
    c = n // 2
    # Source index (z, y, x) of each output voxel, built plane by plane to bound memory.
    axis = np.arange(n, dtype=np.float64) - c
    yy, xx = np.meshgrid(axis, axis, indexing='ij')
    plane = np.stack([xx.ravel(), yy.ravel()])
    out = np.empty_like(volume)
    coeffs = ndimage.spline_filter(volume, order=order, output=np.float32) if order > 1 else volume
    for iz in range(n):
        xyz = np.vstack([plane, np.full((1, plane.shape[1]), axis[iz])]) - shift[:, None]
        src = inverse @ xyz + c
        out[iz] = ndimage.map_coordinates(coeffs, src[::-1], order=order, mode='constant',
                                          cval=fill, prefilter=False,
                                          output=np.float32).reshape(n, n)
    return out


def euler_zyz(rotation):
    """Intrinsic ZYZ Euler angles (degrees) of a rotation matrix: ``R = Rz(a) Ry(b) Rz(c)``."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # gimbal lock at b = 0 or 180 is exact
        return Rotation.from_matrix(rotation).as_euler('ZYZ', degrees=True)


# ----------------------------------------------------------------------------- sampling

def rotation_grid(n):
    """``n`` rotations spread uniformly over SO(3) (super-Fibonacci spiral of quaternions).

    Returns
    -------
    scipy.spatial.transform.Rotation
    """
    s = np.arange(n) + 0.5
    phi, psi = np.sqrt(2.0), 1.533751168755204288118041
    r, r2 = np.sqrt(s / n), np.sqrt(1.0 - s / n)
    alpha, beta = 2.0 * np.pi * s / phi, 2.0 * np.pi * s / psi
    quats = np.column_stack([r * np.sin(alpha), r * np.cos(alpha), r2 * np.sin(beta),
                             r2 * np.cos(beta)])
    return Rotation.from_quat(quats)


def _grid_points(box, weights, threshold=1e-3):
    """Positions (xyz voxels from the centre), flat indices and weights of voxels with weight."""
    flat = np.flatnonzero(weights.ravel() > threshold)
    z, y, x = np.unravel_index(flat, weights.shape)
    c = box // 2
    points = np.column_stack([x - c, y - c, z - c]).astype(np.float32)
    return points, flat, weights.ravel()[flat].astype(np.float32)


def trilinear(data, box, points):
    """Sample channels of a cubic map at positions by trilinear interpolation.

    Parameters
    ----------
    data : numpy.ndarray
        ``(box**3, channels)`` map values in C order of ``[z, y, x]``.
    box : int
        Box size.
    points : numpy.ndarray
        ``(..., 3)`` positions ``(x, y, z)`` in voxels from the centre; outside the box the
        edge values are repeated.

    Returns
    -------
    numpy.ndarray
        ``(..., channels)`` interpolated values.
    """
    shape = points.shape[:-1]
    idx = points.reshape(-1, 3) + np.float32(box // 2)
    idx = np.clip(idx, 0.0, box - 1.0)
    base = np.minimum(np.floor(idx), box - 2)
    frac = (idx - base).astype(np.float32)
    base = base.astype(np.int32)
    flat = (base[:, 2] * box + base[:, 1]) * box + base[:, 0]
    cols = flat[:, None] + _corner_offsets(box)[None, :]
    fx, fy, fz = frac[:, 0], frac[:, 1], frac[:, 2]
    gx, gy, gz = 1.0 - fx, 1.0 - fy, 1.0 - fz
    wyz = np.stack([gy * gz, fy * gz, gy * fz, fy * fz], axis=1)
    weights = np.empty((len(flat), 8), dtype=np.float32)
    weights[:, 0::2] = wyz * gx[:, None]
    weights[:, 1::2] = wyz * fx[:, None]
    m = len(flat)
    operator = sparse.csr_matrix((weights.ravel(), cols.ravel(),
                                  np.arange(0, 8 * m + 1, 8, dtype=np.int32)),
                                 shape=(m, data.shape[0]))
    return (operator @ data).reshape(shape + (data.shape[1],))


def _corner_offsets(box):
    """Flat-index offsets of the 8 corners of a voxel cell, x fastest then y then z."""
    return np.array([0, 1, box, box + 1, box * box, box * box + 1, box * box + box,
                     box * box + box + 1], dtype=np.int32)


def fourier_shift(volume, shift):
    """Translate a map by ``shift`` voxels ``(x, y, z)`` (periodic, exact for band-limited maps)."""
    n = volume.shape[0]
    k = fft.fftfreq(n)
    kx = fft.rfftfreq(n)
    phase = np.exp(-2j * np.pi * (k[:, None, None] * shift[2] + k[None, :, None] * shift[1]
                                  + kx[None, None, :] * shift[0]))
    return fft.irfftn(fft.rfftn(volume) * phase, s=volume.shape).astype(np.float32)


def density_centre(volume, weights):
    """Centre (xyz voxels from the box centre) of the density above half a standard deviation."""
    mean = np.vdot(weights, volume) / weights.sum()
    std = np.sqrt(np.vdot(weights, (volume - mean) ** 2) / weights.sum())
    mass = np.clip(volume - (mean + 0.5 * std), 0.0, None) * weights
    total = mass.sum()
    if total <= 0:
        return np.zeros(3)
    n = volume.shape[0]
    axis = np.arange(n) - n // 2
    return np.array([(mass.sum(axis=(0, 1)) * axis).sum(), (mass.sum(axis=(0, 2)) * axis).sum(),
                     (mass.sum(axis=(1, 2)) * axis).sum()]) / total


# ----------------------------------------------------------------------------- pyramids

class _Level:
    """One grid of a map's pyramid: values and gradients, normalised inside a soft sphere."""

    def __init__(self, volume, full_box):
        self.box = volume.shape[0]
        self.scale = self.box / full_box
        self.sphere = soft_sphere(self.box)
        mean = np.vdot(self.sphere, volume) / self.sphere.sum()
        std = np.sqrt(np.vdot(self.sphere, (volume - mean) ** 2) / self.sphere.sum())
        self.volume = ((volume - mean) / max(std, 1e-12)).astype(np.float32)
        gz, gy, gx = np.gradient(self.volume)
        self.data = np.column_stack([self.volume.ravel(), gx.ravel(), gy.ravel(), gz.ravel()])


class MapPyramid:
    """A map (and, if asked, its mirror image) on the grids of the search.

    Parameters
    ----------
    volume : numpy.ndarray
        Cubic map on the common grid.
    boxes : sequence of int
        Grid sizes, coarse to fine.
    mirror : bool
        Also keep the z-flipped map.
    """

    def __init__(self, volume, boxes, mirror=False):
        full = volume.shape[0]
        self.full_box = full
        # Finest first: each grid is a Fourier crop of the previous one (a crop of a crop is
        # the crop), and mirroring commutes with it.
        resized = {}
        current = volume
        for box in sorted(boxes, reverse=True):
            current = fourier_resize(current, box)
            resized[box] = current
        self.levels = [_Level(resized[b], full) for b in boxes]
        self.mirrored = None
        if mirror:
            self.mirrored = [_Level(mirror_map(resized[b]), full) for b in boxes]
        coarse = self.levels[0]
        self.centre = density_centre(coarse.volume, coarse.sphere) / coarse.scale

    def level(self, index, mirrored=False):
        """Grid ``index`` of the map, or of its mirror image."""
        return self.mirrored[index] if mirrored else self.levels[index]

    def centred_coarse(self, mirrored=False):
        """Coarse map shifted so that its density centre sits at the box centre."""
        level = self.level(0, mirrored)
        centre = self.centre * level.scale
        if mirrored:
            centre = MIRROR @ centre
        return fourier_shift(level.volume, -centre), centre / level.scale


def level_boxes(box, options):
    """Grid sizes used for a map of side ``box``."""
    return sorted({min(box, options.coarse_box), min(box, options.mid_box),
                   min(box, options.refine_box)})


# ----------------------------------------------------------------------------- global scan

def _weighted_unit(values, sqrt_w, w_over_total, axis):
    """Centre values on their weighted mean and scale them by sqrt(w) to unit norm."""
    mean = np.sum(values * w_over_total, axis=axis, keepdims=True)
    centred = (values - mean) * sqrt_w
    norm = np.sqrt(np.sum(centred * centred, axis=axis, keepdims=True))
    return centred / np.maximum(norm, 1e-12)


def scan_rotations(ref_volumes, mov_volumes, weights, rotations, top=24, batch=48):
    """Score every rotation of every moving map against every reference map.

    Parameters
    ----------
    ref_volumes : numpy.ndarray
        ``(n_ref, c, c, c)`` centred coarse references.
    mov_volumes : numpy.ndarray
        ``(n_mov, c, c, c)`` centred coarse moving maps.
    weights : numpy.ndarray
        ``(c, c, c)`` soft sphere.
    rotations : scipy.spatial.transform.Rotation
        Rotations to try.
    top : int
        Best rotations kept per (reference, moving) pair.
    batch : int
        Rotations scored together.

    Returns
    -------
    scores : numpy.ndarray
        ``(top, n_ref, n_mov)`` best weighted correlations, best first.
    indices : numpy.ndarray
        ``(top, n_ref, n_mov)`` their rotation indices.
    """
    c = weights.shape[0]
    points, flat, w = _grid_points(c, weights, threshold=0.05)
    sqrt_w = np.sqrt(w)[None, :]
    w_tot = (w / w.sum())[None, :]
    refs = ref_volumes.reshape(len(ref_volumes), -1)[:, flat]
    # Unit, zero-mean (weighted) references, times sqrt(w) again: a score is then refs @ values
    # divided by the moving values' weighted standard deviation.
    refs = (_weighted_unit(refs, sqrt_w, w_tot, axis=1) * sqrt_w).astype(np.float32)
    w_row = w[None, :].astype(np.float32)
    total = float(w.sum())
    data = np.ascontiguousarray(mov_volumes.reshape(len(mov_volumes), -1).T)
    matrices = rotations.as_matrix().astype(np.float32)
    n_rot = len(matrices)
    top = min(top, n_rot)
    best_s = np.full((0, len(refs), len(mov_volumes)), -np.inf, dtype=np.float32)
    best_i = np.zeros((0, len(refs), len(mov_volumes)), dtype=np.int64)
    for start in range(0, n_rot, batch):
        mats = matrices[start:start + batch]
        # Moving map rotated by R, seen at reference positions x: mov(R^T x); as rows x @ R.
        sample_at = (points[None, :, 0:1] * mats[:, None, 0, :]
                     + points[None, :, 1:2] * mats[:, None, 1, :]
                     + points[None, :, 2:3] * mats[:, None, 2, :])
        values = trilinear(data, c, sample_at)                       # (b, p, n_mov)
        first = np.matmul(w_row, values)                             # (b, 1, n_mov)
        second = np.matmul(w_row, values * values)
        spread = np.sqrt(np.maximum(second - first * first / total, 1e-20))
        scores = np.matmul(refs, values) / spread                    # (b, n_ref, n_mov)
        idx = np.broadcast_to(np.arange(start, start + len(mats))[:, None, None], scores.shape)
        all_s = np.concatenate([best_s, scores.astype(np.float32)])
        all_i = np.concatenate([best_i, idx])
        if len(all_s) > top:
            keep = np.argpartition(-all_s, top - 1, axis=0)[:top]
            all_s = np.take_along_axis(all_s, keep, axis=0)
            all_i = np.take_along_axis(all_i, keep, axis=0)
        best_s, best_i = all_s, all_i
    order = np.argsort(-best_s, axis=0)
    return np.take_along_axis(best_s, order, axis=0), np.take_along_axis(best_i, order, axis=0)


def distinct_rotations(indices, quats, count, min_angle_deg):
    """The first ``count`` rotations of ``indices`` at least ``min_angle_deg`` apart."""
    kept = []
    cos_half = np.cos(np.deg2rad(min_angle_deg) / 2.0)
    for i in indices:
        if all(abs(np.dot(quats[i], quats[j])) < cos_half for j in kept):
            kept.append(int(i))
            if len(kept) == count:
                break
    return kept


# ----------------------------------------------------------------------------- refinement

class _PairProblem:
    """Reference values and sample positions on one grid, for refining moving maps onto it.

    The fit uses at most ``max_points`` evenly spread positions; the score uses all of them.
    """

    def __init__(self, ref_level, weights, max_points=16000):
        self.level = ref_level
        points, flat, w = _grid_points(ref_level.box, weights)
        self.all_points = points.astype(np.float64)
        self.all_w = w.astype(np.float64)
        self.all_a = ref_level.volume.ravel()[flat].astype(np.float64)
        step = max(1, int(np.ceil(len(points) / max_points)))
        self.points = self.all_points[::step]
        self.w = self.all_w[::step]
        self.a = self.all_a[::step]
        self.sqrt_w = np.sqrt(self.w)

    def correlation(self, b, everywhere=False):
        """Weighted correlation of moving values ``b`` with the reference (fit or all points)."""
        w, a = (self.all_w, self.all_a) if everywhere else (self.w, self.a)
        total = w.sum()
        am = a - np.dot(w, a) / total
        bm = b - np.dot(w, b) / total
        den = np.sqrt(np.dot(w, am * am) * np.dot(w, bm * bm))
        return float(np.dot(w, am * bm) / den) if den > 0 else 0.0

    def score(self, mov_level, rotation, shift):
        """Weighted correlation over every position, for a pose (shift in this grid's voxels)."""
        z = (self.all_points - shift) @ rotation
        b = trilinear(mov_level.data[:, :1], mov_level.box, z.astype(np.float32))[:, 0]
        return self.correlation(b.astype(np.float64), everywhere=True)

    def sample(self, mov_level, rotation, shift):
        """Moving values and gradients at ``R^T (x - t)`` (``t`` in this grid's voxels)."""
        z = (self.points - shift) @ rotation
        vals = trilinear(mov_level.data, mov_level.box, z.astype(np.float32)).astype(np.float64)
        return z, vals[:, 0], vals[:, 1:]

    def refine(self, mov_level, rotation, shift, iterations):
        """Levenberg-Marquardt on rotation, shift, scale and offset; returns (R, t, score)."""
        rotation = np.array(rotation, dtype=float)
        shift = np.array(shift, dtype=float)
        z, b, g = self.sample(mov_level, rotation, shift)
        sw, a = self.sqrt_w, self.a
        design = np.column_stack([b, np.ones_like(b)]) * sw[:, None]
        scale, offset = np.linalg.lstsq(design, a * sw, rcond=None)[0]
        residual = sw * (scale * b + offset - a)
        cost = float(residual @ residual)
        lam = 1e-3
        jac = np.empty((8, len(b)))
        for _ in range(iterations):
            # Rows: d(residual)/d(rotation vector, shift, scale, offset).
            ss = scale * sw
            gx, gy, gz = g[:, 0], g[:, 1], g[:, 2]
            zx, zy, zz = z[:, 0], z[:, 1], z[:, 2]
            jac[0] = (gy * zz - gz * zy) * ss
            jac[1] = (gz * zx - gx * zz) * ss
            jac[2] = (gx * zy - gy * zx) * ss
            jac[3:6] = -(rotation @ g.T) * ss
            jac[6] = sw * b
            jac[7] = sw
            hess = jac @ jac.T
            grad = jac @ residual
            improved = False
            for _ in range(6):
                step = np.linalg.solve(hess + lam * np.diag(np.diag(hess) + 1e-9), -grad)
                new_rot = rotation @ Rotation.from_rotvec(step[0:3]).as_matrix()
                new_shift = shift + step[3:6]
                new_scale, new_offset = scale + step[6], offset + step[7]
                nz, nb, ng = self.sample(mov_level, new_rot, new_shift)
                new_res = sw * (new_scale * nb + new_offset - a)
                new_cost = float(new_res @ new_res)
                if new_cost < cost:
                    improved = True
                    small = (np.linalg.norm(step[0:3]) < 1e-4
                             and np.linalg.norm(step[3:6]) < 1e-3)
                    rotation, shift, scale, offset = new_rot, new_shift, new_scale, new_offset
                    z, b, g, residual = nz, nb, ng, new_res
                    converged = small or cost - new_cost < 1e-8 * cost
                    cost = new_cost
                    lam = max(lam / 3.0, 1e-7)
                    break
                lam *= 5.0
            if not improved or converged:
                break
        if len(self.points) < len(self.all_points):
            return rotation, shift, self.score(mov_level, rotation, shift)
        return rotation, shift, self.correlation(b)


def _translation_search(ref_level, mov_level, rotation, shift, max_shift):
    """Best extra shift (voxels of this grid) by FFT cross-correlation inside the sphere."""
    box = ref_level.box
    c = box // 2
    axis = np.arange(box, dtype=np.float32) - c
    zz, yy, xx = np.meshgrid(axis, axis, axis, indexing='ij')
    points = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], axis=1)
    moved = trilinear(mov_level.data[:, :1], box,
                      ((points - shift) @ rotation).astype(np.float32)).reshape(box, box, box)
    sphere = ref_level.sphere
    ref = ref_level.volume * sphere
    mov = moved * sphere
    cc = fft.irfftn(fft.rfftn(ref) * np.conj(fft.rfftn(mov)), s=ref.shape)
    limit = max(1, int(round(max_shift * box)))
    lag = (np.arange(box) + c) % box - c                 # signed lag of each index
    far = np.abs(lag) > limit
    cc[far] = -np.inf
    cc[:, far] = -np.inf
    cc[:, :, far] = -np.inf
    iz, iy, ix = np.unravel_index(int(np.argmax(cc)), cc.shape)
    return shift + np.array([lag[ix], lag[iy], lag[iz]], dtype=float)


def _same_pose(a, b, angle_deg=3.0, shift_px=1.0):
    """True if two (score, rotation, shift, mirrored) poses are within a few degrees/voxels."""
    if a[3] != b[3]:
        return False
    cos_angle = (np.trace(a[1].T @ b[1]) - 1.0) / 2.0
    return (cos_angle > np.cos(np.deg2rad(angle_deg))
            and np.linalg.norm(a[2] - b[2]) < shift_px)


def pair_problems(ref, weights=None):
    """Per-grid fitting problems of a reference map (reusable for every moving map)."""
    return [_PairProblem(level, level.sphere if weights is None else weights[k])
            for k, level in enumerate(ref.levels)]


def align_pair(ref, mov, candidates, options, weights=None, problems=None):
    """Refine candidate poses of ``mov`` onto ``ref`` and return the best transform.

    Parameters
    ----------
    ref, mov : MapPyramid
        Reference and moving maps.
    candidates : list of (numpy.ndarray, numpy.ndarray, bool)
        Starting (rotation, shift in full-grid voxels, mirrored) poses.
    options : AlignOptions
    weights : list of numpy.ndarray, optional
        Per grid, weights in the reference's frame; default soft spheres.
    problems : list, optional
        ``pair_problems(ref, weights)``, when already built.

    Returns
    -------
    transform : numpy.ndarray
        4 x 4 transform in full-grid voxels.
    score : float
        Weighted correlation on the finest grid.
    """
    n_levels = len(ref.levels)
    problems = problems or pair_problems(ref, weights)
    iterations = list(options.iterations) + [options.iterations[-1]] * n_levels
    poses = []
    coarse = ref.levels[0]
    for rotation, shift, mirrored in candidates:
        mov_level = mov.level(0, mirrored)
        start = _translation_search(coarse, mov_level, rotation, shift * coarse.scale,
                                    options.max_shift)
        r, t, s = problems[0].refine(mov_level, rotation, start, iterations[0])
        poses.append((s, r, t / coarse.scale, mirrored))
    poses.sort(key=lambda p: -p[0])
    finalists = []
    for pose in poses:
        if pose[0] < poses[0][0] - options.finalist_margin:
            break
        if not any(_same_pose(pose, other) for other in finalists):
            finalists.append(pose)
        if len(finalists) == options.n_finalists:
            break
    poses = finalists
    for k in range(1, n_levels):
        level = ref.levels[k]
        refined = []
        for _, r, t, mirrored in poses:
            r, t, s = problems[k].refine(mov.level(k, mirrored), r, t * level.scale, iterations[k])
            refined.append((s, r, t / level.scale, mirrored))
        refined.sort(key=lambda p: -p[0])
        poses = refined[:1]
    score, rotation, shift, mirrored = poses[0]
    return make_transform(rotation, shift, mirrored), float(score)


def _candidates(scores, indices, ref_i, mov_j, n_maps, rotations, quats, ref_pyr, mov_pyr,
                options, mirror, centres):
    """Distinct starting poses of map ``mov_j`` on reference ``ref_i`` from the scan results."""
    poses = []
    spacing = np.degrees((6.0 * np.pi / len(quats)) ** (1.0 / 3.0))
    columns = [(mov_j, False)] + ([(n_maps + mov_j, True)] if mirror else [])
    ranked = []
    for col, mirrored in columns:
        for s, idx in zip(scores[:, ref_i, col], indices[:, ref_i, col]):
            ranked.append((float(s), int(idx), mirrored))
    ranked.sort(key=lambda x: -x[0])
    for mirrored in ((False, True) if mirror else (False,)):
        chosen = distinct_rotations([idx for _, idx, m in ranked if m == mirrored], quats,
                                    options.n_candidates, 1.5 * spacing)
        for idx in chosen:
            rotation = rotations[idx].as_matrix()
            mov_centre = centres[1][(mov_j, mirrored)]
            shift = centres[0][ref_i] - rotation @ mov_centre
            poses.append((rotation, shift, mirrored))
    return poses


def align_maps(volumes, mode='reference', reference=0, mirror=False, weights=None,
               options=None, progress=None):
    """Align maps rigidly, to a reference or pair by pair.

    Parameters
    ----------
    volumes : iterable of numpy.ndarray
        Maps on the common grid (consumed once; only Fourier-cropped copies are kept).
    mode : {'reference', 'pairwise'}
        Align every map to ``reference``, or every pair of maps (then also every map to the
        reference, for the common frame).
    reference : int
        Index of the reference map.
    mirror : bool
        Also try the mirror image (handedness flip) of each moving map.
    weights : numpy.ndarray, optional
        Mask (full grid, reference frame) inside which poses are scored on the refinement
        grids; default a soft sphere. In pairwise mode it is moved into the frame of map ``i``
        with map ``i``'s transform to the reference.
    options : AlignOptions, optional
    progress : callable, optional
        Called with a one-line message per stage.

    Returns
    -------
    AlignmentResult
    """
    options = options or AlignOptions()
    if mode not in ('reference', 'pairwise'):
        raise ValueError(f"alignment mode must be 'reference' or 'pairwise', got {mode!r}")
    say = progress or (lambda message: None)
    timings = {}
    tic = time.perf_counter()
    pyramids = []
    for volume in volumes:
        boxes = level_boxes(volume.shape[0], options)
        pyramids.append(MapPyramid(volume, boxes, mirror))
    n = len(pyramids)
    if n < 2:
        raise ValueError(f'alignment needs at least 2 maps, got {n}')
    timings['load and pyramids'] = time.perf_counter() - tic
    say(f'alignment: {n} maps on grids {boxes} ({timings["load and pyramids"]:.1f} s)')

    tic = time.perf_counter()
    rotations = rotation_grid(options.n_rotations)
    quats = rotations.as_quat()
    centred = {}
    mov_centres = {}
    for j, pyr in enumerate(pyramids):
        for mirrored in ((False, True) if mirror else (False,)):
            centred[(j, mirrored)], mov_centres[(j, mirrored)] = pyr.centred_coarse(mirrored)
    ref_ids = list(range(n)) if mode == 'pairwise' else [reference]
    ref_stack = np.stack([centred[(i, False)] for i in ref_ids])
    mov_stack = np.stack([centred[(j, False)] for j in range(n)]
                         + ([centred[(j, True)] for j in range(n)] if mirror else []))
    sphere = pyramids[0].levels[0].sphere
    scores, indices = scan_rotations(ref_stack, mov_stack, sphere, rotations)
    timings['global scan'] = time.perf_counter() - tic
    say(f'alignment: global scan of {len(quats)} rotations '
        f'({timings["global scan"]:.1f} s)')

    centres = ({i: pyramids[i].centre for i in range(n)}, mov_centres)
    tic = time.perf_counter()
    ref_row = ref_ids.index(reference)
    transforms = np.tile(np.eye(4), (n, 1, 1))
    ref_scores = np.ones(n)
    problems = pair_problems(pyramids[reference],
                             mask_in_frame(weights, pyramids[reference], np.eye(4)))
    for j in range(n):
        if j == reference:
            continue
        poses = _candidates(scores, indices, ref_row, j, n, rotations, quats, pyramids[reference],
                            pyramids[j], options, mirror, centres)
        transforms[j], ref_scores[j] = align_pair(pyramids[reference], pyramids[j], poses,
                                                  options, problems=problems)
    timings['refine to reference'] = time.perf_counter() - tic
    say(f'alignment: {n - 1} maps refined onto the reference '
        f'({timings["refine to reference"]:.1f} s)')
    result = AlignmentResult(transforms=transforms, scores=ref_scores, reference=reference,
                             timings=timings, pyramids=pyramids)
    if mode == 'reference':
        return result

    tic = time.perf_counter()
    pair_t = np.tile(np.eye(4), (n, n, 1, 1))
    pair_s = np.eye(n)
    # The reference's row is the alignment to the reference just done.
    pair_t[reference] = transforms
    pair_s[reference] = pair_s[:, reference] = ref_scores
    for j in range(n):
        pair_t[j, reference] = np.linalg.inv(transforms[j])
    for i in range(n):
        if i == reference:
            continue
        problems = pair_problems(pyramids[i], mask_in_frame(weights, pyramids[i], transforms[i]))
        for j in range(i + 1, n):
            if j == reference:
                continue
            poses = _candidates(scores, indices, i, j, n, rotations, quats, pyramids[i],
                                pyramids[j], options, mirror, centres)
            pair_t[i, j], pair_s[i, j] = align_pair(pyramids[i], pyramids[j], poses, options,
                                                    problems=problems)
            pair_t[j, i] = np.linalg.inv(pair_t[i, j])
            pair_s[j, i] = pair_s[i, j]
        say(f'alignment: pairs of map {i + 1}/{n} done')
    timings['refine pairs'] = time.perf_counter() - tic
    say(f'alignment: {(n - 1) * (n - 2) // 2} more pairs refined ({timings["refine pairs"]:.1f} s)')
    result.pair_transforms = pair_t
    result.pair_scores = pair_s
    return result


def mask_in_frame(weights, pyramid, transform):
    """A mask given in the reference frame, seen from a map's own frame, on each search grid.

    Parameters
    ----------
    weights : numpy.ndarray or None
        Mask on the full grid, reference frame.
    pyramid : MapPyramid
        The map whose frame is wanted.
    transform : numpy.ndarray
        The map's transform onto the reference.

    Returns
    -------
    list of numpy.ndarray or None
        Weights per grid (times the grid's soft sphere), or None without a mask.
    """
    if weights is None:
        return None
    full = weights.shape[0]
    data = np.ascontiguousarray(weights.reshape(-1, 1), dtype=np.float32)
    out = []
    for level in pyramid.levels:
        box = level.box
        axis = (np.arange(box, dtype=np.float64) - box // 2) / level.scale
        zz, yy, xx = np.meshgrid(axis, axis, axis, indexing='ij')
        points = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], axis=1)
        # A voxel at p in the map's frame lies at A p + t in the reference frame.
        moved = points @ transform[:3, :3].T + transform[:3, 3]
        w = trilinear(data, full, moved.astype(np.float32))[:, 0].reshape(box, box, box)
        out.append(np.clip(w, 0.0, 1.0) * level.sphere)
    return out
