"""Cryo-ET particles: several tilt images of each particle, in RELION 5 / Warp conventions
as RECOVAR 1.0.5 reads them (its ``parse_relion5_tomo`` and tilt-series loader).

Geometry (RELION 5, as ``parse_relion5_tomo`` implements it): tilt image ``i`` of a tomogram
has the rotation ``T_i = Rz(ZRot) Ry(YTilt) Rx(XTilt)`` (rotation vectors about the axes, in
degrees); a particle with RELION matrix ``A`` (its orientation in the tomogram) is seen in that
image with the matrix ``T_i A``, and a particle at ``p`` (Å from the tomogram centre) lies at
the depth ``(T_i p)_z * hand``, which adds to the tilt image's defocus: the defocus varies
across the tilted image plane.

Each 2D image is ``scale_i * W(D_i) * CTF(defocus_i(p)) * projection`` plus white noise, with
``scale_i = cos(tilt_i)`` (RELION 5's ``rlnCtfScalefactor``), ``W`` the exposure filter of the
dose ``D_i`` received before the image (:func:`.ctf.dose_weights`) and the CTF in RELION's
sign. Tilts are acquired dose-symmetrically (0, +step, -step, +2 step, ...); the tilt-series
tables list them by tilt angle.

Writers give the particles as RECOVAR takes them:

- :func:`write_tilt_particle_star`: one 2D STAR row per tilt image (cryoDRGN-ET form: RELION 5
  ``rlnMicrographPreExposure`` or Warp ``rlnCtfBfactor = -4 dose``, ``rlnCtfScalefactor``,
  ``rlnGroupName`` naming the particle);
- :func:`write_relion5_project`: a RELION 5 tomography project (``tomograms.star``, one
  tilt-series STAR per tomogram, ``particles.star`` with 3D coordinates and 2D stacks).
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial.transform import Rotation

from ..formats.mrc import write_stack
from ..formats.relion import format_image_names
from ..formats.star import write_particles_star, write_star
from .ctf import ctf_stack, dose_weights
from .particles import FourierProjector, optics_table, relion_matrices

#: Tilt-image CTF/dose conventions of the 2D STAR (RECOVAR ``--tilt-series-ctf``).
CTF_RELION5, CTF_WARP = 'relion5', 'warp'
TOMOGRAMS_STAR = 'tomograms.star'
TILT_SERIES_DIR = 'tilt_series'
PARTICLES_STAR = 'particles.star'
STACKS_DIR = 'Subtomograms'


@dataclass
class SimulatedTiltSeries:
    """Tilt images of particles in tomograms, with their ground truth.

    Attributes
    ----------
    images : numpy.ndarray
        ``(n_particles, n_tilts, box, box)`` float32, tilts in :attr:`tilt_angles` order.
    states : numpy.ndarray
        ``(n_particles,)`` true conformation.
    angles : numpy.ndarray
        ``(n_particles, 3)`` RELION ``rot, tilt, psi`` of each particle in its tomogram.
    positions : numpy.ndarray
        ``(n_particles, 3)`` position from the tomogram centre, Å.
    tomograms : numpy.ndarray
        ``(n_particles,)`` tomogram index.
    tilt_angles : numpy.ndarray
        ``(n_tilts,)`` stage tilt (degrees, increasing), the rotation about y.
    pre_exposure : numpy.ndarray
        ``(n_tilts,)`` dose received before each tilt (e⁻/Å²).
    tilt_defocus : numpy.ndarray
        ``(n_tomograms, n_tilts, 3)`` DefocusU, DefocusV (Å), DefocusAngle of each tilt image.
    tilt_axis : float
        Rotation about z (``rlnTomoZRot``), degrees.
    hand : int
        ``rlnTomoHand``.
    pixel_size, voltage, cs, amplitude_contrast : float
    """

    images: np.ndarray
    states: np.ndarray
    angles: np.ndarray
    positions: np.ndarray
    tomograms: np.ndarray
    tilt_angles: np.ndarray
    pre_exposure: np.ndarray
    tilt_defocus: np.ndarray
    tilt_axis: float = 0.0
    hand: int = 1
    pixel_size: float = 6.0
    voltage: float = 300.0
    cs: float = 2.7
    amplitude_contrast: float = 0.1

    @property
    def n_particles(self):
        return self.images.shape[0]

    @property
    def n_tilts(self):
        return self.images.shape[1]

    @property
    def box(self):
        return self.images.shape[-1]

    @property
    def tilt_matrices(self):
        """``(n_tilts, 3, 3)`` RELION 5 ``T_i = Rz Ry Rx`` of the tilt images."""
        return tilt_rotations(self.tilt_angles, self.tilt_axis)

    @property
    def ctf_scale(self):
        """``(n_tilts,)`` RELION 5's ``rlnCtfScalefactor``: the cosine of the tilt."""
        return np.cos(np.deg2rad(self.tilt_angles))

    def image_matrices(self):
        """``(n_particles, n_tilts, 3, 3)`` RELION matrices of the 2D images: ``T_i A``."""
        return np.einsum('tij,pjk->ptik', self.tilt_matrices, relion_matrices(self.angles))

    def image_angles(self):
        """``(n_particles, n_tilts, 3)`` RELION ``rot, tilt, psi`` of the 2D images."""
        matrices = self.image_matrices().reshape(-1, 3, 3)
        angles = Rotation.from_matrix(matrices).inv().as_euler('ZYZ', degrees=True)
        return angles.reshape(self.n_particles, self.n_tilts, 3)

    def image_defocus(self):
        """``(n_particles, n_tilts, 3)`` defocus of each 2D image: the tilt's defocus plus
        the particle's depth in the tilted frame (``(T_i p)_z * hand``)."""
        depth = np.einsum('tj,pj->pt', self.tilt_matrices[:, 2, :], self.positions) * self.hand
        defocus = self.tilt_defocus[self.tomograms].copy()
        defocus[..., 0] += depth
        defocus[..., 1] += depth
        return defocus

    def particle_names(self):
        """``rlnTomoParticleName`` / ``rlnGroupName`` of every particle: ``TS_01/7``."""
        return np.array([f'{tomogram_name(t)}/{i + 1}' for i, t in enumerate(self.tomograms)])

    def optics(self):
        return optics_table(self.pixel_size, self.box, self.voltage, self.cs,
                            self.amplitude_contrast)


def tomogram_name(index):
    return f'TS_{index + 1:02d}'


def tilt_rotations(tilt_angles, tilt_axis=0.0, x_tilt=0.0):
    """RELION 5 tilt-image rotations ``Rz(tilt_axis) Ry(tilt) Rx(x_tilt)``: ``(n, 3, 3)``."""
    tilts = np.asarray(tilt_angles, dtype=np.float64)
    rz = Rotation.from_rotvec(np.deg2rad(tilt_axis) * np.array([0.0, 0.0, 1.0]))
    rx = Rotation.from_rotvec(np.deg2rad(x_tilt) * np.array([1.0, 0.0, 0.0]))
    return np.stack([(rz * Rotation.from_rotvec(np.deg2rad(t) * np.array([0.0, 1.0, 0.0])) * rx)
                     .as_matrix() for t in tilts])


def dose_symmetric_scheme(n_tilts, step, dose_per_tilt):
    """Tilt angles (increasing) and the dose received before each, for the dose-symmetric
    order 0, +step, -step, +2 step, -2 step, ...

    Returns
    -------
    tilt_angles, pre_exposure : numpy.ndarray
        ``(n_tilts,)`` each.
    """
    order = [0.0]
    k = 1
    while len(order) < n_tilts:
        order.append(k * step)
        if len(order) < n_tilts:
            order.append(-k * step)
        k += 1
    order = np.array(order)
    sort = np.argsort(order)
    return order[sort], (np.arange(n_tilts) * float(dose_per_tilt))[sort]


def simulate_tilt_series(maps, n_particles=120, n_tilts=6, tilt_step=15.0, dose_per_tilt=3.0,
                         particles_per_tomogram=40, tomogram_size=(2000.0, 2000.0, 600.0),
                         tilt_axis=85.0, pixel_size=6.0, snr=1.0,
                         defocus_range=(15000.0, 30000.0), state_probabilities=None,
                         voltage=300.0, cs=2.7, amplitude_contrast=0.1, seed=0):
    """Simulate the tilt images of particles in tomograms.

    Parameters
    ----------
    maps : numpy.ndarray
        ``(n_states, box, box, box)`` conformation maps.
    n_particles, n_tilts : int
    tilt_step : float
        Tilt increment (degrees) of the dose-symmetric scheme.
    dose_per_tilt : float
        e⁻/Å² per tilt image.
    particles_per_tomogram : int
    tomogram_size : tuple of float
        Extent (x, y, z) in Å of the positions; z is the ice thickness.
    tilt_axis : float
        ``rlnTomoZRot`` of every tilt (degrees).
    snr : float
        Variance of the noise-free images over the noise variance (all tilts together).
    defocus_range : tuple of float
        Range of the tomograms' mean defocus (Å); each tilt varies by ±200 Å around it.
    seed : int

    Returns
    -------
    SimulatedTiltSeries
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 4:
        raise ValueError(f'maps must have shape (n_states, box, box, box), got {maps.shape}')
    if n_tilts < 1 or n_particles < 1:
        raise ValueError('need at least one particle and one tilt')
    if not snr > 0:
        raise ValueError(f'snr must be positive, got {snr}')
    n_states, box = maps.shape[0], maps.shape[-1]
    probabilities = (np.full(n_states, 1.0 / n_states) if state_probabilities is None
                     else np.asarray(state_probabilities, float) / np.sum(state_probabilities))
    rng = np.random.default_rng(seed)
    states = rng.choice(n_states, size=n_particles, p=probabilities)
    angles = Rotation.random(n_particles, random_state=rng).as_euler('ZYZ', degrees=True)
    tomograms = np.arange(n_particles) // int(particles_per_tomogram)
    n_tomograms = int(tomograms[-1]) + 1
    positions = rng.uniform(-0.5, 0.5, (n_particles, 3)) * np.asarray(tomogram_size)
    tilt_angles, pre_exposure = dose_symmetric_scheme(n_tilts, tilt_step, dose_per_tilt)
    mean = rng.uniform(*defocus_range, n_tomograms)[:, None] + rng.uniform(-200, 200,
                                                                           (n_tomograms, n_tilts))
    astigmatism = rng.uniform(0.0, 400.0, (n_tomograms, 1)) * np.ones((1, n_tilts))
    astig_angle = rng.uniform(0.0, 180.0, (n_tomograms, 1)) * np.ones((1, n_tilts))
    tilt_defocus = np.stack([mean + astigmatism / 2, mean - astigmatism / 2, astig_angle], -1)

    sim = SimulatedTiltSeries(
        images=np.empty((n_particles, n_tilts, box, box), np.float32), states=states,
        angles=angles, positions=positions, tomograms=tomograms, tilt_angles=tilt_angles,
        pre_exposure=pre_exposure, tilt_defocus=tilt_defocus, tilt_axis=float(tilt_axis),
        pixel_size=float(pixel_size), voltage=float(voltage), cs=float(cs),
        amplitude_contrast=float(amplitude_contrast))
    clean = _clean_images(sim, maps)
    sigma = np.sqrt(clean.var(axis=(-2, -1)).mean() / snr)
    sim.images[:] = clean + rng.normal(0.0, sigma, clean.shape)
    return sim


def _clean_images(sim, maps):
    """Noise-free tilt images: projection, CTF at the particle's depth, dose filter, scale."""
    matrices = sim.image_matrices()
    defocus = sim.image_defocus()
    weights = (dose_weights(sim.box, sim.pixel_size, sim.pre_exposure, sim.voltage)
               * sim.ctf_scale[:, None, None])
    clean = np.empty(sim.images.shape)
    for state in np.unique(sim.states):
        projector = FourierProjector(maps[state])
        for p in np.flatnonzero(sim.states == state):
            ft = projector.project_ft(matrices[p])
            ft *= ctf_stack(sim.box, sim.pixel_size, defocus[p], sim.voltage, sim.cs,
                            sim.amplitude_contrast) * weights
            clean[p] = projector.image_from_ft(ft)
    return clean


# ------------------------------------------------------------------ writers

def stack_name(sim, particle):
    """RELION 5's 2D stack of one particle (its tilt images), relative to the project."""
    return (f'{STACKS_DIR}/{tomogram_name(sim.tomograms[particle])}/'
            f'{particle + 1}_stack2d.mrcs')


def write_stacks(outdir, sim):
    """One stack per particle (its tilts in tilt-angle order), as RELION 5's Extract writes."""
    outdir = Path(outdir)
    for p in range(sim.n_particles):
        path = outdir / stack_name(sim, p)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_stack(path, sim.images[p], sim.pixel_size)


def tilt_particle_table(sim, ctf_model=CTF_RELION5):
    """The 2D particle rows (one per tilt image), cryoDRGN-ET form, particle after particle.

    ``ctf_model`` ``'relion5'`` gives the dose as ``rlnMicrographPreExposure``, ``'warp'``
    as ``rlnCtfBfactor = -4 dose`` (what RECOVAR reads for each model); both give
    ``rlnCtfScalefactor`` (cosine of the tilt) and ``rlnGroupName`` (the particle).
    """
    if ctf_model not in (CTF_RELION5, CTF_WARP):
        raise ValueError(f'ctf_model must be {CTF_RELION5!r} or {CTF_WARP!r}')
    n, t = sim.n_particles, sim.n_tilts
    angles = sim.image_angles().reshape(-1, 3)
    defocus = sim.image_defocus().reshape(-1, 3)
    names = np.repeat([stack_name(sim, p) for p in range(n)], t)
    tilt_index = np.tile(np.arange(t), n)
    table = pd.DataFrame({
        'rlnImageName': format_image_names(tilt_index + 1, names),
        'rlnMicrographName': [f'{tomogram_name(sim.tomograms[p])}.mrc:{i + 1}'
                              for p in range(n) for i in range(t)],
        'rlnGroupName': np.repeat(sim.particle_names(), t),
        'rlnOpticsGroup': 1,
        'rlnDefocusU': defocus[:, 0], 'rlnDefocusV': defocus[:, 1],
        'rlnDefocusAngle': defocus[:, 2],
        'rlnAngleRot': angles[:, 0], 'rlnAngleTilt': angles[:, 1], 'rlnAnglePsi': angles[:, 2],
        'rlnOriginXAngst': 0.0, 'rlnOriginYAngst': 0.0,
        'rlnCtfScalefactor': np.tile(sim.ctf_scale, n),
        'rlnTomoNominalStageTiltAngle': np.tile(sim.tilt_angles, n),
        'rlnRandomSubset': np.repeat(np.arange(n) % 2 + 1, t),
    })
    if ctf_model == CTF_RELION5:
        table['rlnMicrographPreExposure'] = np.tile(sim.pre_exposure, n)
    else:
        table['rlnCtfBfactor'] = -4.0 * np.tile(sim.pre_exposure, n)
    return table


def write_tilt_particle_star(outdir, sim, ctf_model=CTF_RELION5, star_name=PARTICLES_STAR):
    """Write the 2D stacks and the tilt-image particle STAR into ``outdir``; return its path."""
    outdir = Path(outdir)
    write_stacks(outdir, sim)
    path = outdir / star_name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_particles_star(path, tilt_particle_table(sim, ctf_model), sim.optics())
    return path


def write_relion5_project(outdir, sim):
    """A RELION 5 tomography project: ``tomograms.star``, ``tilt_series/TS_NN.star`` and
    ``particles.star`` (3D coordinates, orientations, 2D stacks). Returns the paths of
    ``tomograms.star`` and ``particles.star``."""
    outdir = Path(outdir)
    write_stacks(outdir, sim)
    (outdir / TILT_SERIES_DIR).mkdir(parents=True, exist_ok=True)
    n_tomograms = int(sim.tomograms.max()) + 1
    tomograms = pd.DataFrame({
        'rlnTomoName': [tomogram_name(t) for t in range(n_tomograms)],
        'rlnVoltage': sim.voltage, 'rlnSphericalAberration': sim.cs,
        'rlnAmplitudeContrast': sim.amplitude_contrast,
        'rlnMicrographOriginalPixelSize': sim.pixel_size,
        'rlnTomoHand': sim.hand,
        'rlnTomoTiltSeriesPixelSize': sim.pixel_size,
        'rlnTomoTiltSeriesStarFile': [f'{TILT_SERIES_DIR}/{tomogram_name(t)}.star'
                                      for t in range(n_tomograms)],
    })
    write_star(outdir / TOMOGRAMS_STAR, {'global': tomograms})
    for t in range(n_tomograms):
        name = tomogram_name(t)
        series = pd.DataFrame({
            'rlnMicrographName': [f'{name}.mrc:{i + 1}' for i in range(sim.n_tilts)],
            'rlnTomoXTilt': 0.0, 'rlnTomoYTilt': sim.tilt_angles,
            'rlnTomoZRot': sim.tilt_axis,
            'rlnTomoXShiftAngst': 0.0, 'rlnTomoYShiftAngst': 0.0,
            'rlnDefocusU': sim.tilt_defocus[t, :, 0], 'rlnDefocusV': sim.tilt_defocus[t, :, 1],
            'rlnDefocusAngle': sim.tilt_defocus[t, :, 2],
            'rlnMicrographPreExposure': sim.pre_exposure,
            'rlnCtfScalefactor': sim.ctf_scale,
            'rlnTomoNominalStageTiltAngle': sim.tilt_angles,
        })
        write_star(outdir / TILT_SERIES_DIR / f'{name}.star', {name: series})
    visible = '[' + ','.join(['1'] * sim.n_tilts) + ']'
    particles = pd.DataFrame({
        'rlnTomoName': [tomogram_name(t) for t in sim.tomograms],
        'rlnTomoParticleName': sim.particle_names(),
        'rlnImageName': [stack_name(sim, p) for p in range(sim.n_particles)],
        'rlnCenteredCoordinateXAngst': sim.positions[:, 0],
        'rlnCenteredCoordinateYAngst': sim.positions[:, 1],
        'rlnCenteredCoordinateZAngst': sim.positions[:, 2],
        'rlnAngleRot': sim.angles[:, 0], 'rlnAngleTilt': sim.angles[:, 1],
        'rlnAnglePsi': sim.angles[:, 2],
        'rlnTomoVisibleFrames': visible,
        'rlnRandomSubset': np.arange(sim.n_particles) % 2 + 1,
        'rlnOpticsGroup': 1,
    })
    write_particles_star(outdir / PARTICLES_STAR, particles, sim.optics())
    return outdir / TOMOGRAMS_STAR, outdir / PARTICLES_STAR
