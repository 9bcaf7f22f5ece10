"""RECOVAR's inputs (cryoDRGN layout) from RELION particle metadata.

One folder holds everything RECOVAR reads, under the names below:

- ``particles.star``: RELION 3.1 particles (``data_optics`` + ``data_particles``: image name,
  optics group, half set) whose image names ``NNNNNN@stacks/KKKKK_name.mrcs`` point, relative to
  the STAR file, to symbolic links to the original stacks (never copies).
- ``poses.pkl``: pickled tuple ``(rot, trans)``: ``rot`` float32 ``(N, 3, 3)`` RELION's Euler
  matrices, ``trans`` float32 ``(N, 2)`` the origin in pixels divided by the box size.
- ``ctf.pkl``: pickled float32 ``(N, 9)`` ``[D, Apix, DefocusU, DefocusV, DefocusAngle,
  Voltage, Cs, AmplitudeContrast, PhaseShift]`` (Å, degrees, kV, mm).
- ``id_map.csv``: ``row, particle_id, image``: RECOVAR's row ``i`` (0-based, the order of every
  per-particle result) is the particle ``particle_id`` whose original image was ``image``.
- tilt series only: ``particles.star`` also carries :data:`TILT_COLUMNS` (RECOVAR reads the
  particle of each tilt image from ``rlnGroupName``, its dose and tilt from the others), and
  ``tilt_units.csv`` (``row, unit, group``) gives the RECOVAR particle (``unit``: the rank of
  ``group`` in sorted order, the order of RECOVAR's per-particle results) of every row.
"""
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.transform import Rotation

from .errors import FormatError
from .mrc import validate_mrc
from .relion import format_image_names, parse_image_names
from .star import write_particles_star

__all__ = ['RecovarInputs', 'RecovarInputError', 'relion_to_rotations', 'translations_fraction',
           'ctf_parameters', 'write_poses_pkl', 'write_ctf_pkl', 'read_poses_pkl',
           'read_ctf_pkl', 'write_id_map', 'read_id_map', 'link_stacks', 'write_recovar_inputs',
           'PARTICLES_STAR', 'POSES_PKL', 'CTF_PKL', 'ID_MAP_CSV', 'STACKS_DIR', 'TILT_COLUMNS',
           'TILT_UNITS_CSV', 'tilt_units', 'read_tilt_units']

PARTICLES_STAR = 'particles.star'
POSES_PKL = 'poses.pkl'
CTF_PKL = 'ctf.pkl'
ID_MAP_CSV = 'id_map.csv'
STACKS_DIR = 'stacks'
TILT_UNITS_CSV = 'tilt_units.csv'
#: Columns of tilt-series particles passed to RECOVAR: the particle a tilt image belongs to
#: (``rlnGroupName``), the tilt's scale (its cosine, RELION 5 and Warp), the dose received
#: before it (RELION 5: ``rlnMicrographPreExposure``; Warp: ``rlnCtfBfactor`` = -4 dose) and
#: the nominal tilt and tilt image (kept for the record).
TILT_COLUMNS = ('rlnGroupName', 'rlnCtfScalefactor', 'rlnMicrographPreExposure', 'rlnCtfBfactor',
                'rlnTomoNominalStageTiltAngle', 'rlnMicrographName')

ANGLE_COLUMNS = ('rlnAngleRot', 'rlnAngleTilt', 'rlnAnglePsi')
CTF_COLUMNS = ('rlnDefocusU', 'rlnDefocusV', 'rlnDefocusAngle', 'rlnVoltage',
               'rlnSphericalAberration', 'rlnAmplitudeContrast')
_MRC_SUFFIXES = ('.mrcs', '.mrc')
_UNSAFE = re.compile(r'[^A-Za-z0-9._-]')
_PIXEL_SIZE_TOLERANCE = 1e-4


class RecovarInputError(FormatError):
    """Particles that RECOVAR cannot take as they are (the message says why and what to do)."""


@dataclass
class RecovarInputs:
    """The files written by :func:`write_recovar_inputs`.

    Attributes
    ----------
    particles, poses, ctf, id_map_file : pathlib.Path
        ``particles.star``, ``poses.pkl``, ``ctf.pkl`` and ``id_map.csv``.
    id_map : numpy.ndarray
        ``(N,)`` int64 particle id of each RECOVAR row.
    box : int
        Image size in pixels.
    pixel_size : float
        Pixel size in Å.
    """

    particles: Path
    poses: Path
    ctf: Path
    id_map_file: Path
    id_map: np.ndarray
    box: int
    pixel_size: float

    @property
    def n_particles(self):
        """Number of particles (rows)."""
        return len(self.id_map)


# ------------------------------------------------------------------ poses

def relion_to_rotations(rot, tilt, psi):
    """RELION's Euler matrices (``Euler_angles2matrix``) for angles in degrees.

    Parameters
    ----------
    rot, tilt, psi : array-like
        ``(N,)`` angles in degrees.

    Returns
    -------
    numpy.ndarray
        ``(N, 3, 3)`` float64 matrices ``A``; ``A @ r`` maps map coordinates to the image frame.
    """
    angles = np.column_stack([np.ravel(rot), np.ravel(tilt), np.ravel(psi)]).astype(np.float64)
    return Rotation.from_euler('ZYZ', angles, degrees=True).inv().as_matrix()


def translations_fraction(particles, pixel_size, box):
    """Particle origins as fractions of the box (cryoDRGN's ``trans``).

    Parameters
    ----------
    particles : pandas.DataFrame
        ``rlnOriginXAngst``/``rlnOriginYAngst`` (Å, RELION 3.1) or ``rlnOriginX``/``rlnOriginY``
        (pixels, RELION 3.0); no origin columns means zero shifts.
    pixel_size : float
        Å per pixel.
    box : int
        Image size in pixels.

    Returns
    -------
    numpy.ndarray
        ``(N, 2)`` float64 ``origin_px / box``, same sign as RELION's origin.

    Raises
    ------
    RecovarInputError
        If a shift is not finite or is larger than the box (``|trans| > 1``).
    """
    if {'rlnOriginXAngst', 'rlnOriginYAngst'} <= set(particles.columns):
        pixels = particles[['rlnOriginXAngst', 'rlnOriginYAngst']].to_numpy(np.float64) / pixel_size
    elif {'rlnOriginX', 'rlnOriginY'} <= set(particles.columns):
        pixels = particles[['rlnOriginX', 'rlnOriginY']].to_numpy(np.float64)
    else:
        pixels = np.zeros((len(particles), 2))
    trans = pixels / float(box)
    bad = ~np.isfinite(trans).all(axis=1) | (np.abs(trans) > 1).any(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise RecovarInputError(
            f'{int(bad.sum())} particle(s) have a shift that is not finite or larger than the '
            f'box (first: row {row}, origin {pixels[row].tolist()} px for a {box} px box); '
            f'RECOVAR needs |origin| <= box size: check the pixel size or re-extract the particles')
    return trans


def write_poses_pkl(path, rotations, trans_fraction):
    """Write cryoDRGN's ``poses.pkl``: the tuple ``(rot (N, 3, 3), trans (N, 2))`` as float32.

    Raises
    ------
    RecovarInputError
        If the shapes disagree or a translation has ``|t| > 1``.
    """
    rotations = np.asarray(rotations, dtype=np.float32)
    trans = np.asarray(trans_fraction, dtype=np.float32)
    if rotations.ndim != 3 or rotations.shape[1:] != (3, 3):
        raise RecovarInputError(path, f'rotations must have shape (N, 3, 3), got {rotations.shape}')
    if trans.shape != (len(rotations), 2):
        raise RecovarInputError(path, f'translations must have shape ({len(rotations)}, 2), '
                                      f'got {trans.shape}')
    if not (np.isfinite(trans).all() and np.all(np.abs(trans) <= 1)):
        raise RecovarInputError(path, 'translations must be fractions of the box with |t| <= 1')
    _dump(path, (rotations, trans))


def read_poses_pkl(path):
    """Read a cryoDRGN ``poses.pkl``; returns ``(rot (N, 3, 3), trans (N, 2) or None)``."""
    poses = _load(path)
    if isinstance(poses, tuple):
        return np.asarray(poses[0]), (np.asarray(poses[1]) if len(poses) > 1 else None)
    return np.asarray(poses), None


# ------------------------------------------------------------------ CTF

def ctf_parameters(box, pixel_size, defocus_u, defocus_v, defocus_angle, voltage, cs,
                   amplitude_contrast, phase_shift=None):
    """cryoDRGN's CTF table.

    Parameters
    ----------
    box : int
        Image size in pixels.
    pixel_size : float
        Å per pixel.
    defocus_u, defocus_v, defocus_angle : array-like
        ``(N,)`` Å, Å, degrees.
    voltage, cs, amplitude_contrast : array-like or float
        kV, mm, fraction (one per particle, or one for all).
    phase_shift : array-like, optional
        Degrees; missing (``None`` or NaN) means 0.

    Returns
    -------
    numpy.ndarray
        ``(N, 9)`` float32 ``[D, Apix, DefocusU, DefocusV, DefocusAngle, Voltage, Cs,
        AmplitudeContrast, PhaseShift]``.
    """
    defocus_u = np.asarray(defocus_u, dtype=np.float64).ravel()
    n = len(defocus_u)
    if phase_shift is None:
        phase_shift = np.zeros(n)
    phase_shift = np.nan_to_num(np.asarray(phase_shift, dtype=np.float64), nan=0.0)
    columns = [np.full(n, float(box)), np.full(n, float(pixel_size)), defocus_u, defocus_v,
               defocus_angle, voltage, cs, amplitude_contrast, phase_shift]
    return np.column_stack([np.broadcast_to(np.asarray(c, dtype=np.float64).ravel(), (n,))
                            for c in columns]).astype(np.float32)


def write_ctf_pkl(path, params):
    """Write cryoDRGN's ``ctf.pkl`` from a ``(N, 9)`` table (see :func:`ctf_parameters`).

    Raises
    ------
    RecovarInputError
        If the table is not ``(N, 9)`` or holds a non-finite value.
    """
    params = np.asarray(params, dtype=np.float32)
    if params.ndim != 2 or params.shape[1] != 9:
        raise RecovarInputError(path, f'CTF table must have shape (N, 9), got {params.shape}')
    if not np.isfinite(params).all():
        raise RecovarInputError(path, 'CTF table has NaN or infinite values')
    _dump(path, params)


def read_ctf_pkl(path):
    """Read a cryoDRGN ``ctf.pkl``: ``(N, 9)`` array."""
    return np.asarray(_load(path))


# ------------------------------------------------------------------ id map

def write_id_map(path, ids, images=None):
    """Write ``id_map.csv`` (``row, particle_id[, image]``)."""
    table = pd.DataFrame({'row': np.arange(len(ids)), 'particle_id': np.asarray(ids)})
    if images is not None:
        table['image'] = np.asarray(images, dtype=object)
    table.to_csv(path, index=False)


def read_id_map(path):
    """Particle ids ``(N,)`` int64 of the rows of RECOVAR's results, from ``id_map.csv``."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(path, 'id map not found (written by write_recovar_inputs)')
    table = pd.read_csv(path, usecols=['row', 'particle_id'])
    if not np.array_equal(table['row'].to_numpy(), np.arange(len(table))):
        raise FormatError(path, 'rows are not 0, 1, 2, ... in order')
    return table['particle_id'].to_numpy(np.int64)


# ------------------------------------------------------------------ stacks

def link_stacks(image_names, outdir, box, image_root=None):
    """Link the stacks of RELION image names into ``outdir/stacks`` and rename the images.

    Parameters
    ----------
    image_names : array-like of str
        ``index@path`` names; relative paths are relative to ``image_root``.
    outdir : str or os.PathLike
        Folder of the STAR file that will use the new names.
    box : int
        Expected image size in pixels.
    image_root : str or os.PathLike, optional
        Folder of relative stack paths (default: the current directory).

    Returns
    -------
    numpy.ndarray of object
        New names ``index@stacks/KKKKK_name.mrcs``, relative to ``outdir``.

    Raises
    ------
    RecovarInputError
        If a stack is missing, is not MRC, is big-endian, has images of another size or fewer
        images than an index asks for.
    """
    outdir = Path(outdir)
    root = Path(image_root) if image_root is not None else Path.cwd()
    try:
        indices, paths = parse_image_names(image_names)
    except ValueError as exc:
        raise RecovarInputError(f'rlnImageName: {exc}') from None
    codes, unique_paths = pd.factorize(pd.Series(paths, dtype=object))
    max_index = np.zeros(len(unique_paths), dtype=np.int64)
    np.maximum.at(max_index, codes, indices)
    sources = [Path(name) if Path(name).is_absolute() else root / name for name in unique_paths]
    for source, needed in zip(sources, max_index):
        _check_stack(source, box, int(needed))
    stacks_dir = outdir / STACKS_DIR
    stacks_dir.mkdir(parents=True, exist_ok=True)
    link_names = np.empty(len(unique_paths), dtype=object)
    for k, source in enumerate(sources):
        link = f'{k + 1:05d}_{_UNSAFE.sub("_", source.name)}'
        tmp = stacks_dir / f'.{link}.tmp'
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(os.path.abspath(source), tmp)
        os.replace(tmp, stacks_dir / link)
        link_names[k] = f'{STACKS_DIR}/{link}'
    return format_image_names(indices, link_names[codes])


def _check_stack(path, box, needed):
    if path.suffix.lower() not in _MRC_SUFFIXES:
        raise RecovarInputError(path, 'RECOVAR reads MRC stacks only (.mrcs/.mrc): convert the '
                                      'particles to MRC first')
    info = validate_mrc(path)
    nz, ny, nx = info['shape']
    if (ny, nx) != (box, box):
        raise RecovarInputError(path, f'images are {nx} x {ny} px, expected {box} x {box}')
    if info['byte_order'] != '<':
        raise RecovarInputError(path, 'big-endian stack; RECOVAR reads little-endian MRC only: '
                                      'convert the stack')
    if needed > nz:
        raise RecovarInputError(path, f'has {nz} images but image {needed} is referenced')


# ------------------------------------------------------------------ everything

def write_recovar_inputs(particles, outdir, pixel_size, box, ids=None, image_root=None,
                         tilt_series=False):
    """Write RECOVAR's inputs (STAR with linked stacks, poses, CTF, id map) into ``outdir``.

    Parameters
    ----------
    particles : pandas.DataFrame
        RELION particle rows with optics merged in: ``rlnImageName``, ``rlnAngleRot/Tilt/Psi``,
        origins (``rlnOriginX/YAngst`` or ``rlnOriginX/Y``; none = no shift),
        ``rlnDefocusU/V/Angle``, ``rlnVoltage``, ``rlnSphericalAberration``,
        ``rlnAmplitudeContrast``, optional ``rlnPhaseShift``, ``rlnRandomSubset`` (kept as
        RECOVAR's half sets), ``rlnOpticsGroup``, ``rlnImagePixelSize``, ``rlnImageSize``.
    outdir : str or os.PathLike
        Folder to write into (created).
    pixel_size : float
        Å per pixel of the images.
    box : int
        Image size in pixels (even).
    ids : array-like of int, optional
        Particle id of each row (default ``1..N``).
    image_root : str or os.PathLike, optional
        Folder that relative image paths start from (default: the current directory).
    tilt_series : bool
        Rows are tilt images (cryo-ET): ``rlnGroupName`` names their particle; the
        :data:`TILT_COLUMNS` present go into the STAR and ``tilt_units.csv`` is written.

    Returns
    -------
    RecovarInputs

    Raises
    ------
    RecovarInputError
        No particles, no 3D angles, no CTF, an odd box, a pixel size or box that disagrees
        with the rows, NaN values, shifts larger than the box, or unusable stacks.
    """
    _validate(particles, pixel_size, box, ids)
    if tilt_series and 'rlnGroupName' not in particles:
        raise RecovarInputError('tilt-series particles have no rlnGroupName: the column that '
                                'says which particle each tilt image belongs to')
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    n = len(particles)
    ids = np.arange(1, n + 1, dtype=np.int64) if ids is None else np.asarray(ids, np.int64)

    angles = particles[list(ANGLE_COLUMNS)].to_numpy(np.float64)
    trans = translations_fraction(particles, pixel_size, box)
    ctf = ctf_parameters(box, pixel_size, *(particles[c].to_numpy(np.float64) for c in CTF_COLUMNS),
                         phase_shift=(particles['rlnPhaseShift'].to_numpy(np.float64)
                                      if 'rlnPhaseShift' in particles else None))
    names = link_stacks(particles['rlnImageName'].to_numpy(object), outdir, box, image_root)

    inputs = RecovarInputs(particles=outdir / PARTICLES_STAR, poses=outdir / POSES_PKL,
                           ctf=outdir / CTF_PKL, id_map_file=outdir / ID_MAP_CSV, id_map=ids,
                           box=int(box), pixel_size=float(pixel_size))
    write_poses_pkl(inputs.poses, relion_to_rotations(*angles.T), trans)
    write_ctf_pkl(inputs.ctf, ctf)
    rows, optics = _star_tables(particles, names, ctf, pixel_size, box)
    if tilt_series:
        for column in TILT_COLUMNS:
            if column in particles:
                rows[column] = particles[column].to_numpy()
        rows['rlnGroupName'] = rows['rlnGroupName'].astype(str).str.replace(r'\s', '_', regex=True)
        units, _ = tilt_units(rows['rlnGroupName'])
        pd.DataFrame({'row': np.arange(n), 'unit': units, 'group': rows['rlnGroupName']}).to_csv(
            outdir / TILT_UNITS_CSV, index=False)
    write_particles_star(inputs.particles, rows, optics)
    write_id_map(inputs.id_map_file, ids, particles['rlnImageName'].to_numpy(object))
    return inputs


def tilt_units(group_names):
    """RECOVAR's particle of every tilt image: ``(units, groups)`` with ``groups`` the sorted
    unique ``rlnGroupName`` values (RECOVAR's particle order) and ``units[i]`` the index of
    row ``i``'s group in it."""
    groups, units = np.unique(np.asarray(group_names, dtype=str), return_inverse=True)
    return units.astype(np.int64), groups


def read_tilt_units(path):
    """RECOVAR particle (unit) of every row, from ``tilt_units.csv``; None when the file is
    absent (single-particle data: each row is its own unit)."""
    path = Path(path)
    if not path.is_file():
        return None
    table = pd.read_csv(path, usecols=['row', 'unit'])
    if not np.array_equal(table['row'].to_numpy(), np.arange(len(table))):
        raise FormatError(path, 'rows are not 0, 1, 2, ... in order')
    return table['unit'].to_numpy(np.int64)


def _validate(particles, pixel_size, box, ids):
    if not isinstance(particles, pd.DataFrame) or len(particles) == 0:
        raise RecovarInputError('no particles to convert')
    if int(box) != box or box <= 0 or int(box) % 2:
        raise RecovarInputError(f'box size is {box} px; RECOVAR needs an even box size: '
                                f're-extract or crop the particles to an even size')
    if not (np.isfinite(pixel_size) and pixel_size > 0):
        raise RecovarInputError(f'pixel size must be positive, got {pixel_size}')
    missing = [c for c in ('rlnImageName',) + ANGLE_COLUMNS if c not in particles]
    if 'rlnImageName' in missing:
        raise RecovarInputError('particles have no image names (rlnImageName)')
    if missing:
        raise RecovarInputError(f'particles have no 3D alignment (missing {", ".join(missing)}): '
                                f'RECOVAR needs particles refined in 3D (e.g. a 3D auto-refine)')
    missing = [c for c in CTF_COLUMNS if c not in particles]
    if missing:
        raise RecovarInputError(f'particles have no CTF (missing {", ".join(missing)}): '
                                f'estimate the CTF and keep it with the particles')
    for group, columns in (('angles', ANGLE_COLUMNS), ('CTF values', CTF_COLUMNS)):
        values = particles[list(columns)].to_numpy(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise RecovarInputError(f'{int(bad.any(axis=1).sum())} particle(s) have missing '
                                    f'{group} (first: row {row}, {columns[col]})')
    if 'rlnImagePixelSize' in particles:
        sizes = particles['rlnImagePixelSize'].to_numpy(np.float64)
        off = np.abs(sizes - pixel_size) > _PIXEL_SIZE_TOLERANCE * pixel_size
        if off.any():
            raise RecovarInputError(
                f'rlnImagePixelSize is {sizes[off][0]} Å for {int(off.sum())} particle(s), not '
                f'{pixel_size} Å: RECOVAR takes one pixel size for all particles; rescale the '
                f'optics groups to one pixel size first')
    if 'rlnImageSize' in particles:
        sizes = particles['rlnImageSize'].to_numpy()
        if np.any(sizes != box):
            raise RecovarInputError(f'rlnImageSize is {sizes[sizes != box][0]} for some particles, '
                                    f'not {box}: all particles must have one box size')
    if ids is not None and len(ids) != len(particles):
        raise RecovarInputError(f'{len(ids)} ids for {len(particles)} particles')
    if ids is not None and len(np.unique(ids)) != len(ids):
        raise RecovarInputError('particle ids are not unique: results could not be mapped back')


def _star_tables(particles, names, ctf, pixel_size, box):
    """RELION 3.1 particle and optics tables of the linked images (poses and CTF are in the pkl)."""
    groups = (particles['rlnOpticsGroup'].to_numpy(np.int64) if 'rlnOpticsGroup' in particles
              else np.ones(len(particles), dtype=np.int64))
    rows = pd.DataFrame({'rlnImageName': names, 'rlnOpticsGroup': groups})
    if 'rlnRandomSubset' in particles:
        subsets = particles['rlnRandomSubset'].to_numpy()
        if np.isin(subsets, (1, 2)).all():
            rows['rlnRandomSubset'] = subsets.astype(np.int64)
    first = pd.Series(np.arange(len(groups))).groupby(groups).first()
    optics = pd.DataFrame({
        'rlnOpticsGroupName': [f'opticsGroup{g}' for g in first.index],
        'rlnOpticsGroup': first.index.to_numpy(np.int64),
        'rlnVoltage': ctf[first.to_numpy(), 5].astype(np.float64),
        'rlnSphericalAberration': ctf[first.to_numpy(), 6].astype(np.float64),
        'rlnAmplitudeContrast': ctf[first.to_numpy(), 7].astype(np.float64),
        'rlnImagePixelSize': float(pixel_size),
        'rlnImageSize': int(box),
        'rlnImageDimensionality': 2,
    })
    return rows, optics


def _dump(path, obj):
    with open(path, 'wb') as fh:
        pickle.dump(obj, fh, protocol=4)


def _load(path):
    path = Path(path)
    if not path.is_file():
        raise FormatError(path, 'file not found')
    with open(path, 'rb') as fh:
        return pickle.load(fh)
