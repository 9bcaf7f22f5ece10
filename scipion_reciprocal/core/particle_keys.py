"""Particle identity across classification jobs.

A particle is recognised in two jobs by one of:

- its image location ``index@stack`` (or its original image name, same form), with the
  path normalised (``./`` and ``//`` removed, ``000012`` read as 12), so that
  ``'000012@a.mrcs'`` and ``'12@./a.mrcs'`` are the same particle;
- an integer identifier (Scipion object ids, which a SetOfClasses keeps from its input), or
  cryoSPARC's ``uid``, which every job keeps from the extraction or import it descends from;
- its micrograph and coordinates, matched within a tolerance in Angstrom (particles
  re-extracted or re-centred between jobs). Across software the micrograph is compared by
  its file's stem (:func:`micrograph_stem`: cryoSPARC's uid prefix and motion-correction
  suffixes removed), because each program names the micrographs it writes its own way.

Image locations of different programs are compared as absolute paths with links resolved
(:func:`rebase_labels`): RELION's ``index@stack`` counts from 1, cryoSPARC's ``blob/idx``
from 0, and its ``blob/path`` is relative to the cryoSPARC project folder.

Keys are built per job as small integer codes plus a table of unique names, so that
strings are handled once per stack or micrograph, never once per particle.
"""

import os
import posixpath
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import as_strided
from scipy.spatial import cKDTree

from ..formats.relion import parse_image_names

__all__ = ['ParticleKeys', 'normalise_path', 'location_keys', 'location_keys_from_parts',
           'id_keys', 'uid_keys', 'coordinate_keys', 'match_particles', 'rebase_labels',
           'micrograph_stem']

_INDEX_BITS = 32


@dataclass
class ParticleKeys:
    """Identity of every row of one classification.

    Attributes
    ----------
    kind : str
        ``'location'`` (image location or original name), ``'id'``, ``'uid'`` (cryoSPARC)
        or ``'coordinates'``.
    codes : numpy.ndarray of int64
        Per row: index into ``labels`` (stack or micrograph), or the id itself.
    index : numpy.ndarray of int64
        Per row: image number in the stack (location keys), zeros otherwise.
    labels : numpy.ndarray of object
        Unique normalised stack or micrograph names (empty for ids).
    xy : numpy.ndarray of float64, optional
        (n, 2) coordinates in Angstrom (coordinates keys).
    """

    kind: str
    codes: np.ndarray
    index: np.ndarray
    labels: np.ndarray
    xy: np.ndarray = None

    def __len__(self):
        return len(self.codes)

    def take(self, rows):
        """The keys of the selected rows (same labels)."""
        return ParticleKeys(self.kind, self.codes[rows], self.index[rows], self.labels,
                            None if self.xy is None else self.xy[rows])


def normalise_path(path):
    """A file path spelt one way: no ``./`` segments, no doubled ``/``, no trailing blanks."""
    path = str(path).strip().replace('\\', '/')
    if not path:
        return path
    norm = posixpath.normpath(path)
    return norm[1:] if norm.startswith('//') else norm


def _factorize_names(names):
    """Codes into unique normalised names, for an array of names (bytes or str)."""
    codes, uniques = _factorize_rows(names)
    decoded = [u.decode('utf-8', 'replace') if isinstance(u, bytes) else str(u) for u in uniques]
    normalised = pd.Index([normalise_path(u) for u in decoded])
    remap, labels = pd.factorize(normalised)
    return remap[codes].astype(np.int64), np.asarray(labels, dtype=object)


def _factorize_rows(values):
    """Codes (in order of first appearance) and unique values of an array of names.

    Fixed-width bytes arrays are compared as integer words: consecutive equal rows (names
    grouped by micrograph, as in RELION files) are collapsed first, and the remaining runs
    are hashed, with every row checked against its representative so the result is exact.
    """
    values = np.asarray(values)
    if values.dtype.kind != 'S' or len(values) == 0:
        codes, uniques = pd.factorize(pd.Series(values, dtype=object))
        return codes.astype(np.int64), list(uniques)
    n, width = len(values), values.dtype.itemsize
    words = -(-width // 8)
    raw = values.view(np.uint8).reshape(n, width)
    if width == words * 8:
        grid = raw.view(np.uint64)
    else:
        padded = np.zeros((n, words * 8), dtype=np.uint8)
        padded[:, :width] = raw
        grid = padded.view(np.uint64)
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = (grid[1:] != grid[:-1]).any(axis=1)
    run_start = np.flatnonzero(new_run)
    run_of_row = np.cumsum(new_run) - 1
    heads = grid[run_start]
    hashed = heads[:, 0].copy()
    for k in range(1, words):
        hashed *= np.uint64(0x9E3779B97F4A7C15)
        hashed ^= heads[:, k]
    run_codes, _ = pd.factorize(hashed)
    # codes number runs in order of first appearance: first runs are where the max grows
    first_runs = np.flatnonzero(np.diff(np.maximum.accumulate(run_codes), prepend=-1) > 0)
    if not np.array_equal(heads[first_runs[run_codes]], heads):
        codes, uniques = np.unique(values, return_inverse=True)
        return codes.astype(np.int64), list(uniques)
    return run_codes.astype(np.int64)[run_of_row], list(values[run_start[first_runs]])


def location_keys(names):
    """Keys from image names ``index@stack`` (a name without ``@`` is image 1 of its file).

    Parameters
    ----------
    names : array-like
        Fixed-width bytes (as :meth:`StarTable.read_raw` gives text) or strings.

    Returns
    -------
    ParticleKeys

    Raises
    ------
    ValueError
        If the part before ``@`` is not a positive integer.
    """
    names = np.asarray(names)
    if names.dtype.kind != 'S':
        index, paths = parse_image_names(names)
        return location_keys_from_parts(index, paths)
    n = len(names)
    width = names.dtype.itemsize
    grid = names.view(np.uint8).reshape(n, width)
    fixed = _fixed_at(grid)
    if fixed is not None:       # every name is digits, '@' in one column, then the stack
        index = np.zeros(n, dtype=np.int64)
        for k in range(fixed):
            index *= 10
            index += grid[:, k]
            index -= 48
        at = np.full(n, fixed, dtype=np.int64)
        wrong = np.flatnonzero(index < 1)
    else:
        is_at = grid == ord('@')
        has_at = is_at.any(axis=1)
        at = np.where(has_at, np.argmax(is_at, axis=1), -1)
        index = np.ones(n, dtype=np.int64)
        wrong = []
        if has_at.any():
            span = max(int(at.max()), 1)
            digits = grid[:, :span] * (np.arange(span)[None, :] < at[:, None])
            try:
                parsed = np.ascontiguousarray(digits[has_at]).view(f'S{span}').ravel() \
                    .astype(np.int64)
            except ValueError:
                parsed = None
            if parsed is None:      # text before '@': report a row that has some
                not_digit = ((digits - np.uint8(48)) >= 10) & (digits != 0)
                wrong = np.flatnonzero(has_at & not_digit.any(axis=1))
            else:
                index[has_at] = parsed
                wrong = np.flatnonzero(has_at & (index < 1))
    if len(wrong):
        raise ValueError(f'image name {names[wrong[0]].decode(errors="replace")!r} does not '
                         f'start with a positive image number before "@"')
    stacks = _shift_left(grid, at + 1)
    codes, labels = _factorize_names(stacks)
    return ParticleKeys('location', codes, index, labels)


def _fixed_at(grid):
    """Column of '@' when every row has digits then '@' there, else None."""
    if not len(grid):
        return None
    first = np.flatnonzero(grid[0] == ord('@'))
    if not len(first) or first[0] == 0:
        return None
    at = int(first[0])
    if not (grid[:, at] == ord('@')).all():
        return None
    if not ((grid[:, :at] - np.uint8(48)) < 10).all():
        return None
    return at


def _shift_left(grid, offsets):
    """Rows of a (n, width) byte array with their first ``offsets`` bytes dropped."""
    n, width = grid.shape
    if not n:
        return np.zeros(0, dtype='S1')
    if offsets.min() == offsets.max():
        out = np.ascontiguousarray(grid[:, int(offsets[0]):])
    else:
        padded = np.zeros((n, 2 * width), dtype=np.uint8)
        padded[:, :width] = grid
        flat = padded.ravel()
        view = as_strided(flat, shape=(len(flat) - width + 1, width), strides=(1, 1),
                          writeable=False)
        out = view[np.arange(n) * 2 * width + offsets]
    return out.view(f'S{max(out.shape[1], 1)}').ravel() if out.shape[1] else \
        np.zeros(n, dtype='S1')


def location_keys_from_parts(index, paths):
    """Keys from image numbers and file names given apart (Scipion ``_index``, ``_filename``).

    An index of 0 (Scipion's "whole file") is read as image 1.
    """
    index = np.asarray(index, dtype=np.int64).copy()
    index[index == 0] = 1
    paths = np.asarray(paths)
    if paths.dtype.kind != 'S':       # fixed-width bytes (cryoSPARC) take the fast path
        paths = paths.astype(object)
    codes, labels = _factorize_names(paths)
    return ParticleKeys('location', codes, index, labels)


def id_keys(ids):
    """Keys from integer particle identifiers."""
    ids = np.asarray(ids)
    if ids.dtype.kind not in 'iu':
        raise ValueError('particle ids must be integers')
    ids = ids.astype(np.int64)
    return ParticleKeys('id', ids, np.zeros(len(ids), dtype=np.int64),
                        np.empty(0, dtype=object))


def uid_keys(uids):
    """Keys from cryoSPARC ``uid`` values (uint64, compared bit for bit)."""
    uids = np.ascontiguousarray(uids)
    if uids.dtype.kind not in 'iu' or uids.dtype.itemsize != 8:
        raise ValueError('cryoSPARC uids must be 64-bit integers')
    return ParticleKeys('uid', uids.view(np.int64), np.zeros(len(uids), dtype=np.int64),
                        np.empty(0, dtype=object))


def rebase_labels(keys, root, resolve=True):
    """The same keys with every relative stack (or micrograph) name made absolute under
    ``root``, links resolved when ``resolve`` (one ``realpath`` per distinct name)."""
    root = os.path.abspath(root)
    labels = [os.path.normpath(os.path.join(root, name)) for name in keys.labels]
    if resolve:
        labels = _resolved(labels)
    codes, uniques = pd.factorize(pd.Index(labels, dtype=object))
    return ParticleKeys(keys.kind, codes[keys.codes].astype(np.int64), keys.index,
                        np.asarray(uniques, dtype=object), keys.xy)


def _resolved(paths):
    """``os.path.realpath`` of many files in few folders: each folder resolved once, then a
    file's own link, if it is one."""
    folders, out = {}, []
    for path in paths:
        folder, name = os.path.split(path)
        if folder not in folders:
            folders[folder] = os.path.realpath(folder)
        path = os.path.join(folders[folder], name)
        out.append(os.path.realpath(path) if os.path.islink(path) else path)
    return out


_CS_UID_PREFIX = re.compile(r'^\d{21}_')
_MOTION_SUFFIXES = re.compile(r'(_patch_aligned_doseweighted|_patch_aligned|_rigid_aligned_'
                              r'doseweighted|_rigid_aligned|_doseweighted)$')


def micrograph_stem(name):
    """A micrograph's name as every program keeps it: the file name without folder and
    extension, without cryoSPARC's 21-digit uid prefix and its motion-correction suffixes
    (``_patch_aligned_doseweighted``...)."""
    stem = posixpath.basename(normalise_path(name))
    stem = stem.rsplit('.', 1)[0] if '.' in stem else stem
    return _MOTION_SUFFIXES.sub('', _CS_UID_PREFIX.sub('', stem))


def coordinate_keys(micrographs, x, y, pixel_size, stems=False):
    """Keys from micrograph names and particle coordinates.

    Parameters
    ----------
    micrographs : array-like of bytes or str
    x, y : array-like of float
        Coordinates in pixels of the micrograph.
    pixel_size : float or array-like of float
        Micrograph pixel size in Angstrom (one value, or one per row).
    stems : bool
        Compare micrographs by :func:`micrograph_stem` (across software) instead of path.
    """
    codes, labels = _factorize_names(micrographs)
    if stems:
        remap, labels = pd.factorize(pd.Index([micrograph_stem(n) for n in labels],
                                              dtype=object))
        codes, labels = remap[codes].astype(np.int64), np.asarray(labels, dtype=object)
    pixel_size = np.asarray(pixel_size, dtype=np.float64)
    if np.any(~np.isfinite(pixel_size)) or np.any(pixel_size <= 0):
        raise ValueError('micrograph pixel size must be a positive number')
    xy = np.column_stack([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])
    xy *= pixel_size.reshape(-1, 1) if pixel_size.ndim else pixel_size
    return ParticleKeys('coordinates', codes, np.zeros(len(codes), dtype=np.int64), labels, xy)


# ---------------------------------------------------------------------- matching

def match_particles(keys, tolerance=None):
    """Particle numbers comparable across jobs.

    Parameters
    ----------
    keys : list of ParticleKeys
        One per job, all of the same kind.
    tolerance : float, optional
        Largest distance in Angstrom between matching coordinates (coordinates keys).

    Returns
    -------
    list of numpy.ndarray of int64
        Per job, one number per row; rows of different jobs with the same number are the
        same particle image. Rows of one job may share a number (symmetry expansion).
    """
    kinds = {k.kind for k in keys}
    if len(kinds) != 1:
        raise ValueError(f'particle keys of different kinds: {sorted(kinds)}')
    kind = kinds.pop()
    if kind in ('id', 'uid'):
        return [k.codes for k in keys]
    remaps = _shared_label_codes([k.labels for k in keys])
    if kind == 'location':
        if max((int(k.index.max()) for k in keys if len(k)), default=0) >= 1 << _INDEX_BITS:
            raise ValueError('image numbers above 2**32 are not supported')
        return [(remap[k.codes] << _INDEX_BITS) | k.index for k, remap in zip(keys, remaps)]
    if tolerance is None or tolerance < 0:
        raise ValueError('matching by coordinates needs a tolerance in Angstrom (>= 0)')
    return _match_coordinates([remap[k.codes] for k, remap in zip(keys, remaps)],
                              [k.xy for k in keys], float(tolerance))


def _shared_label_codes(label_lists):
    """Per job, an array mapping its label codes to codes shared by all jobs."""
    index = pd.Index(np.concatenate(label_lists) if label_lists else [], dtype=object).unique()
    return [np.asarray(index.get_indexer(labels), dtype=np.int64) for labels in label_lists]


def _match_coordinates(micrographs, positions, tolerance):
    """Give particles of later jobs the number of the nearest earlier particle within
    ``tolerance`` on the same micrograph (each earlier particle matched at most once per
    job); unmatched positions get new numbers."""
    spread = max((np.abs(p).max() for p in positions if len(p)), default=0.0)
    spacing = 4.0 * spread + 10.0 * tolerance + 1.0
    ref_points = np.zeros((0, 3))
    ref_ids = np.zeros(0, dtype=np.int64)
    next_id = 0
    out = []
    for mics, xy in zip(micrographs, positions):
        points = np.column_stack([xy, mics.astype(np.float64) * spacing])
        unique_points, inverse = np.unique(points, axis=0, return_inverse=True)
        inverse = inverse.ravel()
        ids = np.full(len(unique_points), -1, dtype=np.int64)
        if len(ref_points) and len(unique_points):
            dist, nearest = cKDTree(ref_points).query(unique_points, k=1,
                                                      distance_upper_bound=tolerance + 1e-9)
            hit = np.flatnonzero(np.isfinite(dist))
            order = hit[np.lexsort((dist[hit], nearest[hit]))]
            first = np.ones(len(order), dtype=bool)
            first[1:] = nearest[order[1:]] != nearest[order[:-1]]
            winners = order[first]
            ids[winners] = ref_ids[nearest[winners]]
        new = np.flatnonzero(ids < 0)
        ids[new] = np.arange(next_id, next_id + len(new))
        next_id += len(new)
        ref_points = np.concatenate([ref_points, unique_points[new]])
        ref_ids = np.concatenate([ref_ids, ids[new]])
        out.append(ids[inverse])
    return out
