"""RELION 3.1 Class3D / Class2D job folders with known class assignments.

:func:`write_classification_job` writes what ``relion_refine`` leaves in a classification job
folder (``run_itNNN_data.star``, ``_model.star``, ``_optimiser.star``, ``_sampling.star``, class
maps, ``job.star``, ``note.txt``), with block and column names as RELION 3.1 writes them. The
class numbers start random at iteration 0 and converge to the given labels at the last
iteration; every particle keeps its final class from its own settling iteration on, so the
fraction of changed classes decreases. :func:`noisy_labels` derives such labels from true
states with a documented amount of disagreement.

Not written: the two ``# RELION optimiser`` comment lines at the top of the optimiser STAR (the
command line is in ``note.txt``), the per-group noise spectra (``data_model_group_N``), the
3D orientation distributions (``data_model_pdf_orient_class_N``), ``data_sampling_directions``,
``default_pipeline.star`` and ``job_pipeline.star``.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.transform import Rotation

from ..formats.mrc import write_map, write_stack
from ..formats.star import write_star
from .molecule import molecule_maps
from .particles import DEFAULT_STAR, FourierProjector, optics_table, relion_matrices

#: RELION 3.1 job type numbers.
JOB_TYPES = {'2D': 8, '3D': 9}
#: Fixed date in ``note.txt`` (keeps the output deterministic).
NOTE_DATE = 'Mon Jan  1 00:00:00 2024'
#: Initial low-pass filter of the references, in Å (RELION's ``--ini_high``).
INITIAL_RESOLUTION_A = 60.0


def noisy_labels(true_states, n_classes, mapping=None, flip_fraction=0.0, seed=0):
    """Class numbers that follow the true states, with a known amount of disagreement.

    Exact behaviour:

    1. Every particle of state ``s`` gets class ``mapping[s]``. When ``mapping[s]`` is a
       sequence of ``c`` classes, the particles of state ``s`` are put in a random order and
       split into ``c`` consecutive parts of sizes differing by at most one (larger parts
       first, as ``numpy.array_split``); part ``j`` gets ``mapping[s][j]``.
    2. Exactly ``round(flip_fraction * n)`` particles, chosen uniformly without replacement,
       are moved to a class drawn uniformly among the ``n_classes - 1`` other classes.

    So every particle not chosen in step 2 has the class that step 1 gives it, and every
    chosen particle has a different one.

    Parameters
    ----------
    true_states : array-like of int
        ``(n,)`` state per particle.
    n_classes : int
        Number of classes ``K``; class numbers are ``1..K``.
    mapping : dict or sequence, optional
        State -> class number or sequence of class numbers. Default: state ``s`` -> ``s + 1``.
    flip_fraction : float
        Fraction of particles reassigned at random, in ``[0, 1]``.
    seed : int
        Seed of the random choices.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` int64 class numbers in ``1..n_classes``.
    """
    states = np.asarray(true_states, dtype=np.int64)
    if mapping is None:
        mapping = {s: s + 1 for s in np.unique(states)}
    elif not isinstance(mapping, dict):
        mapping = dict(enumerate(mapping))
    if not 0.0 <= flip_fraction <= 1.0:
        raise ValueError(f'flip_fraction must be in [0, 1], got {flip_fraction}')
    if flip_fraction > 0 and n_classes < 2:
        raise ValueError('reassigning particles needs at least 2 classes')
    rng = np.random.default_rng(seed)
    labels = np.zeros(len(states), dtype=np.int64)
    for state in np.unique(states):
        if state not in mapping:
            raise ValueError(f'state {state} has no class in mapping {mapping}')
        targets = np.atleast_1d(mapping[state]).astype(np.int64)
        if np.any((targets < 1) | (targets > n_classes)):
            raise ValueError(f'mapping of state {state} to {targets.tolist()} is outside '
                             f'1..{n_classes}')
        members = rng.permutation(np.flatnonzero(states == state))
        for part, target in zip(np.array_split(members, len(targets)), targets):
            labels[part] = target
    n_flip = int(round(flip_fraction * len(states)))
    flipped = rng.choice(len(states), size=n_flip, replace=False)
    offsets = rng.integers(1, n_classes, size=n_flip)
    labels[flipped] = (labels[flipped] - 1 + offsets) % n_classes + 1
    return labels


def class_average_maps(maps, true_states, labels, n_classes=None):
    """Class maps as the membership-weighted average of the true state maps.

    Class ``k``'s map is ``sum_s f(s | k) maps[s]``, ``f(s | k)`` being the fraction of the
    class's particles in state ``s``; an empty class gets the mean of all particles' maps.

    Returns
    -------
    numpy.ndarray
        ``(n_classes, box, box, box)`` float32.
    """
    maps = np.asarray(maps, dtype=np.float64)
    states = np.asarray(true_states, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = int(n_classes or labels.max())
    counts = np.zeros((n_classes, len(maps)))
    np.add.at(counts, (labels - 1, states), 1.0)
    overall = np.bincount(states, minlength=len(maps)).astype(np.float64)
    empty = counts.sum(axis=1) == 0
    counts[empty] = overall
    weights = counts / counts.sum(axis=1, keepdims=True)
    return np.tensordot(weights, maps, axes=1).astype(np.float32)


def view_classes(angles, n_classes, seed=0):
    """2D classes by viewing direction: each particle goes to the nearest of ``n_classes``.

    The reference directions are a Fibonacci lattice on the sphere turned by a random
    rotation; a particle's direction is ``A[2, :]`` (the beam direction in the map's frame).

    Returns
    -------
    labels : numpy.ndarray
        ``(n,)`` class numbers ``1..n_classes``.
    directions : numpy.ndarray
        ``(n_classes, 3)`` unit reference directions.
    """
    i = np.arange(n_classes) + 0.5
    polar = np.arccos(1.0 - 2.0 * i / n_classes)
    azimuth = np.pi * (1.0 + 5 ** 0.5) * i
    lattice = np.column_stack([np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth),
                               np.cos(polar)])
    directions = Rotation.random(random_state=np.random.default_rng(seed)).apply(lattice)
    beams = relion_matrices(angles)[:, 2, :]
    return np.argmax(beams @ directions.T, axis=1) + 1, directions


def class_average_images(maps, true_states, labels, directions):
    """2D class averages: the class's membership-weighted map projected along its direction.

    Returns
    -------
    numpy.ndarray
        ``(n_classes, box, box)`` float32, no CTF (RELION's class averages are CTF-corrected).
    """
    directions = np.asarray(directions, dtype=np.float64)
    weighted = class_average_maps(maps, true_states, labels, len(directions))
    tilt = np.degrees(np.arccos(np.clip(directions[:, 2], -1.0, 1.0)))
    rot = np.degrees(np.arctan2(directions[:, 1], directions[:, 0]))
    matrices = relion_matrices(np.column_stack([rot, tilt, np.zeros_like(rot)]))
    return np.stack([FourierProjector(m).project(a[None])[0]
                     for m, a in zip(weighted, matrices)]).astype(np.float32)


def write_classification_job(project_dir, job_path, particles_metadata, labels, *,
                             n_iterations=25, kind='3D', class_maps=None, n_classes=None,
                             pixel_size=None, optics=None, seed=0, write_every=1,
                             continue_from=None, input_star=DEFAULT_STAR):
    """Write a RELION 3.1 Class3D or Class2D job folder whose last iteration has ``labels``.

    Parameters
    ----------
    project_dir : str or os.PathLike
        The RELION project directory.
    job_path : str
        Job folder relative to it, e.g. ``'Class3D/job085'``.
    particles_metadata : pandas.DataFrame
        RELION particle rows (with ``rlnImageName``), as in the input particles STAR.
    labels : array-like of int
        ``(n,)`` final class numbers ``1..K``.
    n_iterations : int
        Last iteration; iterations ``0..n_iterations`` are simulated.
    kind : {'3D', '2D'}
        Class3D (maps ``run_itNNN_classKKK.mrc``) or Class2D (``run_itNNN_classes.mrcs``).
    class_maps : numpy.ndarray, optional
        Final class maps ``(K, box, box, box)`` (3D) or averages ``(K, box, box)`` (2D),
        written as they are at the last iteration (earlier ones are low-pass filtered).
        Default: the synthetic molecule in ``K`` conformations (3D), or one conformation seen
        from ``K`` directions (2D).
    n_classes : int, optional
        ``K``; default ``len(class_maps)``, else ``max(labels)``.
    pixel_size : float, optional
        Å per pixel; default from ``optics``.
    optics : pandas.DataFrame, optional
        ``data_optics`` table; default one group from ``pixel_size`` and the box size.
    seed : int
        Seed of the simulated convergence.
    write_every : int
        Write iterations that are multiples of this (the last one is always written).
    continue_from : int, optional
        Simulate a run stopped after this iteration and continued: later iterations are
        named ``run_ct{continue_from}_itNNN_*`` as RELION names them.
    input_star : str
        Input particles STAR named in ``job.star`` and ``note.txt``.

    Returns
    -------
    pathlib.Path
        The data STAR of the last iteration.
    """
    if kind not in JOB_TYPES:
        raise ValueError(f"kind must be '3D' or '2D', got {kind!r}")
    particles = particles_metadata.reset_index(drop=True)
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(particles):
        raise ValueError(f'{len(labels)} labels for {len(particles)} particles')
    if 'rlnImageName' not in particles:
        raise ValueError('particles_metadata has no rlnImageName column')
    if n_iterations < 1:
        raise ValueError(f'n_iterations must be at least 1, got {n_iterations}')
    if continue_from is not None and not 0 < continue_from < n_iterations:
        raise ValueError(f'continue_from must be between 1 and {n_iterations - 1}')
    n_classes = int(n_classes or (len(class_maps) if class_maps is not None else labels.max()))
    if labels.min() < 1 or labels.max() > n_classes:
        raise ValueError(f'labels must be class numbers 1..{n_classes}')

    if optics is None:
        if pixel_size is None or class_maps is None:
            raise ValueError('give optics, or pixel_size and class_maps')
        optics = optics_table(pixel_size, np.shape(class_maps)[-1])
    pixel_size = float(pixel_size or optics['rlnImagePixelSize'].iloc[0])
    box = int(np.shape(class_maps)[-1] if class_maps is not None
              else optics['rlnImageSize'].iloc[0])
    if class_maps is None:
        class_maps = _default_class_maps(kind, n_classes, box, pixel_size, seed)
    class_maps = np.asarray(class_maps, dtype=np.float32)
    expected = (n_classes,) + (box,) * (3 if kind == '3D' else 2)
    if class_maps.shape != expected:
        raise ValueError(f'class_maps must have shape {expected}, got {class_maps.shape}')

    project_dir = Path(project_dir)
    job_dir = project_dir / job_path
    job_dir.mkdir(parents=True, exist_ok=True)
    run = _RunSimulation(particles, labels, n_classes, n_iterations, kind, pixel_size, box, seed)
    written = sorted(set(range(0, n_iterations + 1, max(1, int(write_every))))
                     | {n_iterations} | ({continue_from} if continue_from else set()))
    job = job_path.rstrip('/')
    last = None
    for it in written:
        root = (f'{job}/run_ct{continue_from}' if continue_from and it > continue_from
                else f'{job}/run')
        stem = f'{root}_it{it:03d}'
        maps = run.class_maps(class_maps, it)
        if kind == '3D':
            images = [f'{stem}_class{k + 1:03d}.mrc' for k in range(n_classes)]
            for name, volume in zip(images, maps):
                write_map(project_dir / name, volume, pixel_size)
        else:
            write_stack(project_dir / f'{stem}_classes.mrcs', maps, pixel_size)
            images = [f'{k + 1:06d}@{stem}_classes.mrcs' for k in range(n_classes)]
        write_star(project_dir / f'{stem}_data.star',
                   {'optics': optics, 'particles': run.data_table(it)})
        write_star(project_dir / f'{stem}_model.star', run.model_blocks(it, maps, images))
        write_star(project_dir / f'{stem}_sampling.star', {'sampling_general': run.sampling(it)})
        write_star(project_dir / f'{stem}_optimiser.star',
                   {'optimiser_general': run.optimiser(it, root, stem, input_star)})
        last = project_dir / f'{stem}_data.star'
    _write_job_files(job_dir, job, kind, n_classes, n_iterations, input_star, continue_from,
                     pixel_size, box)
    return last


def _default_class_maps(kind, n_classes, box, pixel_size, seed):
    """Synthetic class maps when none are given (see :func:`write_classification_job`)."""
    if kind == '3D':
        return molecule_maps(n_classes, box, pixel_size, seed)
    volume = molecule_maps(1, box, pixel_size, seed)
    _, directions = view_classes(np.zeros((1, 3)), n_classes, seed)
    return class_average_images(volume, np.zeros(1, dtype=int), np.ones(1, dtype=int),
                                directions)


class _RunSimulation:
    """Per-iteration assignments, alignments and statistics of a simulated classification."""

    def __init__(self, particles, labels, n_classes, n_iterations, kind, pixel_size, box, seed):
        self.particles, self.labels, self.k = particles, labels, n_classes
        self.n_iter, self.kind, self.apix, self.box = n_iterations, kind, pixel_size, box
        rng = np.random.default_rng(seed)
        n = len(labels)
        # Particle i keeps its final class from iteration settle[i] on (most settle early).
        self.settle = np.maximum(1, np.ceil((n_iterations - 1) * rng.random(n) ** 3)).astype(int)
        self.history = np.empty((n_iterations + 1, n), dtype=np.int64)
        for it in range(n_iterations + 1):
            random_classes = rng.integers(1, n_classes + 1, n)
            self.history[it] = np.where(it >= self.settle, labels, random_classes)

        self.final_angles = np.column_stack([
            particles[c].to_numpy(dtype=np.float64) if c in particles else np.zeros(n)
            for c in ('rlnAngleRot', 'rlnAngleTilt', 'rlnAnglePsi')])
        self.final_offsets = np.column_stack([
            particles[c].to_numpy(dtype=np.float64) if c in particles else np.zeros(n)
            for c in ('rlnOriginXAngst', 'rlnOriginYAngst')])
        if kind == '2D':
            self.final_angles[:, :2] = 0.0
        final_rotation = Rotation.from_euler('ZYZ', self.final_angles, degrees=True)
        self.angles, self.offsets, self.rotations = [], [], []
        for it in range(n_iterations + 1):
            spread = (1.0 - it / n_iterations) ** 2
            if it == n_iterations:
                angles, rotation = self.final_angles, final_rotation
            elif kind == '3D':
                wobble = Rotation.from_rotvec(np.deg2rad(20.0 * spread) * rng.normal(size=(n, 3)))
                rotation = final_rotation * wobble
                angles = rotation.as_euler('ZYZ', degrees=True)
            else:
                angles = self.final_angles.copy()
                psi = angles[:, 2] + 20.0 * spread * rng.normal(size=n)
                angles[:, 2] = (psi + 180.0) % 360.0 - 180.0
                rotation = Rotation.from_euler('ZYZ', angles, degrees=True)
            self.angles.append(angles)
            self.rotations.append(rotation)
            self.offsets.append(self.final_offsets
                                + 1.5 * pixel_size * spread * rng.normal(size=(n, 2)))

        self.pmax_base = rng.beta(5.0, 1.5, n)
        self.unsettled_pmax = rng.uniform(1.0 / n_classes, 0.5, (n_iterations + 1, n))
        self.loglik_base = rng.normal(10500.0, 60.0, n)
        self.norm = rng.normal(0.85, 0.03, n)
        self.perturb = rng.uniform(-0.5, 0.5, n_iterations + 1)
        self.group_scale = rng.normal(1.0, 0.04, 1 + int(self._groups().max()))
        self.change_table = np.full((n_iterations + 1, 3), 999.0)
        for it in range(1, n_iterations + 1):
            turn = (self.rotations[it - 1].inv() * self.rotations[it]).magnitude()
            moved = np.linalg.norm(self.offsets[it] - self.offsets[it - 1], axis=1)
            changed = self.history[it] != self.history[it - 1]
            self.change_table[it] = np.degrees(turn).mean(), moved.mean(), changed.mean()

    # ---------------------------------------------------------------- per particle
    def pmax(self, it):
        settled = it >= self.settle
        ramp = 1.0 - 0.5 * np.exp(-(it - self.settle) / 3.0)
        return np.where(settled, self.pmax_base * ramp, self.unsettled_pmax[it]).clip(1e-3, 1.0)

    def data_table(self, it):
        """The input particle rows with this iteration's alignment and class."""
        columns = {c: self.particles[c].to_numpy() for c in self.particles.columns}
        angles, offsets, pmax = self.angles[it], self.offsets[it], self.pmax(it)
        columns.update({
            'rlnAngleRot': angles[:, 0], 'rlnAngleTilt': angles[:, 1],
            'rlnAnglePsi': angles[:, 2],
            'rlnOriginXAngst': offsets[:, 0], 'rlnOriginYAngst': offsets[:, 1],
            'rlnClassNumber': self.history[it],
            'rlnNormCorrection': self.norm,
            'rlnLogLikeliContribution': self.loglik_base + 50.0 * it / self.n_iter,
            'rlnMaxValueProbDistribution': pmax,
            'rlnNrOfSignificantSamples': (1 + np.round(-40.0 * np.log(pmax))).astype(np.int64),
        })
        return pd.DataFrame(columns)

    # ---------------------------------------------------------------- per iteration
    def resolution(self, it):
        """Current resolution in Å: from ``INITIAL_RESOLUTION_A`` towards 1.25 x Nyquist."""
        best = 2.5 * self.apix
        start = max(INITIAL_RESOLUTION_A, 2.0 * best)
        return best + (start - best) * np.exp(-it / 4.0)

    def class_maps(self, final_maps, it):
        """The references at iteration ``it``: low-pass filtered, classes emerging gradually.

        The last iteration gives ``final_maps`` unchanged.
        """
        if it == self.n_iter:
            return final_maps
        weight = min(1.0, it / max(1.0, 0.3 * self.n_iter))
        mixed = (1.0 - weight) * final_maps.mean(axis=0) + weight * final_maps
        return _low_pass(mixed, self.apix, self.resolution(it)).astype(np.float32)

    def _groups(self):
        if 'rlnGroupNumber' in self.particles:
            return self.particles['rlnGroupNumber'].to_numpy(dtype=np.int64)
        return np.ones(len(self.particles), dtype=np.int64)

    def model_blocks(self, it, maps, images):
        n = len(self.labels)
        counts = np.bincount(self.history[it], minlength=self.k + 1)[1:]
        distribution = counts / max(n, 1)
        current = self.resolution(it)
        cut = max(1, int(np.floor(self.box * self.apix / current)))
        pmax = self.pmax(it)
        settling = min(1.0, it / max(1.0, 0.5 * self.n_iter))
        general = {
            'rlnReferenceDimensionality': 3 if self.kind == '3D' else 2,
            'rlnDataDimensionality': 2,
            'rlnOriginalImageSize': self.box,
            'rlnCurrentResolution': float(current),
            'rlnCurrentImageSize': int(min(self.box, 2 * (cut + 1))),
            'rlnPaddingFactor': 2.0,
            'rlnIsHelix': 0,
            'rlnFourierSpaceInterpolator': 1,
            'rlnMinRadiusNnInterpolation': 10,
            'rlnPixelSize': self.apix,
            'rlnNrClasses': self.k,
            'rlnNrBodies': 1,
            'rlnNrGroups': len(np.unique(self._groups())),
            'rlnTau2FudgeFactor': 4.0 if self.kind == '3D' else 2.0,
            'rlnNormCorrectionAverage': float(self.norm.mean()),
            'rlnSigmaOffsetsAngst': float(2.0 * self.apix * (1.0 + 0.5 * (1.0 - settling))),
            'rlnOrientationalPriorMode': 0,
            'rlnSigmaPriorRotAngle': 0.0,
            'rlnSigmaPriorTiltAngle': 0.0,
            'rlnSigmaPriorPsiAngle': 0.0,
            'rlnLogLikelihood': float(np.sum(self.loglik_base + 50.0 * it / self.n_iter)),
            'rlnAveragePmax': float(pmax.mean()),
        }
        typical = n / self.k
        kept = counts > 0.01 * n
        spread = np.sqrt(typical / np.maximum(counts, 1)) * (1.5 - settling)
        accuracy_rot = np.where(kept, 2.0 + 3.0 * spread, 999.0)
        accuracy_trans = np.where(kept, 0.4 * accuracy_rot, 999.0)
        weights = counts / max(typical, 1.0)
        spectra = [self._spectral_table(volume, weight, cut)
                   for volume, weight in zip(maps, weights)]
        estimated = [self._estimated_resolution(table) for table in spectra]
        complete = np.clip(0.9 + 0.1 * np.minimum(1.0, weights) - 0.02 * (1.0 - settling), 0, 1)
        classes = pd.DataFrame({
            'rlnReferenceImage': images,
            'rlnClassDistribution': distribution,
            'rlnAccuracyRotations': accuracy_rot,
            'rlnAccuracyTranslationsAngst': accuracy_trans,
            'rlnEstimatedResolution': estimated,
            'rlnOverallFourierCompleteness': complete,
        })
        if self.kind == '2D':
            members = self.history[it]
            for axis, column in enumerate(('rlnClassPriorOffsetX', 'rlnClassPriorOffsetY')):
                sums = np.bincount(members, weights=self.offsets[it][:, axis],
                                   minlength=self.k + 1)
                classes[column] = sums[1:] / np.maximum(counts, 1)
        blocks = {'model_general': general, 'model_classes': classes}
        for k, table in enumerate(spectra):
            blocks[f'model_class_{k + 1}'] = table
        blocks.update(self._group_blocks())
        return blocks

    def _spectral_table(self, volume, weight, cut):
        """A class's ``data_model_class_N`` table: SSNR about 1 at shell ``cut`` for a class
        of average size (``weight`` = its size over the average)."""
        shells = np.arange(self.box // 2 + 1)
        power = _shell_power(volume, len(shells))
        ssnr = weight * power / max(power[min(cut, len(shells) - 1)], 1e-30)
        orientability = ssnr / (1.0 + ssnr) * shells ** 2
        return pd.DataFrame({
            'rlnSpectralIndex': shells,
            'rlnResolution': shells / (self.box * self.apix),
            'rlnAngstromResolution': np.where(shells > 0,
                                              self.box * self.apix / np.maximum(shells, 1), 999.0),
            'rlnSsnrMap': ssnr,
            'rlnGoldStandardFsc': np.zeros(len(shells)),
            'rlnFourierCompleteness': np.clip(1.0 - (shells - cut) / 3.0, 0.0, 1.0),
            'rlnReferenceSigma2': (1.0 + 0.2 * np.exp(-shells / 4.0)) / self.box ** 2,
            'rlnReferenceTau2': power * weight,
            'rlnSpectralOrientabilityContribution': orientability / max(orientability.sum(),
                                                                        1e-30),
        })

    def _estimated_resolution(self, table):
        """Resolution (Å) of the last shell with SSNR of at least 1."""
        above = np.flatnonzero(table['rlnSsnrMap'].to_numpy()[1:] >= 1.0) + 1
        return self.box * self.apix / (above.max() if above.size else 1)

    def _group_blocks(self):
        groups = self._groups()
        numbers, first, counts = np.unique(groups, return_index=True, return_counts=True)
        if 'rlnMicrographName' in self.particles:
            micrographs = self.particles['rlnMicrographName'].to_numpy()[first]
            names = [_group_name(m) for m in micrographs]
        else:
            names = [f'group_{g:03d}' for g in numbers]
        return {'model_groups': pd.DataFrame({
            'rlnGroupNumber': numbers,
            'rlnGroupName': names,
            'rlnGroupNrParticles': counts,
            'rlnGroupScaleCorrection': self.group_scale[numbers],
        })}

    def sampling(self, it):
        general = {'rlnIs3DSampling': int(self.kind == '3D'), 'rlnIs3DTranslationalSampling': 0}
        if self.kind == '3D':
            general.update({'rlnHealpixOrder': 2, 'rlnSymmetryGroup': 'C1',
                            'rlnTiltAngleLimit': -91.0, 'rlnPsiStep': 15.0})
        else:
            general['rlnPsiStep'] = 12.0
        general.update({'rlnOffsetRange': 5.0 * self.apix, 'rlnOffsetStep': 2.0 * self.apix,
                        'rlnHelicalOffsetStep': -1.0,
                        'rlnSamplingPerturbInstance': float(self.perturb[it]),
                        'rlnSamplingPerturbFactor': 0.5})
        return general

    def optimiser(self, it, root, stem, input_star):
        orientations, offsets, classes = (float(v) for v in self.change_table[it])
        smallest = self.change_table[1:it + 1].min(axis=0) if it else np.full(3, 999.0)
        best = 1.0 / self.resolution(it)
        accuracy = 2.0 + 10.0 * np.exp(-it / 5.0)
        return {
            'rlnOutputRootName': root,
            'rlnModelStarFile': f'{stem}_model.star',
            'rlnExperimentalDataStarFile': f'{stem}_data.star',
            'rlnOrientSamplingStarFile': f'{stem}_sampling.star',
            'rlnCurrentIteration': it,
            'rlnNumberOfIterations': self.n_iter,
            'rlnDoSplitRandomHalves': 0,
            'rlnJoinHalvesUntilThisResolution': -1.0,
            'rlnAdaptiveOversampleOrder': 1,
            'rlnAdaptiveOversampleFraction': 0.999,
            'rlnRandomSeed': 1564557917,
            'rlnParticleDiameter': float(0.8 * self.box * self.apix),
            'rlnWidthMaskEdge': 5,
            'rlnDoZeroMask': 1,
            'rlnDoSolventFlattening': 1,
            'rlnDoSolventFscCorrection': 0,
            'rlnSolventMaskName': 'None',
            'rlnSolventMask2Name': 'None',
            'rlnBodyStarFile': 'None',
            'rlnTauSpectrumName': 'None',
            'rlnMaximumCoarseImageSize': -1,
            'rlnHighresLimitExpectation': -1.0,
            'rlnLowresLimitExpectation': -1.0,
            'rlnIncrementImageSize': 10,
            'rlnDoMapEstimation': 1,
            'rlnDoFastSubsetOptimisation': 0,
            'rlnDoExternalReconstruct': 0,
            'rlnDoStochasticGradientDescent': 0,
            'rlnDoStochasticEM': 0,
            'rlnSgdInitialIterations': 50,
            'rlnSgdFinalIterations': 50,
            'rlnSgdInBetweenIterations': 200,
            'rlnSgdInitialResolution': 35.0,
            'rlnSgdFinalResolution': 15.0,
            'rlnSgdInitialSubsetSize': 100,
            'rlnSgdFinalSubsetSize': 500,
            'rlnSgdMuFactor': 0.0,
            'rlnSgdSigma2FudgeInitial': 8.0,
            'rlnSgdSigma2FudgeHalflife': -1,
            'rlnSgdSkipAnneal': 0,
            'rlnSgdSubsetSize': -1,
            'rlnSgdWriteEverySubset': 1,
            'rlnSgdStepsize': 0.5,
            'rlnDoAutoRefine': 0,
            'rlnAutoLocalSearchesHealpixOrder': 4,
            'rlnNumberOfIterWithoutResolutionGain': 0 if it < 3 else 1,
            'rlnBestResolutionThusFar': float(best),
            'rlnNumberOfIterWithoutChangingAssignments': int(np.sum(
                self.change_table[1:it + 1, 2] < 0.01)),
            'rlnDoSkipAlign': 0,
            'rlnDoSkipRotate': 0,
            'rlnOverallAccuracyRotations': float(accuracy),
            'rlnOverallAccuracyTranslationsAngst': float(0.4 * accuracy),
            'rlnChangesOptimalOrientations': orientations,
            'rlnChangesOptimalOffsets': offsets,
            'rlnChangesOptimalClasses': classes,
            'rlnSmallestChangesOrientations': float(smallest[0]),
            'rlnSmallestChangesOffsets': float(smallest[1]),
            'rlnSmallestChangesClasses': float(smallest[2]),
            'rlnLocalSymmetryFile': 'None',
            'rlnDoHelicalRefine': 0,
            'rlnIgnoreHelicalSymmetry': 0,
            'rlnFourierMask': 'None',
            'rlnHelicalTwistInitial': 0.0,
            'rlnHelicalRiseInitial': 0.0,
            'rlnHelicalCentralProportion': 0.3,
            'rlnHelicalMaskTubeInnerDiameter': -1.0,
            'rlnHelicalMaskTubeOuterDiameter': -1.0,
            'rlnHelicalSymmetryLocalRefinement': 0,
            'rlnHelicalSigmaDistance': -1.0,
            'rlnHelicalKeepTiltPriorFixed': 0,
            'rlnHasConverged': 0,
            'rlnHasHighFscAtResolLimit': 0,
            'rlnHasLargeSizeIncreaseIterationsAgo': 0,
            'rlnDoCorrectNorm': 1,
            'rlnDoCorrectScale': 1,
            'rlnDoCorrectCtf': 1,
            'rlnDoIgnoreCtfUntilFirstPeak': 0,
            'rlnCtfDataArePhaseFlipped': 0,
            'rlnDoOnlyFlipCtfPhases': 0,
            'rlnRefsAreCtfCorrected': 1,
            'rlnFixSigmaNoiseEstimates': 0,
            'rlnFixSigmaOffsetEstimates': 0,
            'rlnMaxNumberOfPooledParticles': 30,
        }


def _write_job_files(job_dir, job, kind, n_classes, n_iterations, input_star, continue_from,
                     pixel_size, box):
    """``job.star`` and ``note.txt`` as the RELION 3.1 GUI leaves them."""
    diameter = int(round(0.8 * box * pixel_size))
    options = {
        'ctf_intact_first_peak': 'No',
        'do_combine_thru_disc': 'No',
        'do_ctf_correction': 'Yes',
        'do_fast_subsets': 'No',
        'do_helix': 'No',
        'do_parallel_discio': 'Yes',
        'do_preread_images': 'Yes',
        'do_queue': 'No',
        'do_zero_mask': 'Yes',
        'dont_skip_align': 'Yes',
        'fn_cont': f'{job}/run_it{continue_from:03d}_optimiser.star' if continue_from else '',
        'fn_img': input_star,
        'gpu_ids': '',
        'nr_classes': str(n_classes),
        'nr_iter': str(n_iterations),
        'nr_mpi': '1',
        'nr_pool': '30',
        'nr_threads': '1',
        'offset_range': '5',
        'offset_step': '1',
        'other_args': '',
        'particle_diameter': str(diameter),
        'tau_fudge': '4' if kind == '3D' else '2',
        'use_gpu': 'No',
    }
    if kind == '3D':
        options.update({'ctf_corrected_ref': 'Yes', 'fn_mask': '', 'fn_ref': '',
                        'ini_high': f'{INITIAL_RESOLUTION_A:g}', 'ref_correct_greyscale': 'Yes',
                        'sampling': '7.5__degrees', 'sym_name': 'C1'})
    else:
        options.update({'do_bimodal_psi': 'Yes', 'psi_sampling': '6'})
    options = dict(sorted(options.items()))
    write_star(job_dir / 'job.star', {
        'job': {'rlnJobType': JOB_TYPES[kind], 'rlnJobIsContinue': int(bool(continue_from))},
        'joboptions_values': pd.DataFrame({'rlnJobOptionVariable': list(options),
                                           'rlnJobOptionValue': list(options.values())}),
    })
    command = (f'`which relion_refine` --o {job}/run --i {input_star} --pad 2 --ctf --iter '
               f'{n_iterations} --tau2_fudge {options["tau_fudge"]} --particle_diameter '
               f'{diameter} --K {n_classes} --flatten_solvent --zero_mask --oversampling 1 ')
    command += ('--healpix_order 2 --offset_range 5 --offset_step 2 --sym C1 '
                if kind == '3D' else '--psi_step 12 --offset_range 5 --offset_step 2 ')
    command += f'--norm --scale --j 1 --pipeline_control {job}/'
    text = _note_entry(command)
    if continue_from:
        text += _note_entry(f'`which relion_refine` --continue {job}/run_it{continue_from:03d}'
                            f'_optimiser.star --o {job}/run_ct{continue_from} --iter '
                            f'{n_iterations} --j 1 --pipeline_control {job}/')
    (job_dir / 'note.txt').write_text(text)


def _note_entry(command):
    return (f'\n ++++ Executing new job on {NOTE_DATE}\n ++++ with the following command(s): \n'
            f'{command}\n ++++ \n')


def _group_name(micrograph):
    """RELION's group name: the micrograph path without its ``Type/jobNNN/`` prefix."""
    parts = str(micrograph).split('/')
    return '/'.join(parts[2:]) if len(parts) > 2 and parts[1].startswith('job') else str(micrograph)


def _shell_power(image, n_shells):
    """Mean power of a map's (or image's) Fourier coefficients per integer-radius shell."""
    ft = np.abs(np.fft.fftn(image)) ** 2 / image.size
    grids = np.meshgrid(*[np.fft.fftfreq(n) * n for n in image.shape], indexing='ij')
    radius = np.rint(np.sqrt(sum(g ** 2 for g in grids))).astype(int).ravel()
    keep = radius < n_shells
    sums = np.bincount(radius[keep], weights=ft.ravel()[keep], minlength=n_shells)
    counts = np.bincount(radius[keep], minlength=n_shells)
    return sums / np.maximum(counts, 1)


def _low_pass(maps, pixel_size, resolution):
    """Low-pass filter each map (or image) with a raised-cosine edge at ``resolution`` Å."""
    axes = tuple(range(1, maps.ndim))
    shape = maps.shape[1:]
    grids = np.meshgrid(*[np.fft.fftfreq(n) for n in shape[:-1]], np.fft.rfftfreq(shape[-1]),
                        indexing='ij')
    frequency = np.sqrt(sum(g ** 2 for g in grids)) / pixel_size
    cutoff = 1.0 / resolution
    width = 0.2 * cutoff
    edge = np.clip((frequency - cutoff) / width + 0.5, 0.0, 1.0)
    filt = 0.5 * (1.0 + np.cos(np.pi * edge))
    return np.fft.irfftn(np.fft.rfftn(maps, axes=axes) * filt, s=shape, axes=axes)
