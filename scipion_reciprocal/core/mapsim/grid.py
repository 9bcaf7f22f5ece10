"""Checking, resampling, filtering and normalising maps on a cubic grid.

Maps are numpy arrays indexed ``[z, y, x]`` with the box centre at index ``box // 2`` on every
axis; voxel sizes are in Å. Resampling is done in Fourier space (crop or zero-pad of the
spectrum), so a map keeps its content up to the lower of the two Nyquist frequencies and its
centre stays at ``box // 2``.
"""
import numpy as np
from scipy import fft

from .errors import MapClusteringError

#: Relative voxel-size mismatch below which two grids are taken as equal.
VOXEL_TOLERANCE = 1e-3

_WORKERS = 2


def image_2d(shape):
    """'is a 2D image (x x y pixels), not a 3D map' for the shape (``[z, y, x]``) of a 2D
    image (an MRC file with one section reads as ``(1, y, x)``), else ''."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2 or (len(shape) == 3 and shape[0] == 1):
        ny, nx = shape[-2:]
        return f'is a 2D image ({nx} x {ny} pixels), not a 3D map'
    return ''


def check_map(data, name):
    """Check that a map is usable and return it as float32.

    Parameters
    ----------
    data : array-like
        The map, indexed ``[z, y, x]``.
    name : str
        Name used in error messages (the map's name or file).

    Returns
    -------
    numpy.ndarray
        The map as a float32 array.

    Raises
    ------
    MapClusteringError
        If the map is not 3D, not cubic, holds NaN or Inf, is all zeros or is constant.
    """
    data = np.asarray(data)
    if image_2d(data.shape):
        raise MapClusteringError(f'map {name}: {image_2d(data.shape)}')
    if data.ndim != 3:
        raise MapClusteringError(f'map {name}: expected a 3D map, got shape {data.shape}')
    if len(set(data.shape)) != 1:
        nz, ny, nx = data.shape
        raise MapClusteringError(f'map {name}: not cubic ({nx} x {ny} x {nz} voxels); '
                                 f'pad or crop it to a cube first')
    data = np.asarray(data, dtype=np.float32)
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - np.count_nonzero(finite))
        raise MapClusteringError(f'map {name}: contains {bad} NaN or infinite values')
    if not np.any(data):
        raise MapClusteringError(f'map {name}: all values are zero')
    if float(data.max()) == float(data.min()):
        raise MapClusteringError(f'map {name}: constant map (every value is {float(data.flat[0])})')
    return data


def check_mask(mask, box, name, voxel_size=None, grid_voxel_size=None):
    """Check a mask against the common grid and return it as float32 weights in [0, 1].

    Parameters
    ----------
    mask : array-like
        The mask, indexed ``[z, y, x]``; binary or soft.
    box : int
        Box size of the common grid.
    name : str
        Name used in error messages (the mask file).
    voxel_size, grid_voxel_size : float, optional
        The mask's voxel size and the grid's, compared when both are known and positive.

    Raises
    ------
    MapClusteringError
        If the mask has another size or voxel size than the grid, holds NaN/Inf, values outside
        [0, 1], or is empty.
    """
    mask = np.asarray(mask)
    if mask.shape != (box, box, box):
        shape = ' x '.join(str(s) for s in mask.shape[::-1])
        raise MapClusteringError(f'mask {name}: size {shape} differs from the common grid '
                                 f'{box} x {box} x {box}; the mask must be made on the grid of '
                                 f'the reference map')
    if voxel_size and grid_voxel_size and not same_voxel(voxel_size, grid_voxel_size):
        raise MapClusteringError(f'mask {name}: voxel size {voxel_size:.4g} A differs from the '
                                 f'common grid {grid_voxel_size:.4g} A')
    mask = np.asarray(mask, dtype=np.float32)
    if not np.isfinite(mask).all():
        raise MapClusteringError(f'mask {name}: contains NaN or infinite values')
    low, high = float(mask.min()), float(mask.max())
    if low < -1e-3 or high > 1.0 + 1e-3:
        raise MapClusteringError(f'mask {name}: values must lie in [0, 1], found '
                                 f'{low:.4g} to {high:.4g}')
    mask = np.clip(mask, 0.0, 1.0)
    if float(mask.sum()) < 1.0:
        raise MapClusteringError(f'mask {name}: empty (no voxel inside the mask)')
    return mask


def same_voxel(a, b, tolerance=VOXEL_TOLERANCE):
    """True if two voxel sizes agree within a relative ``tolerance``."""
    return abs(a - b) <= tolerance * max(abs(a), abs(b))


def edge_mean(volume):
    """Mean of the one-voxel outer shell of a cubic map (its background level)."""
    v = volume
    total = (v[0].sum() + v[-1].sum() + v[1:-1, 0].sum() + v[1:-1, -1].sum()
             + v[1:-1, 1:-1, 0].sum() + v[1:-1, 1:-1, -1].sum())
    n = v.shape[0]
    return float(total) / (n ** 3 - max(n - 2, 0) ** 3)


def pad_or_crop(volume, box, fill=0.0):
    """Centre a cubic map in a box of another size, keeping the centre at ``box // 2``.

    Parameters
    ----------
    volume : numpy.ndarray
        Cubic map.
    box : int
        New box size.
    fill : float
        Value of the voxels added when padding.
    """
    n = volume.shape[0]
    if n == box:
        return volume
    out = np.full((box, box, box), fill, dtype=volume.dtype)
    # Source index i goes to i + offset, so that n // 2 lands on box // 2.
    offset = box // 2 - n // 2
    lo_src, hi_src = max(0, -offset), min(n, box - offset)
    sl_src = slice(lo_src, hi_src)
    sl_dst = slice(lo_src + offset, hi_src + offset)
    out[sl_dst, sl_dst, sl_dst] = volume[sl_src, sl_src, sl_src]
    return out


def _kept_frequencies(n_in, n_out):
    """Indices of the shared frequencies on an n_in and an n_out FFT axis, and on the rfft axis."""
    smallest = min(n_in, n_out)
    # Frequencies strictly below the smaller grid's Nyquist; the Nyquist plane is dropped.
    k_max = (smallest - 1) // 2
    k = np.arange(-k_max, k_max + 1)
    half = np.arange(0, k_max + 1)
    return k % n_in, k % n_out, half


def fourier_resize(volume, box):
    """Resample a cubic map to ``box`` voxels per side by Fourier crop or zero-pad.

    The physical extent is kept: the voxel size becomes ``voxel * n / box``. The map's centre
    (index ``n // 2``) goes to ``box // 2`` and voxel values keep their scale.

    Parameters
    ----------
    volume : numpy.ndarray
        Cubic map of side ``n``.
    box : int
        New side.

    Returns
    -------
    numpy.ndarray
        float32 map of side ``box``.
    """
    n = volume.shape[0]
    if n == box:
        return np.asarray(volume, dtype=np.float32)
    # Put the centre at index 0, so that resampling (which keeps index 0 fixed) keeps it.
    centred = np.roll(volume, shift=(-(n // 2),) * 3, axis=(0, 1, 2))
    spectrum = fft.rfftn(centred, workers=_WORKERS)
    idx_in, idx_out, half = _kept_frequencies(n, box)
    out = np.zeros((box, box, box // 2 + 1), dtype=spectrum.dtype)
    out[np.ix_(idx_out, idx_out, half)] = spectrum[np.ix_(idx_in, idx_in, half)]
    resized = fft.irfftn(out, s=(box, box, box), workers=_WORKERS) * (box / n) ** 3
    resized = np.roll(resized, shift=(box // 2,) * 3, axis=(0, 1, 2))
    return resized.astype(np.float32)


def commensurate_box(n, voxel_size, target_voxel, tolerance=VOXEL_TOLERANCE):
    """Smallest padded size ``n0 >= n`` whose extent is close to a whole number of target voxels.

    Returns
    -------
    n0 : int
        Padded box (input voxels).
    m0 : int
        Box after Fourier resampling (target voxels).
    voxel : float
        The voxel size actually reached, ``n0 * voxel_size / m0``.
    """
    best = None
    for n0 in range(n, 2 * n + 1):
        extent = n0 * voxel_size / target_voxel
        m0 = max(int(round(extent)), 1)
        error = abs(extent - m0) / extent
        if best is None or error < best[0]:
            best = (error, n0, m0)
        if error <= tolerance:
            break
    _, n0, m0 = best
    return n0, m0, n0 * voxel_size / m0


def resample_map(volume, voxel_size, box, target_voxel):
    """Bring a cubic map onto a grid of ``box`` voxels of ``target_voxel`` Å.

    The map is padded (with its background level) until its extent is a whole number of target
    voxels, Fourier-resampled to the target voxel size, then centre-cropped or padded to
    ``box``.

    Parameters
    ----------
    volume : numpy.ndarray
        Cubic map.
    voxel_size : float
        Its voxel size (Å).
    box : int
        Target box.
    target_voxel : float
        Target voxel size (Å).

    Returns
    -------
    resampled : numpy.ndarray
        float32 map of side ``box``.
    voxel : float
        The voxel size reached (equal to ``target_voxel`` within ``VOXEL_TOLERANCE`` whenever
        a padding up to twice the box allows it).
    """
    n = volume.shape[0]
    if same_voxel(voxel_size, target_voxel, 1e-6):
        return pad_or_crop(np.asarray(volume, dtype=np.float32), box, edge_mean(volume)), voxel_size
    background = edge_mean(volume)
    n0, m0, reached = commensurate_box(n, voxel_size, target_voxel)
    padded = pad_or_crop(np.asarray(volume, dtype=np.float32), n0, background)
    resized = fourier_resize(padded, m0)
    return pad_or_crop(resized, box, background), reached


def radial_frequency(box, voxel_size, real=True):
    """Spatial frequency (1/Å) of each Fourier voxel of a ``box``³ map (rfft layout if real)."""
    k = fft.fftfreq(box)
    kx = fft.rfftfreq(box) if real else k
    r2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + kx[None, None, :] ** 2
    return np.sqrt(r2) / voxel_size


def lowpass_filter(volume, voxel_size, resolution, edge_width=None):
    """Low-pass a map to ``resolution`` Å with a raised-cosine edge.

    Parameters
    ----------
    volume : numpy.ndarray
        Cubic map.
    voxel_size : float
        Voxel size (Å).
    resolution : float
        Resolution (Å) at which the filter is 0.5.
    edge_width : float, optional
        Width of the cosine edge in 1/Å; default three Fourier voxels, ``3 / (box * voxel)``.

    Returns
    -------
    numpy.ndarray
        The filtered float32 map.
    """
    if not resolution or resolution <= 0:
        raise MapClusteringError(f'low-pass resolution must be a positive number of A, '
                                 f'got {resolution}')
    box = volume.shape[0]
    width = edge_width if edge_width is not None else 3.0 / (box * voxel_size)
    cutoff = 1.0 / resolution
    freq = radial_frequency(box, voxel_size)
    arg = np.clip((freq - (cutoff - width / 2.0)) / width, 0.0, 1.0)
    kernel = 0.5 * (1.0 + np.cos(np.pi * arg))
    spectrum = fft.rfftn(volume, workers=_WORKERS)
    spectrum *= kernel
    return fft.irfftn(spectrum, s=volume.shape, workers=_WORKERS).astype(np.float32)


def soft_sphere(box, radius=None, edge=None):
    """A soft spherical mask centred at ``box // 2``.

    Parameters
    ----------
    box : int
        Box size.
    radius : float, optional
        Radius (voxels) where the mask is 0.5; default ``0.45 * box``.
    edge : float, optional
        Width (voxels) of the cosine edge; default ``max(2, 0.05 * box)``.
    """
    radius = 0.45 * box if radius is None else radius
    edge = max(2.0, 0.05 * box) if edge is None else edge
    axis = np.arange(box) - box // 2
    r = np.sqrt(axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2)
    arg = np.clip((r - (radius - edge / 2.0)) / edge, 0.0, 1.0)
    return (0.5 * (1.0 + np.cos(np.pi * arg))).astype(np.float32)


def weighted_stats(volume, weights=None):
    """Weighted mean and standard deviation of a map (``weights`` None: all voxels)."""
    if weights is None:
        return float(volume.mean(dtype=np.float64)), float(volume.std(dtype=np.float64))
    total = float(weights.sum(dtype=np.float64))
    mean = float(np.vdot(weights, volume)) / total
    var = float(np.vdot(weights, (volume - mean) ** 2)) / total
    return mean, float(np.sqrt(max(var, 0.0)))


def normalise(volume, weights=None, name='map'):
    """Scale a map to zero mean and unit standard deviation inside a (soft) mask.

    Parameters
    ----------
    volume : numpy.ndarray
        The map.
    weights : numpy.ndarray, optional
        Mask weights in [0, 1]; None uses every voxel.
    name : str
        Name used in the error message.

    Returns
    -------
    numpy.ndarray
        ``(volume - mean) / std`` over the whole box (float32), with mean and std taken inside
        the mask.

    Raises
    ------
    MapClusteringError
        If the map is constant inside the mask.
    """
    mean, std = weighted_stats(volume, weights)
    if not std > 0:
        raise MapClusteringError(f'map {name}: constant inside the mask, cannot be normalised')
    return ((volume - mean) / std).astype(np.float32)


def central_slices(volume):
    """The three central sections of a map: XY (z = box//2), XZ (y = box//2), YZ (x = box//2).

    Returns
    -------
    numpy.ndarray
        ``(3, box, box)`` float32, images indexed ``[row, column]`` = ``[y, x]``, ``[z, x]``,
        ``[z, y]``.
    """
    c = volume.shape[0] // 2
    return np.stack([volume[c, :, :], volume[:, c, :], volume[:, :, c]]).astype(np.float32)
