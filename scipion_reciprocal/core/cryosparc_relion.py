"""cryoSPARC particle fields in RELION's conventions.

- Orientation: ``alignments3D/pose`` is a rotation vector (axis times angle, radians) of the
  rotation ``R`` with ``R^T`` equal to RELION's Euler matrix ``A`` of the same particle
  (``A = Rotation.from_rotvec(pose).as_matrix().T``; what cryoDRGN's ``parse_pose_csparc``
  and pyem's ``csparc2star`` do). 2D: ``alignments2D/pose`` is the in-plane angle, RELION's
  psi, in radians.
- Shift: ``alignments*/shift`` is RELION's origin (same sign), in pixels of
  ``alignments*/psize_A`` (heterogeneous refinement aligns downsampled images, so that pixel
  size can differ from the stack's ``blob/psize_A``): origin in Angstrom =
  ``shift * alignments*/psize_A``.
- CTF: ``ctf/df1_A``, ``ctf/df2_A`` are ``rlnDefocusU/V``; ``ctf/df_angle_rad`` and
  ``ctf/phase_shift_rad`` are ``rlnDefocusAngle`` and ``rlnPhaseShift`` in radians.
- Numbering: classes, ``blob/idx``, ``alignments*/split`` and ``ctf/exp_group_id`` count from
  0; RELION's from 1 (each is written + 1).
- Position: ``location/center_x_frac`` times the micrograph width (``micrograph_shape[1]``)
  is ``rlnCoordinateX``. For Y, particles imported into cryoSPARC from RELION have
  ``(1 - center_y_frac) * height`` = ``rlnCoordinateY`` (cryoSPARC's origin is the bottom
  left, pyem's default), while particles picked on micrographs motion-corrected by cryoSPARC
  match micrographs motion-corrected by MotionCor2 or RELION without the flip (pyem's
  notes: cryoSPARC's Patch Motion flips images). :func:`y_from_bottom` tells the two apart
  by the micrograph (one written by cryoSPARC's motion correction, or any other), and
  :func:`relion_particles` follows it unless told otherwise; matching across software
  tries that choice first and the opposite one second (see :mod:`.classification_inputs`).
"""
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.transform import Rotation

from ..formats.cryosparc import (BLOB_IDX, BLOB_PATH, MULTI_POSTERIOR, CsError, CsParticles,
                                 class_field, clean_path, posterior_field, write_cs)
from ..formats.relion import format_image_names
from ..formats.star import write_particles_star
from .geometry import matrix_to_relion_euler

__all__ = ['relion_angles_from_poses', 'relion_particles', 'micrograph_positions',
           'y_from_bottom', 'star_bytes_per_row', 'stack_paths', 'alignment_prefix',
           'hard_classes', 'HardClasses', 'LOCATION_FIELDS', 'CLASS_OFFSET']

#: Added to cryoSPARC's 0-based classes: RELION and Scipion count classes from 1.
CLASS_OFFSET = 1
LOCATION_FIELDS = ('location/micrograph_path', 'location/center_x_frac',
                   'location/center_y_frac', 'location/micrograph_shape')
_MIC_PSIZE = 'location/micrograph_psize_A'
#: Micrographs written by cryoSPARC's motion correction (patch or full-frame): its
#: ``motioncorrected/`` folder, or its ``_patch_aligned``/``_rigid_aligned`` names.
_CS_MOTION_CORRECTED = re.compile(r'(^|/)motioncorrected/|_(patch|rigid)_aligned'
                                  r'(_doseweighted)?\.mrc$')


@dataclass
class HardClasses:
    """The class of every particle of a cryoSPARC dataset.

    Attributes
    ----------
    classes : numpy.ndarray of int64
        1-based (cryoSPARC's class + :data:`CLASS_OFFSET`).
    confidence : numpy.ndarray of float64 or None
        The posterior of that class.
    field : str
        Where the classes come from.
    kind : str
        ``'2D'`` or ``'3D'``.
    n_classes : int or None
        Classes declared by per-class fields (``alignments_class_<k>/...`` or the width of
        ``alignments3D_multi``), empty ones included.
    """

    classes: np.ndarray
    confidence: np.ndarray
    field: str
    kind: str
    n_classes: int = None


def hard_classes(particles):
    """The hard class of every particle: ``alignments3D/class`` or ``alignments2D/class``
    (+ 1) with its ``class_posterior``, or, for files with only per-class posteriors
    (``alignments3D_multi/class_posterior``, rows x classes), the most probable class.

    Raises
    ------
    CsError
        If no file of the dataset has a class field (names the file).
    """
    name = class_field(particles.fields)
    if name is not None:
        particles.prefetch([name, posterior_field(particles.fields, name) or name])
    declared = {int(m.group(1)) for f in particles.fields
                for m in [re.match(r'alignments_class_(\d+)/', f)] if m}
    n_classes = max(declared) + 1 if declared else None
    if name is not None:
        posterior = posterior_field(particles.fields, name)
        return HardClasses(particles.column(name).astype(np.int64) + CLASS_OFFSET,
                           particles.column(posterior).astype(np.float64) if posterior else None,
                           name, '2D' if name.startswith('alignments2D') else '3D', n_classes)
    if MULTI_POSTERIOR in particles and particles.column(MULTI_POSTERIOR, [0]).ndim == 2:
        probabilities = particles.column(MULTI_POSTERIOR)
        return HardClasses(probabilities.argmax(axis=1).astype(np.int64) + CLASS_OFFSET,
                           probabilities.max(axis=1).astype(np.float64), MULTI_POSTERIOR,
                           '3D', probabilities.shape[1])
    raise CsError(particles.path, 'no class field (alignments3D/class, alignments2D/class or '
                                  f'{MULTI_POSTERIOR}): not the output of a classification')


def relion_angles_from_poses(poses):
    """RELION (rot, tilt, psi) in degrees, (N, 3), from cryoSPARC rotation vectors (N, 3)."""
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, 3)
    matrices = Rotation.from_rotvec(poses).as_matrix().transpose(0, 2, 1)
    return matrix_to_relion_euler(matrices)


def alignment_prefix(particles):
    """``'alignments3D'`` or ``'alignments2D'`` (whichever has a pose), or None."""
    for prefix in ('alignments3D', 'alignments2D'):
        if f'{prefix}/pose' in particles:
            return prefix
    return None


def stack_paths(particles, project_dir=None, rows=None):
    """Per row, the stack of ``blob/path`` as a path (absolute below ``project_dir`` when
    given and relative), decoded once per distinct stack."""
    codes, uniques = pd.factorize(particles.column(BLOB_PATH, rows))
    names = np.array([_project_path(clean_path(u), project_dir) for u in uniques], dtype=object)
    return names[codes]


def _project_path(name, project_dir):
    if project_dir is None or os.path.isabs(name):
        return name
    return str(Path(project_dir) / name)


def y_from_bottom(micrographs):
    """Per particle, whether cryoSPARC measured its ``center_y_frac`` from the bottom of the
    micrograph as RELION sees it (``rlnCoordinateY = (1 - center_y_frac) * height``).

    True unless the micrograph was written by cryoSPARC's motion correction (its
    ``motioncorrected/`` folder or ``_patch_aligned``/``_rigid_aligned`` names), whose
    images cryoSPARC flips: particles picked on those match RELION's positions unflipped.

    Parameters
    ----------
    micrographs : array-like of str or bytes
        ``location/micrograph_path`` of every particle.
    """
    codes, uniques = pd.factorize(np.asarray(micrographs))
    bottom = np.array([_CS_MOTION_CORRECTED.search(clean_path(u).replace('\\', '/')) is None
                       for u in uniques], dtype=bool)
    return bottom[codes] if len(uniques) else np.zeros(len(codes), dtype=bool)


def star_bytes_per_row(particles, sample=256):
    """Bytes per particle of the RELION STAR file of ``particles`` (:func:`relion_particles`
    written by :func:`~..formats.star.write_particles_star`, with a class column), measured
    on up to ``sample`` rows spread over the dataset; the header counts in (an upper
    bound), for free-space checks before the conversion is written."""
    n = len(particles)
    if not n:
        return 0.0
    rows = np.unique(np.linspace(0, n - 1, min(n, sample)).astype(np.int64))
    with tempfile.TemporaryDirectory(prefix='cs-star-size-') as folder:
        write_cs(Path(folder) / 'sample.cs', particles.subset(rows))
        part = CsParticles(Path(folder) / 'sample.cs', project_dir=particles.project_dir)
        table, optics = relion_particles(part, particles.project_dir)
        part.close()
        if 'rlnClassNumber' not in table:
            table['rlnClassNumber'] = 1
        write_particles_star(Path(folder) / 'sample.star', table, optics)
        return os.path.getsize(Path(folder) / 'sample.star') / len(rows)


def micrograph_positions(particles, flip_y=None, project_dir=None):
    """Micrograph, position in pixels and micrograph pixel size of every particle.

    Parameters
    ----------
    flip_y : bool or array-like of bool, optional
        Y measured from the bottom (for every particle, or per particle); default:
        :func:`y_from_bottom` of each particle's micrograph.

    Returns
    -------
    micrographs : numpy.ndarray of object
        ``location/micrograph_path`` (decoded).
    x, y : numpy.ndarray of float64
        ``center_x_frac * width`` and ``center_y_frac * height`` (``(1 - center_y_frac) *
        height`` where ``flip_y``), in micrograph pixels.
    pixel_size : numpy.ndarray of float64 or None
        ``location/micrograph_psize_A`` when present.
    """
    particles.prefetch(LOCATION_FIELDS + (_MIC_PSIZE,))
    codes, uniques = pd.factorize(particles.column('location/micrograph_path'))
    names = np.array([clean_path(u) for u in uniques], dtype=object)
    mics = np.array([_project_path(n, project_dir) for n in names], dtype=object)[codes]
    if flip_y is None:
        flip_y = y_from_bottom(names)[codes] if len(names) else np.zeros(0, dtype=bool)
    shape = particles.column('location/micrograph_shape').astype(np.float64).reshape(-1, 2)
    x = particles.column('location/center_x_frac').astype(np.float64) * shape[:, 1]
    y_frac = particles.column('location/center_y_frac').astype(np.float64)
    y = np.where(flip_y, 1.0 - y_frac, y_frac) * shape[:, 0]
    size = particles.column(_MIC_PSIZE).astype(np.float64) if _MIC_PSIZE in particles else None
    return mics, x, y, size


def relion_particles(particles, project_dir=None, flip_y=None):
    """RELION 3.1 (particles, optics) tables of a cryoSPARC particle dataset.

    Parameters
    ----------
    particles : CsParticles
    project_dir : path, optional
        The cryoSPARC project folder: stack and micrograph paths become absolute under it.
    flip_y : bool, optional
        Whether ``location/center_y_frac`` is measured from the bottom (see
        :func:`micrograph_positions`); default: :func:`y_from_bottom` per micrograph.

    Returns
    -------
    particles_df, optics_df : pandas.DataFrame
        Image names ``(blob/idx + 1)@stack``; CTF, angles, origins in Angstrom, class
        (:func:`hard_classes`), ``rlnMaxValueProbDistribution`` (its posterior), random subset
        and position when the fields exist; one optics group per distinct (exposure group, voltage, Cs,
        amplitude contrast, pixel size, box size).
    """
    n = len(particles)
    out = {'rlnImageName': format_image_names(particles.column(BLOB_IDX).astype(np.int64) + 1,
                                              stack_paths(particles, project_dir))}
    if all(f in particles for f in LOCATION_FIELDS):
        mics, x, y, _ = micrograph_positions(particles, flip_y=flip_y, project_dir=project_dir)
        out.update(rlnMicrographName=mics, rlnCoordinateX=x, rlnCoordinateY=y)
    for field, label, scale in (('ctf/df1_A', 'rlnDefocusU', None),
                                ('ctf/df2_A', 'rlnDefocusV', None),
                                ('ctf/df_angle_rad', 'rlnDefocusAngle', 'deg'),
                                ('ctf/phase_shift_rad', 'rlnPhaseShift', 'deg')):
        if field in particles:
            values = particles.column(field).astype(np.float64)
            out[label] = np.degrees(values) if scale else values
    prefix = alignment_prefix(particles)
    if prefix is not None:
        out.update(_alignment_columns(particles, prefix))
    try:
        hard = hard_classes(particles)
        out['rlnClassNumber'] = hard.classes
        if hard.confidence is not None:
            out['rlnMaxValueProbDistribution'] = hard.confidence
    except CsError:
        pass
    table = pd.DataFrame(out, index=pd.RangeIndex(n))
    optics_keys = _optics_keys(particles)
    groups = optics_keys.groupby(list(optics_keys.columns), sort=False,
                                 dropna=False).ngroup().to_numpy() + 1
    table['rlnOpticsGroup'] = groups
    first = optics_keys.groupby(groups, sort=True).head(1)
    optics = pd.DataFrame({
        'rlnOpticsGroupName': [f'opticsGroup{g}' for g in range(1, len(first) + 1)],
        'rlnOpticsGroup': np.arange(1, len(first) + 1),
        'rlnMicrographOriginalPixelSize': first['mic_psize'].to_numpy(),
        'rlnVoltage': first['voltage'].to_numpy(),
        'rlnSphericalAberration': first['cs'].to_numpy(),
        'rlnAmplitudeContrast': first['ac'].to_numpy(),
        'rlnImagePixelSize': first['psize'].to_numpy(),
        'rlnImageSize': first['box'].to_numpy().astype(int),
        'rlnImageDimensionality': 2,
    })
    return table, optics


def _alignment_columns(particles, prefix):
    out = {}
    pose = particles.column(f'{prefix}/pose').astype(np.float64)
    if prefix == 'alignments3D':
        angles = relion_angles_from_poses(pose)
    else:
        angles = np.column_stack([np.zeros(len(pose)), np.zeros(len(pose)),
                                  np.degrees(pose.reshape(-1))])
    out['rlnAngleRot'], out['rlnAngleTilt'], out['rlnAnglePsi'] = angles.T
    shift = particles.column(f'{prefix}/shift').astype(np.float64).reshape(-1, 2)
    psize_field = f'{prefix}/psize_A' if f'{prefix}/psize_A' in particles else 'blob/psize_A'
    psize = particles.column(psize_field).astype(np.float64)
    out['rlnOriginXAngst'] = shift[:, 0] * psize
    out['rlnOriginYAngst'] = shift[:, 1] * psize
    if f'{prefix}/split' in particles:
        out['rlnRandomSubset'] = particles.column(f'{prefix}/split').astype(np.int64) + 1
    return out


def _optics_keys(particles):
    n = len(particles)

    def field(name, default):
        return particles.column(name).astype(np.float64) if name in particles \
            else np.full(n, default)

    psize = field('blob/psize_A', np.nan)
    box = particles.column('blob/shape')[:, -1].astype(np.int64) if 'blob/shape' in particles \
        else np.zeros(n, dtype=np.int64)
    mic_psize = field(_MIC_PSIZE, np.nan)
    return pd.DataFrame({
        'group': field('ctf/exp_group_id', 0), 'voltage': field('ctf/accel_kv', 300.0),
        'cs': field('ctf/cs_mm', 2.7), 'ac': field('ctf/amp_contrast', 0.1),
        'psize': psize, 'box': box,
        'mic_psize': np.where(np.isfinite(mic_psize), mic_psize, psize)})
