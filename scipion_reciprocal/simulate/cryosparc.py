"""cryoSPARC projects holding the same simulated particles as a RELION project, with known
classes.

:func:`write_cryosparc_project` writes what cryoSPARC leaves in a project folder for a few
jobs on the particles of a RELION particle table (layout as in
:mod:`scipion_reciprocal.formats.cryosparc_jobs`; field names and types as in ``.cs`` files
written by cryoSPARC 3-4):

::

    project.json
    J1/   import_particles: imported/<uid>_<stack>.mrcs links to the RELION stacks,
          J1/imported_particles.cs (uid, blob, ctf, location; Y measured from the bottom, as
          cryoSPARC stores particles imported from RELION)
    J2/   extract_micrographs_multi: the particles re-extracted from cryoSPARC's own
          micrographs, one stack per micrograph, J2/extract/<uid>_<mic>_patch_aligned_
          doseweighted_particles.mrc, new uids, blob/idx from 0 in each stack, positions
          jittered by up to ``jitter_px`` (Y not flipped: cryoSPARC's motion correction
          flips the micrograph)
    J<n>/ classification jobs on J1's or J2's particles (``JobSpec``): the last iteration's
          J<n>_<iteration>_particles.cs (alignments, classes 0-based) in a shuffled row
          order, an earlier iteration's file with other classes, the passthrough file,
          class volumes or class averages, and job.json naming them

Orientations are written as cryoSPARC's rotation vectors ``Rotation.from_euler('ZYZ', [rot,
tilt, psi], degrees=True).as_rotvec()`` of the RELION angles (whose Euler matrix is the
transpose of the vector's rotation), shifts in pixels of the alignment pixel size
(heterogeneous refinement: twice the stack's, as when it aligns downsampled images).
"""
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.transform import Rotation

from ..formats.cryosparc import write_cs
from ..formats.mrc import write_map, write_stack
from ..formats.relion import parse_image_names

__all__ = ['JobSpec', 'CryosparcProject', 'write_cryosparc_project', 'demo_with_cryosparc',
           'particle_rows',
           'alignment_rows', 'join_fields', 'write_cs_job', 'IMPORT_JOB', 'EXTRACT_JOB',
           'JOB_TYPES']

IMPORT_JOB, EXTRACT_JOB = 'J1', 'J2'
#: cryoSPARC job type -> (output group, digits of the iteration in file names, 2D?)
JOB_TYPES = {'hetero_refine': ('particles_all_classes', 5, False),
             'class_3D': ('particles_all_classes', 5, False),
             'class_2D': ('particles', 3, True)}
_PASSTHROUGH = {'particles_all_classes': 'passthrough_particles_all_classes',
                'particles': 'passthrough_particles'}
_CTF_ZEROS = (('ctf/shift_A', 2), ('ctf/tilt_A', 2), ('ctf/trefoil_A', 2), ('ctf/tetra_A', 4),
              ('ctf/anisomag', 4))


@dataclass
class JobSpec:
    """A simulated classification job.

    Attributes
    ----------
    job_type : {'hetero_refine', 'class_3D', 'class_2D'}
    labels : numpy.ndarray
        Final class (1-based, as RELION numbers them) of every particle of the table.
    particles_from : {'J1', 'J2'}
        The imported particles (same stacks as RELION) or the re-extracted ones.
    iteration : int
        Number of the last iteration (in the file names).
    class_maps : numpy.ndarray, optional
        Class volumes ``(K, box, box, box)`` (3D) or class averages ``(K, box, box)`` (2D).
    """

    job_type: str
    labels: np.ndarray
    particles_from: str = IMPORT_JOB
    iteration: int = 20
    class_maps: np.ndarray = None


@dataclass
class CryosparcProject:
    """What :func:`write_cryosparc_project` wrote.

    Attributes
    ----------
    project_dir : pathlib.Path
    uids : dict
        ``'J1'`` / ``'J2'`` -> uid of every particle of the table (table order).
    order : dict
        Job -> particle (row of the table) of every row of its main file.
    files : dict
        Job -> (main file, passthrough file).
    """

    project_dir: Path
    uids: dict = field(default_factory=dict)
    order: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)


def _uids(rng, n):
    uids = np.unique(rng.integers(0, np.iinfo(np.uint64).max, size=n, dtype=np.uint64,
                                  endpoint=True))
    while len(uids) < n:        # practically never
        uids = np.unique(np.concatenate([uids, rng.integers(0, np.iinfo(np.uint64).max, n,
                                                            dtype=np.uint64)]))
    return rng.permutation(uids[:n])


def _text(values):
    values = np.asarray(values, dtype=str)
    width = max(1, max((len(v.encode()) for v in np.unique(values)), default=1))
    return np.char.encode(values, 'utf-8').astype(f'S{width}')


def particle_rows(table, optics, uids, stacks, indices, micrographs, micrograph_shape,
                  flip_y, micrograph_uids=None):
    """cryoSPARC particle fields (``uid``, ``blob/*``, ``ctf/*``, ``location/*``) of RELION
    particle rows.

    Parameters
    ----------
    table, optics : pandas.DataFrame
        RELION 3.1 particle rows (CTF, coordinates, micrograph) and their optics.
    uids : numpy.ndarray of uint64
    stacks : array-like of str
        ``blob/path`` of every row (relative to the cryoSPARC project).
    indices : array-like of int
        ``blob/idx``, 0-based.
    micrographs : array-like of str
        ``location/micrograph_path`` of every row.
    micrograph_shape : (int, int)
        ``(height, width)`` in pixels.
    flip_y : bool
        ``center_y_frac = 1 - rlnCoordinateY / height`` (else ``rlnCoordinateY / height``).
    """
    n = len(table)
    first = optics.iloc[0]
    psize, box = float(first['rlnImagePixelSize']), int(first['rlnImageSize'])
    mic_psize = float(first.get('rlnMicrographOriginalPixelSize', psize))
    height, width = micrograph_shape
    y_frac = table['rlnCoordinateY'].to_numpy(float) / height
    codes, mic_names = pd.factorize(pd.Series(micrographs))
    if micrograph_uids is None:
        micrograph_uids = np.arange(1, len(mic_names) + 1, dtype=np.uint64)
    columns = {
        'uid': np.asarray(uids, dtype=np.uint64), 'blob/path': _text(stacks),
        'blob/idx': np.asarray(indices, dtype=np.uint32),
        'blob/shape': np.tile(np.array([box, box], dtype=np.uint32), (n, 1)),
        'blob/psize_A': np.full(n, psize, np.float32), 'blob/sign': np.full(n, -1, np.float32),
        'ctf/type': np.full(n, b'imported', dtype='S9'),
        'ctf/exp_group_id': (table['rlnOpticsGroup'].to_numpy() - 1).astype(np.uint32),
        'ctf/accel_kv': np.full(n, first['rlnVoltage'], np.float32),
        'ctf/cs_mm': np.full(n, first['rlnSphericalAberration'], np.float32),
        'ctf/amp_contrast': np.full(n, first['rlnAmplitudeContrast'], np.float32),
        'ctf/df1_A': table['rlnDefocusU'].to_numpy(np.float32),
        'ctf/df2_A': table['rlnDefocusV'].to_numpy(np.float32),
        'ctf/df_angle_rad': np.radians(table['rlnDefocusAngle'].to_numpy(float)).astype(
            np.float32),
        'ctf/phase_shift_rad': np.radians(table.get('rlnPhaseShift', pd.Series(
            np.zeros(n))).to_numpy(float)).astype(np.float32),
        'ctf/scale': np.ones(n, np.float32), 'ctf/scale_const': np.zeros(n, np.float32),
        **{name: np.zeros((n, size), np.float32) for name, size in _CTF_ZEROS},
        'ctf/bfactor': np.zeros(n, np.float32),
        'location/micrograph_uid': np.asarray(micrograph_uids, dtype=np.uint64)[codes],
        'location/exp_group_id': (table['rlnOpticsGroup'].to_numpy() - 1).astype(np.uint32),
        'location/micrograph_path': _text(micrographs),
        'location/micrograph_shape': np.tile(np.array([height, width], dtype=np.uint32),
                                             (n, 1)),
        'location/micrograph_psize_A': np.full(n, mic_psize, np.float32),
        'location/center_x_frac': (table['rlnCoordinateX'].to_numpy(float) / width).astype(
            np.float32),
        'location/center_y_frac': (1.0 - y_frac if flip_y else y_frac).astype(np.float32),
        'location/min_dist_A': np.full(n, 0.5 * box * psize, np.float32),
    }
    return join_fields(columns)


def alignment_rows(table, classes0, prefix, psize, posterior=None, split=None, n_classes=None,
                   seed=0):
    """``alignments3D/*`` or ``alignments2D/*`` fields (and ``alignments_class_<k>/*`` for
    heterogeneous refinement when ``n_classes``) of RELION particle rows.

    ``classes0`` are 0-based; shifts are the RELION origins in pixels of ``psize``.
    """
    n = len(table)
    rng = np.random.default_rng(seed)
    angles = table[['rlnAngleRot', 'rlnAngleTilt', 'rlnAnglePsi']].to_numpy(float)
    origins = table[['rlnOriginXAngst', 'rlnOriginYAngst']].to_numpy(float) / psize
    posterior = rng.uniform(0.6, 1.0, n) if posterior is None else posterior
    pose = np.radians(angles[:, 2]) if prefix == 'alignments2D' else \
        Rotation.from_euler('ZYZ', angles, degrees=True).as_rotvec()
    columns = {f'{prefix}/split': (np.arange(n) % 2 if split is None else split).astype(
        np.uint32),
        f'{prefix}/shift': origins.astype(np.float32), f'{prefix}/pose': pose.astype(np.float32),
        f'{prefix}/psize_A': np.full(n, psize, np.float32)}
    for name in ('error', 'error_min', 'resid_pow', 'slice_pow', 'image_pow', 'cross_cor'):
        columns[f'{prefix}/{name}'] = rng.uniform(100.0, 2000.0, n).astype(np.float32)
    columns.update({f'{prefix}/alpha': np.ones(n, np.float32),
                    f'{prefix}/weight': np.zeros(n, np.float32),
                    f'{prefix}/pose_ess': np.zeros(n, np.float32),
                    f'{prefix}/shift_ess': np.zeros(n, np.float32),
                    f'{prefix}/class_posterior': posterior.astype(np.float32),
                    f'{prefix}/class': np.asarray(classes0, dtype=np.uint32),
                    f'{prefix}/class_ess': np.ones(n, np.float32)})
    for k in range(n_classes or 0):
        mine = np.asarray(classes0) == k
        columns[f'alignments_class_{k}/pose'] = columns[f'{prefix}/pose']
        columns[f'alignments_class_{k}/shift'] = columns[f'{prefix}/shift']
        columns[f'alignments_class_{k}/class_posterior'] = np.where(
            mine, posterior, (1.0 - posterior) / max(n_classes - 1, 1)).astype(np.float32)
    return join_fields(columns)


def join_fields(*parts):
    """One structured array from dicts of columns and structured arrays (same rows)."""
    columns = {}
    for part in parts:
        if isinstance(part, dict):
            columns.update(part)
        else:
            columns.update({name: part[name] for name in part.dtype.names})
    n = len(next(iter(columns.values())))
    dtype = [(name, v.dtype, v.shape[1:]) if v.ndim > 1 else (name, v.dtype)
             for name, v in ((name, np.asarray(v)) for name, v in columns.items())]
    out = np.empty(n, dtype=dtype)
    for name, values in columns.items():
        out[name] = values
    return out


def write_cs_job(project_dir, uid, job_type, results, parents=(), extra_files=()):
    """Write a job folder's ``.cs`` files and its ``job.json``.

    Parameters
    ----------
    results : list of (group, result name, passthrough, file name, array)
        One entry per result of an output group; entries sharing a file write it once.
        Listed in version order (the last file of a result is its final version).
    extra_files : list of (group, result name, file name)
        Results whose files are not ``.cs`` (maps), named in ``job.json`` only.
    """
    folder = Path(project_dir) / uid
    folder.mkdir(parents=True, exist_ok=True)
    written, output = set(), {}
    for group, name, passthrough, filename, array in results:
        if filename not in written:
            write_cs(folder / filename, array)
            written.add(filename)
        entry = output.setdefault((group, name), {
            'group_name': group, 'name': name, 'passthrough': bool(passthrough),
            'metafiles': [], 'num_items': [], 'versions': []})
        entry['metafiles'].append(f'{uid}/{filename}')
        entry['num_items'].append(len(array))
        entry['versions'].append(len(entry['versions']))
    for group, name, filename in extra_files:
        output[(group, name)] = {'group_name': group, 'name': name, 'passthrough': False,
                                 'metafiles': [f'{uid}/{filename}'], 'num_items': [1],
                                 'versions': [0]}
    document = {'uid': uid, 'project_uid': 'P1', 'type': job_type, 'status': 'completed',
                'parents': list(parents), 'output_results': list(output.values())}
    (folder / 'job.json').write_text(json.dumps(document, indent=1))
    return folder


def write_cryosparc_project(project_dir, relion_dir, table, optics, jobs, seed=0,
                            micrograph_shape=None, jitter_px=0.5, write_images=True):
    """Write a cryoSPARC project of the particles of a RELION table (module docstring).

    Parameters
    ----------
    project_dir : path
        The cryoSPARC project folder (created).
    relion_dir : path
        The RELION project the table's image names are relative to.
    table, optics : pandas.DataFrame
        RELION 3.1 particle rows (image, micrograph, coordinates, CTF, angles, origins).
    jobs : dict
        Job uid (``'J30'``) -> :class:`JobSpec`.
    micrograph_shape : (int, int), optional
        Micrograph ``(height, width)``; default: the largest coordinate plus a box, rounded
        up to 64 pixels.
    jitter_px : float
        Largest change of a re-extracted particle's position (pixels, each axis).
    write_images : bool
        Write J2's stacks and the import links (False: metadata only, for benchmarks).

    Returns
    -------
    CryosparcProject
    """
    project_dir, relion_dir = Path(project_dir), Path(relion_dir)
    project_dir.mkdir(parents=True, exist_ok=True)
    (project_dir / 'project.json').write_text(json.dumps({'uid': 'P1', 'title': 'simulated'}))
    rng = np.random.default_rng(seed)
    table = table.reset_index(drop=True)
    box = int(optics['rlnImageSize'].iloc[0])
    if micrograph_shape is None:
        largest = max(table['rlnCoordinateX'].max(), table['rlnCoordinateY'].max()) + box
        micrograph_shape = (int(np.ceil(largest / 64) * 64),) * 2
    out = CryosparcProject(project_dir)
    particles = {IMPORT_JOB: _import_job(project_dir, relion_dir, table, optics, rng,
                                         micrograph_shape, write_images, out),
                 EXTRACT_JOB: _extract_job(project_dir, relion_dir, table, optics, rng,
                                           micrograph_shape, jitter_px, write_images, out)}
    psize = float(optics['rlnImagePixelSize'].iloc[0])
    for offset, (uid, spec) in enumerate(jobs.items()):
        _classification_job(project_dir, uid, spec, table, particles[spec.particles_from],
                            psize, np.random.default_rng(seed + 1000 + offset), out)
    return out


def _import_job(project_dir, relion_dir, table, optics, rng, shape, write_images, out):
    uids = _uids(rng, len(table))
    index, stacks = parse_image_names(table['rlnImageName'])
    names = {}
    for stack in pd.unique(pd.Series(stacks)):
        link = f'{IMPORT_JOB}/imported/{int(_uids(rng, 1)[0]):021d}_{Path(stack).stem}.mrcs'
        names[stack] = link
        if write_images:
            (project_dir / link).parent.mkdir(parents=True, exist_ok=True)
            target = os.path.relpath((relion_dir / stack).resolve(),
                                     (project_dir / link).parent.resolve())
            if (project_dir / link).is_symlink():
                (project_dir / link).unlink()
            os.symlink(target, project_dir / link)
    rows = particle_rows(table, optics, uids, [names[s] for s in stacks],
                         np.asarray(index) - 1, table['rlnMicrographName'], shape, flip_y=True)
    write_cs_job(project_dir, IMPORT_JOB, 'import_particles',
                 [('imported_particles', r, False, 'imported_particles.cs', rows)
                  for r in ('blob', 'ctf', 'location')])
    out.uids[IMPORT_JOB] = uids
    return rows


def _extract_job(project_dir, relion_dir, table, optics, rng, shape, jitter_px, write_images,
                 out):
    n = len(table)
    uids = _uids(rng, n)
    mics = table['rlnMicrographName'].astype(str).to_numpy()
    mic_codes, mic_names = pd.factorize(pd.Series(mics))
    mic_uids = _uids(rng, len(mic_names))
    cs_mics = np.array([f'S1/motioncorrected/{int(u):021d}_{Path(m).stem}_patch_aligned_'
                        f'doseweighted.mrc' for u, m in zip(mic_uids, mic_names)])
    stacks = np.array([f'{EXTRACT_JOB}/extract/{int(u):021d}_{Path(m).stem}_patch_aligned_'
                       f'doseweighted_particles.mrc' for u, m in zip(mic_uids, mic_names)])
    shifted = table.copy()
    jitter = rng.uniform(-jitter_px, jitter_px, (n, 2))
    shifted['rlnCoordinateX'] = table['rlnCoordinateX'] + jitter[:, 0]
    shifted['rlnCoordinateY'] = table['rlnCoordinateY'] + jitter[:, 1]
    index = np.zeros(n, dtype=np.int64)
    images = _relion_images(relion_dir, table) if write_images else None
    psize = float(optics['rlnImagePixelSize'].iloc[0])
    for code in range(len(mic_names)):
        members = rng.permutation(np.flatnonzero(mic_codes == code))
        index[members] = np.arange(len(members))
        if images is not None:
            stack = np.empty((len(members),) + images.shape[1:], dtype=np.float32)
            stack[index[members]] = images[members]
            (project_dir / stacks[code]).parent.mkdir(parents=True, exist_ok=True)
            write_stack(project_dir / stacks[code], stack, psize)
    rows = particle_rows(shifted, optics, uids, stacks[mic_codes], index, cs_mics[mic_codes],
                         shape, flip_y=False, micrograph_uids=mic_uids)
    write_cs_job(project_dir, EXTRACT_JOB, 'extract_micrographs_multi',
                 [('particles', r, False, 'extracted_particles.cs', rows)
                  for r in ('blob', 'ctf', 'location')], parents=['S1'])
    out.uids[EXTRACT_JOB] = uids
    return rows


def _relion_images(relion_dir, table):
    import mrcfile
    index, stacks = parse_image_names(table['rlnImageName'])
    images, opened = [], {}
    for i, stack in zip(index, stacks):
        if stack not in opened:
            with mrcfile.open(relion_dir / stack, permissive=True) as mrc:
                opened[stack] = np.asarray(mrc.data, dtype=np.float32).reshape(
                    -1, *mrc.data.shape[-2:])
        images.append(opened[stack][i - 1])
    return np.stack(images)


def _classification_job(project_dir, uid, spec, table, base, psize, rng, out):
    group, digits, is_2d = JOB_TYPES[spec.job_type]
    labels = np.asarray(spec.labels, dtype=np.int64)
    n_classes = int(labels.max()) if spec.class_maps is None else len(spec.class_maps)
    order = rng.permutation(len(table))            # rows of the job's files
    align_psize = psize * (2.0 if spec.job_type == 'hetero_refine' else 1.0)
    prefix = 'alignments2D' if is_2d else 'alignments3D'
    earlier = np.where(rng.random(len(table)) < 0.5, rng.integers(1, n_classes + 1,
                                                                  len(table)), labels)
    results, stem = [], f'{uid}_{{:0{digits}d}}_particles.cs'
    for iteration, classes in ((spec.iteration // 2, earlier), (spec.iteration, labels)):
        main = join_fields({'uid': base['uid'][order]}, alignment_rows(
            table.iloc[order], classes[order] - 1, prefix, align_psize,
            n_classes=n_classes if spec.job_type == 'hetero_refine' else None,
            seed=int(rng.integers(1 << 31))))
        results.append((group, prefix, False, stem.format(iteration), main))
    passthrough_name = f'{uid}_{_PASSTHROUGH[group]}.cs'
    passthrough = base[rng.permutation(len(table))] if spec.job_type == 'class_3D' \
        else base[order]
    results += [(group, r, True, passthrough_name, passthrough)
                for r in ('blob', 'ctf', 'location')]
    extra = _write_class_maps(project_dir, uid, spec, psize, is_2d)
    write_cs_job(project_dir, uid, spec.job_type, results, parents=[spec.particles_from],
                 extra_files=extra)
    out.order[uid] = order
    out.files[uid] = (project_dir / uid / stem.format(spec.iteration),
                      project_dir / uid / passthrough_name)


def _write_class_maps(project_dir, uid, spec, psize, is_2d):
    if spec.class_maps is None:
        return []
    (Path(project_dir) / uid).mkdir(parents=True, exist_ok=True)
    maps = np.asarray(spec.class_maps, dtype=np.float32)
    if is_2d:
        name = f'{uid}_{spec.iteration:03d}_class_averages.mrc'
        write_stack(project_dir / uid / name, maps, psize)
        return [('class_averages', 'blob', name)]
    extra = []
    for k, volume in enumerate(maps):
        name = f'{uid}_class_{k:02d}_{spec.iteration:05d}_volume.mrc'
        write_map(project_dir / uid / name, volume, psize)
        extra.append((f'volume_class_{k}', 'map', name))
    return extra


def demo_with_cryosparc(root, jobs, n_particles=90, seed=0, cryosparc_seed=0):
    """The demo RELION project (:func:`..dataset.build_demo_project`, one micrograph, two
    iterations) in ``root/relion`` and a cryoSPARC project of its particles in ``root/P12``.

    Parameters
    ----------
    jobs : dict
        cryoSPARC job (``'J30'``) -> ``(job type, RELION job whose final classes it gets,
        'J1' or 'J2')``, e.g. ``{'J30': ('hetero_refine', 'Class3D/job085', 'J1')}``.
        3D jobs get class volumes (the true maps averaged over each class's particles).

    Returns
    -------
    demo : DemoDataset
    particles : ParticlesStar
        The demo's particle STAR (``particles``, ``optics`` tables).
    project : CryosparcProject
    """
    from ..formats.star import read_particles_star
    from .dataset import CLASS3D_JOBS, build_demo_project
    from .relion_jobs import class_average_maps
    root = Path(root)
    demo = build_demo_project(root / 'relion', seed=seed, n_particles=n_particles,
                              n_iterations=2, n_micrographs=1)
    star = read_particles_star(demo.particles_star)
    specs = {}
    for uid, (job_type, relion_job, source) in jobs.items():
        labels = demo.labels[relion_job]
        maps = None if JOB_TYPES[job_type][2] or relion_job not in CLASS3D_JOBS else \
            class_average_maps(demo.maps, demo.true_states, labels,
                               CLASS3D_JOBS[relion_job]['n_classes'])
        specs[uid] = JobSpec(job_type, labels, source, class_maps=maps)
    project = write_cryosparc_project(root / 'P12', root / 'relion', star.particles,
                                      star.optics, specs, seed=cryosparc_seed)
    return demo, star, project
