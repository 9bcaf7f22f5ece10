"""Read, write and validate MRC maps and image stacks (through ``mrcfile``).

Arrays are in numpy order: maps (z, y, x), stacks (n, y, x). Every reader checks
the header first (:func:`validate_mrc`), so a corrupt file raises
:class:`MrcError` with the file and the faulty field instead of a traceback
from numpy or mrcfile.
"""

import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import mrcfile
import numpy as np
from mrcfile.dtypes import HEADER_DTYPE
from mrcfile.utils import dtype_from_mode

from ._atomic import atomic_path
from .errors import MrcError

__all__ = ['read_map', 'write_map', 'open_stack', 'read_images', 'write_stack', 'validate_mrc']

_HEADER_BYTES = HEADER_DTYPE.itemsize


def _supported(mode):
    try:
        dtype_from_mode(mode)
    except ValueError:
        return False
    return True


def _header(path):
    path = Path(path)
    try:
        with open(path, 'rb') as fh:
            raw = fh.read(_HEADER_BYTES)
            size = os.fstat(fh.fileno()).st_size
    except FileNotFoundError:
        raise MrcError(path, 'file not found') from None
    except IsADirectoryError:
        raise MrcError(path, 'is a folder, not an MRC file') from None
    if len(raw) < _HEADER_BYTES:
        raise MrcError(path, f'file is {len(raw)} bytes, shorter than the '
                             f'{_HEADER_BYTES}-byte MRC header')
    header = np.frombuffer(raw, dtype=HEADER_DTYPE.newbyteorder('<'))[0]
    if bytes(header['map'])[:3] != b'MAP':
        raise MrcError(path, f"map ID is {bytes(header['map'])!r}, not b'MAP ' "
                             f"(not an MRC file, or the header is corrupt)")
    stamp = header['machst']
    order = '>' if (stamp[0], stamp[1]) == (0x11, 0x11) else '<'
    header = np.frombuffer(raw, dtype=HEADER_DTYPE.newbyteorder(order))[0]
    if not _supported(header['mode']):
        # Some writers put the wrong machine stamp: mrcfile tries the other order too.
        other = np.frombuffer(raw, dtype=HEADER_DTYPE.newbyteorder('<' if order == '>' else '>'))[0]
        if not _supported(other['mode']):
            raise MrcError(path, f"unsupported mode {int(header['mode'])} "
                                 f"(supported: 0, 1, 2, 4, 6, 12)")
        header, order = other, ('<' if order == '>' else '>')
    return path, header, order, size


def validate_mrc(path):
    """Check an MRC header against the file and return a summary.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    dict
        ``shape`` (nz, ny, nx), ``voxel_size`` (Angstrom along x; 0.0 when the
        header does not say), ``mode``, and ``voxel_size_xyz``, ``dtype``,
        ``ispg``, ``data_offset``, ``byte_order``.

    Raises
    ------
    MrcError
        Naming the file and the field: missing file, bad map ID, unsupported
        mode, nx/ny/nz or mx/my/mz <= 0, axis order other than x, y, z,
        negative extended header size, data shorter than the header says,
        non-finite or negative voxel size.
    """
    path, h, order, size = _header(path)
    dims = {k: int(h[k]) for k in ('nx', 'ny', 'nz', 'mx', 'my', 'mz')}
    for key, value in dims.items():
        if value <= 0:
            raise MrcError(path, f'header field {key} is {value}, must be > 0')
    axes = (int(h['mapc']), int(h['mapr']), int(h['maps']))
    if axes not in ((1, 2, 3), (0, 0, 0)):
        raise MrcError(path, f'axis order mapc/mapr/maps is {axes}; only 1, 2, 3 (x, y, z) '
                             f'is supported')
    nsymbt = int(h['nsymbt'])
    if nsymbt < 0:
        raise MrcError(path, f'header field nsymbt (extended header size) is {nsymbt}')
    dtype = dtype_from_mode(h['mode']).newbyteorder(order)
    offset = _HEADER_BYTES + nsymbt
    expected = dims['nx'] * dims['ny'] * dims['nz'] * dtype.itemsize
    if size - offset < expected:
        found = max(size - offset, 0)
        raise MrcError(path, f"file is shorter than the header says: {dims['nz']} x "
                             f"{dims['ny']} x {dims['nx']} mode {int(h['mode'])} needs "
                             f"{expected} data bytes after byte {offset}, found {found}")
    cella = h['cella']
    voxel = tuple(float(cella[a]) / dims[m] for a, m in (('x', 'mx'), ('y', 'my'), ('z', 'mz')))
    for axis, value in zip('xyz', voxel):
        if not np.isfinite(value) or value < 0:
            raise MrcError(path, f'voxel size along {axis} (cella.{axis} / m{axis}) is {value}')
    return {
        'shape': (dims['nz'], dims['ny'], dims['nx']),
        'voxel_size': voxel[0],
        'mode': int(h['mode']),
        'voxel_size_xyz': voxel,
        'dtype': np.dtype(dtype).newbyteorder('='),
        'ispg': int(h['ispg']),
        'data_offset': offset,
        'byte_order': order,
    }


@contextmanager
def _mmap(path):
    """Validate, then open read-only with mrcfile; yield (mrc, summary)."""
    summary = validate_mrc(path)
    try:
        with warnings.catch_warnings():
            # The header has been checked above; mrcfile's permissive warnings repeat it.
            warnings.simplefilter('ignore', RuntimeWarning)
            mrc = mrcfile.mmap(path, mode='r', permissive=True)
    except (ValueError, OSError) as exc:
        raise MrcError(path, f'cannot open: {exc}') from None
    try:
        if mrc.data is None:
            raise MrcError(path, 'no data block')
        if summary['dtype'].kind == 'c':
            raise MrcError(path, f"mode {summary['mode']} holds complex numbers; real images or "
                                 f"maps are expected")
        yield mrc, summary
    finally:
        mrc.close()


def read_map(path):
    """Read an MRC map into memory.

    Returns
    -------
    data : numpy.ndarray of float32, shape (z, y, x)
        A single 2D image reads as (1, y, x).
    voxel_size : float
        Angstrom per voxel along x (0.0 when the header does not say).

    Raises
    ------
    MrcError
        If the file is missing or its header is corrupt.
    """
    with _mmap(path) as (mrc, summary):
        data = np.array(mrc.data, dtype=np.float32).reshape(summary['shape'])
    return data, summary['voxel_size']


@contextmanager
def open_stack(path):
    """Open an image stack memory-mapped, read-only.

    Yields
    ------
    numpy.ndarray-like, shape (n, y, x)
        A view on the file (a single 2D image gives n = 1). Valid only inside the
        ``with`` block: copy what you need before leaving it.

    Raises
    ------
    MrcError
        If the file is missing or its header is corrupt.
    """
    with _mmap(path) as (mrc, summary):
        yield mrc.data.reshape(summary['shape'])


def read_images(path, indices_1based):
    """Read selected images of a stack.

    Parameters
    ----------
    path : str or os.PathLike
    indices_1based : array-like of int
        Image numbers as RELION writes them (1 = first); repeats allowed.

    Returns
    -------
    numpy.ndarray of float32, shape (len(indices), y, x)
        In the requested order. The file is read in increasing index order,
        each image once.

    Raises
    ------
    MrcError
        If the header is corrupt or an index is outside 1..n.
    """
    wanted = np.asarray(indices_1based)
    if wanted.size and (wanted.dtype.kind not in 'iu' and np.any(np.mod(wanted, 1) != 0)):
        raise MrcError(path, 'image indices must be integers')
    wanted = wanted.astype(np.int64).ravel()
    with open_stack(path) as stack:
        n = stack.shape[0]
        if wanted.size and (wanted.min() < 1 or wanted.max() > n):
            bad = wanted[(wanted < 1) | (wanted > n)][0]
            raise MrcError(path, f'image {bad} requested but the stack holds images 1..{n}')
        unique, inverse = np.unique(wanted - 1, return_inverse=True)
        images = np.asarray(stack[unique], dtype=np.float32)
    return images[inverse] if len(unique) != len(wanted) or np.any(unique != wanted - 1) else images


def _checked(path, data, voxel_size, what):
    data = np.asarray(data)
    if data.ndim not in (2, 3) or data.size == 0:
        raise ValueError(f'{path}: {what} must be a non-empty 2D or 3D array, '
                         f'got shape {data.shape}')
    if data.dtype.kind not in 'biuf':
        raise ValueError(f'{path}: {what} must be real numbers, got dtype {data.dtype}')
    voxel_size = float(voxel_size)
    if not np.isfinite(voxel_size) or voxel_size <= 0:
        raise ValueError(f'{path}: voxel size must be a positive number, got {voxel_size}')
    return np.ascontiguousarray(data, dtype=np.float32), voxel_size


def write_map(path, data, voxel_size):
    """Write a map (mode 2, float32, origin 0) atomically.

    Parameters
    ----------
    path : str or os.PathLike
    data : array-like, shape (z, y, x) (a 2D array is written as one image)
    voxel_size : float
        Angstrom per voxel.
    """
    data, voxel_size = _checked(path, data, voxel_size, 'map')
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp) as mrc:
            mrc.set_data(data)
            if data.ndim == 3:
                mrc.set_volume()
            mrc.voxel_size = voxel_size
            mrc.header.origin = (0.0, 0.0, 0.0)


def write_stack(path, images, pixel_size):
    """Write an image stack (``.mrcs``: mode 2, ispg 0, nz = n) atomically.

    Parameters
    ----------
    path : str or os.PathLike
    images : array-like, shape (n, y, x) (a 2D array is one image)
    pixel_size : float
        Angstrom per pixel.
    """
    images, pixel_size = _checked(path, images, pixel_size, 'images')
    if images.ndim == 2:
        images = images[np.newaxis]
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp) as mrc:
            mrc.set_data(images)
            mrc.set_image_stack()
            mrc.voxel_size = pixel_size
            mrc.header.origin = (0.0, 0.0, 0.0)
