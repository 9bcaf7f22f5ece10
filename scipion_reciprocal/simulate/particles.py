"""Particle images of known conformation, orientation, shift and CTF, in RELION's conventions.

Conventions (exact; reconstruction programs reading the written STAR must recover the maps):

- Orientation: RELION's Euler matrix ``A = Rotation.from_euler('ZYZ', [rot, tilt, psi],
  degrees=True).inv().as_matrix()`` (RELION's ``Euler_angles2matrix``).
- Projection: ``p(x, y) = integral over z of V(Aᵀ (x, y, z))``, positions in pixels relative to
  the box centre at index ``box // 2``, volumes indexed ``[z, y, x]``, images ``[y, x]``. A
  density at ``r`` lands at ``(A r)[:2]``. Computed by the central-slice theorem: the 3D FT of
  the volume (padded three times, gridding-corrected for trilinear interpolation) is sampled
  on the plane ``Aᵀ (kx, ky, 0)``; images agree with exact projections to ~0.2% of their peak
  (under 1% when the plane falls on the grid).
- CTF: :func:`.ctf.ctf_2d` (RELION's sign: ``CTF(0) = +Q0``), multiplied in Fourier space.
- Shift: RELION's origin; the particle centre sits at the image centre minus the origin, i.e.
  the image is the centred projection translated by ``(-originX, -originY)`` pixels.
- Noise: white Gaussian, variance = (mean variance of the noise-free images) / ``snr``.
"""

import multiprocessing as mp
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial.transform import Rotation

from ..formats.mrc import write_stack
from ..formats.relion import format_image_names
from ..formats.star import write_particles_star
from .ctf import ctf_stack

#: Folder of the virtual micrographs named in the particles' metadata (no files are written).
VIRTUAL_MICROGRAPH_FOLDER = 'Simulated/virtual_micrographs'
#: Default stack and STAR paths of a particle dataset, relative to the project directory.
DEFAULT_STACK = 'Extract/job007/particles.mrcs'
DEFAULT_STAR = 'Extract/job007/particles.star'


@dataclass
class SimulatedParticles:
    """Particle images with their ground truth.

    Attributes
    ----------
    images : numpy.ndarray
        ``(n, box, box)`` float32 images.
    states : numpy.ndarray
        ``(n,)`` int true conformation (index into the maps), -1 where not a particle.
    angles : numpy.ndarray
        ``(n, 3)`` RELION ``rot, tilt, psi`` in degrees.
    shifts_px : numpy.ndarray
        ``(n, 2)`` RELION ``originX, originY`` in pixels.
    defocus : numpy.ndarray
        ``(n, 3)`` ``DefocusU, DefocusV`` (Å) and ``DefocusAngle`` (degrees).
    metadata : pandas.DataFrame
        RELION particle columns; ``rlnImageName`` names the stack the images are meant for
        (``DEFAULT_STACK`` for :func:`simulate_particles`) and is rewritten on writing.
    pixel_size, voltage, cs, amplitude_contrast : float
        Acquisition (Å, kV, mm, fraction).
    """

    images: np.ndarray
    states: np.ndarray
    angles: np.ndarray
    shifts_px: np.ndarray
    defocus: np.ndarray
    metadata: pd.DataFrame
    pixel_size: float = 4.0
    voltage: float = 300.0
    cs: float = 2.7
    amplitude_contrast: float = 0.1

    @property
    def box(self):
        """Image size in pixels."""
        return self.images.shape[-1]

    @property
    def matrices(self):
        """``(n, 3, 3)`` RELION projection matrices of :attr:`angles`."""
        return relion_matrices(self.angles)

    def optics(self, pixel_size=None):
        """The one-row RELION 3.1 ``data_optics`` table of these particles."""
        return optics_table(pixel_size or self.pixel_size, self.box, self.voltage, self.cs,
                            self.amplitude_contrast)


def relion_matrices(angles):
    """RELION's Euler matrices ``A`` for ``(n, 3)`` ``rot, tilt, psi`` angles in degrees."""
    angles = np.asarray(angles, dtype=np.float64).reshape(-1, 3)
    return Rotation.from_euler('ZYZ', angles, degrees=True).inv().as_matrix()


def optics_table(pixel_size, box, voltage=300.0, cs=2.7, amplitude_contrast=0.1,
                 name='opticsGroup1'):
    """A one-group RELION 3.1 ``data_optics`` table for 2D particle images."""
    return pd.DataFrame({
        'rlnOpticsGroupName': [name],
        'rlnOpticsGroup': [1],
        'rlnMicrographOriginalPixelSize': [float(pixel_size)],
        'rlnVoltage': [float(voltage)],
        'rlnSphericalAberration': [float(cs)],
        'rlnAmplitudeContrast': [float(amplitude_contrast)],
        'rlnImagePixelSize': [float(pixel_size)],
        'rlnImageSize': [int(box)],
        'rlnImageDimensionality': [2],
    })


class FourierProjector:
    """Projects one volume along many orientations by the central-slice theorem.

    Parameters
    ----------
    volume : numpy.ndarray
        ``(box, box, box)`` map indexed ``[z, y, x]``.
    pad : int
        Oversampling of the 3D Fourier transform.
    """

    def __init__(self, volume, pad=3):
        volume = np.asarray(volume, dtype=np.float64)
        if volume.ndim != 3 or len(set(volume.shape)) != 1:
            raise ValueError(f'expected a cubic volume, got shape {volume.shape}')
        self.box = volume.shape[0]
        self.pad = int(pad)
        size = self.pad * self.box
        start = size // 2 - self.box // 2
        padded = np.zeros((size,) * 3)
        padded[start:start + self.box, start:start + self.box, start:start + self.box] = volume
        # Trilinear interpolation in Fourier space multiplies real space by sinc^2 per axis.
        taper = np.sinc((np.arange(size) - size // 2) / size) ** 2
        padded /= taper[:, None, None] * taper[None, :, None] * taper[None, None, :]
        self._ft = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(padded)))
        ky = np.fft.fftfreq(self.box) * self.box
        kx = np.fft.rfftfreq(self.box) * self.box
        self._kx, self._ky = np.meshgrid(kx, ky)
        self._inside = self._kx ** 2 + self._ky ** 2 <= (self.box / 2) ** 2
        centre = self.box // 2
        self._to_corner = np.exp(-2j * np.pi * (self._kx + self._ky) * centre / self.box)

    def project_ft(self, matrices):
        """Fourier transforms of the projections, centred on the box centre.

        Parameters
        ----------
        matrices : numpy.ndarray
            ``(n, 3, 3)`` RELION matrices ``A``.

        Returns
        -------
        numpy.ndarray
            ``(n, box, box // 2 + 1)`` complex128 ``G(k) = sum_q p(q) exp(-2 pi i k.q / box)``
            with ``q`` relative to the box centre; zero beyond Nyquist.
        """
        matrices = np.asarray(matrices, dtype=np.float64).reshape(-1, 3, 3)
        kx, ky = self._kx[self._inside], self._ky[self._inside]
        # 3D frequency f = Aᵀ (kx, ky, 0): f_j = A[0, j] kx + A[1, j] ky.
        freq = (matrices[:, 0, :, None] * kx + matrices[:, 1, :, None] * ky) * self.pad
        size = self.pad * self.box
        coords = freq[:, ::-1, :].transpose(1, 0, 2).reshape(3, -1) + size // 2
        values = ndimage.map_coordinates(self._ft, coords, order=1, mode='grid-wrap')
        out = np.zeros((len(matrices),) + self._kx.shape, dtype=np.complex128)
        out[:, self._inside] = values.reshape(len(matrices), -1)
        return out

    def image_from_ft(self, ft):
        """Real images ``[y, x]`` from centred Fourier transforms (see :meth:`project_ft`)."""
        return np.fft.irfft2(ft * self._to_corner, s=(self.box, self.box))

    def project(self, matrices):
        """Projections ``(n, box, box)`` float64 for RELION matrices ``(n, 3, 3)``."""
        return self.image_from_ft(self.project_ft(matrices))


def shift_phase(box, shifts_px):
    """Phase ramps translating ``box``-sized images by ``shifts_px`` ``(n, 2)`` ``(dx, dy)``.

    Multiplying an image's ``rfft2`` by the ramp gives the image translated by ``(dx, dy)``
    pixels (the content at ``q`` moves to ``q + d``).
    """
    shifts = np.asarray(shifts_px, dtype=np.float64).reshape(-1, 2)
    ky = (np.fft.fftfreq(box) * box)[None, :, None]
    kx = (np.fft.rfftfreq(box) * box)[None, None, :]
    return np.exp(-2j * np.pi * (kx * shifts[:, 0, None, None] + ky * shifts[:, 1, None, None])
                  / box)


def project_particles(maps, states, angles, shifts_px=None, defocus=None, pixel_size=4.0,
                      voltage=300.0, cs=2.7, amplitude_contrast=0.1, batch=512, processes=1):
    """Noise-free particle images: projection, then CTF, then RELION origin shift.

    Parameters
    ----------
    maps : numpy.ndarray
        ``(n_states, box, box, box)`` maps.
    states : numpy.ndarray
        ``(n,)`` map index per particle.
    angles : numpy.ndarray
        ``(n, 3)`` RELION ``rot, tilt, psi`` (degrees).
    shifts_px : numpy.ndarray, optional
        ``(n, 2)`` RELION ``originX, originY`` in pixels; none when omitted.
    defocus : numpy.ndarray, optional
        ``(n, 3)`` ``DefocusU, DefocusV, DefocusAngle``; no CTF when omitted.
    batch : int
        Number of images projected together (bounds memory).
    processes : int
        Worker processes that project the batches of each state (forked after the state's
        projector is built, so they share it); the images do not depend on it. 1, or a
        platform without ``fork``, projects in this process.

    Returns
    -------
    numpy.ndarray
        ``(n, box, box)`` float64 images.
    """
    maps = np.asarray(maps)
    states = np.asarray(states, dtype=int)
    box = maps.shape[-1]
    matrices = relion_matrices(angles)
    defocus = None if defocus is None else np.asarray(defocus, dtype=np.float64)
    shifts = None if shifts_px is None else np.asarray(shifts_px, dtype=np.float64)
    optics = (pixel_size, voltage, cs, amplitude_contrast)
    images = np.empty((len(states), box, box))
    for state in np.unique(states):
        members = np.flatnonzero(states == state)
        batches = [members[start:start + batch] for start in range(0, len(members), batch)]
        work = _ProjectionWork(FourierProjector(maps[state]), matrices, defocus, shifts, optics)
        for idx, projected in zip(batches, _map_batches(work, batches, processes)):
            images[idx] = projected
    return images


@dataclass
class _ProjectionWork:
    """What every batch of one state needs: the projector and the per-particle parameters."""

    projector: FourierProjector
    matrices: np.ndarray
    defocus: np.ndarray
    shifts: np.ndarray
    optics: tuple

    def __call__(self, idx):
        box = self.projector.box
        ft = self.projector.project_ft(self.matrices[idx])
        if self.defocus is not None:
            ft *= ctf_stack(box, self.optics[0], self.defocus[idx], *self.optics[1:])
        if self.shifts is not None:
            ft *= shift_phase(box, -self.shifts[idx])
        return self.projector.image_from_ft(ft)


#: The work of the state being projected, inherited by forked workers (never pickled).
_FORKED_WORK = None


def _run_forked_work(idx):
    return _FORKED_WORK(idx)


def _map_batches(work, batches, processes):
    """``work(idx)`` for every batch, in order: here, or in forked worker processes."""
    global _FORKED_WORK
    if processes <= 1 or len(batches) <= 1 or 'fork' not in mp.get_all_start_methods():
        return [work(idx) for idx in batches]
    _FORKED_WORK = work
    try:
        with mp.get_context('fork').Pool(min(processes, len(batches))) as pool:
            return pool.map(_run_forked_work, batches)
    finally:
        _FORKED_WORK = None


def simulate_particles(maps, n_particles=300, state_probabilities=None, pixel_size=4.0, snr=0.5,
                       defocus_range=(10000.0, 25000.0), max_shift_px=2.0, voltage=300.0, cs=2.7,
                       amplitude_contrast=0.1, seed=0, particles_per_micrograph=25,
                       processes=1):
    """Simulate a particle dataset from conformation maps.

    Parameters
    ----------
    maps : numpy.ndarray
        ``(n_states, box, box, box)`` maps (e.g. :func:`.molecule.molecule_maps`).
    n_particles : int
        Number of images.
    state_probabilities : sequence of float, optional
        Probability of each state (uniform when omitted).
    pixel_size : float
        Pixel size in Å.
    snr : float
        Signal-to-noise variance ratio; ``numpy.inf`` for noise-free images.
    defocus_range : tuple of float
        Range of the micrographs' mean defocus in Å; ``DefocusU - DefocusV`` is up to 500 Å.
    max_shift_px : float
        Origins are uniform in ``[-max_shift_px, max_shift_px]`` along x and y.
    voltage, cs, amplitude_contrast : float
        Acquisition (kV, mm, fraction).
    seed : int
        Seed of every random choice.
    particles_per_micrograph : int
        Particles sharing one (virtual) micrograph, hence one defocus.
    processes : int
        Worker processes for the projections (see :func:`project_particles`); the result
        does not depend on it.

    Returns
    -------
    SimulatedParticles
        Images, ground truth and RELION metadata. Orientations are uniform on SO(3).
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 4:
        raise ValueError(f'maps must have shape (n_states, box, box, box), got {maps.shape}')
    n_states, box = maps.shape[0], maps.shape[-1]
    if state_probabilities is None:
        probabilities = np.full(n_states, 1.0 / n_states)
    else:
        probabilities = np.asarray(state_probabilities, dtype=np.float64)
        if probabilities.shape != (n_states,) or np.any(probabilities < 0):
            raise ValueError(f'state_probabilities must be {n_states} non-negative numbers')
        probabilities = probabilities / probabilities.sum()
    if not snr > 0:
        raise ValueError(f'snr must be positive, got {snr}')

    rng = np.random.default_rng(seed)
    states = rng.choice(n_states, size=n_particles, p=probabilities)
    angles = Rotation.random(n_particles, random_state=rng).as_euler('ZYZ', degrees=True)
    shifts = rng.uniform(-max_shift_px, max_shift_px, (n_particles, 2))
    micrograph = np.arange(n_particles) // particles_per_micrograph
    n_micrographs = micrograph[-1] + 1 if n_particles else 0
    mean_defocus = rng.uniform(*defocus_range, n_micrographs)
    astigmatism = rng.uniform(0.0, 500.0, n_micrographs)
    astig_angle = rng.uniform(0.0, 180.0, n_micrographs)
    defocus = np.column_stack([mean_defocus + astigmatism / 2, mean_defocus - astigmatism / 2,
                               astig_angle])[micrograph]

    clean = project_particles(maps, states, angles, shifts, defocus, pixel_size, voltage, cs,
                              amplitude_contrast, processes=processes)
    if np.isinf(snr):
        images = clean
    else:
        sigma = np.sqrt(clean.var(axis=(1, 2)).mean() / snr)
        images = clean + rng.normal(0.0, sigma, clean.shape)

    metadata = _particle_metadata(angles, shifts, defocus, micrograph, box, pixel_size, rng,
                                  particles_per_micrograph)
    return SimulatedParticles(images=images.astype(np.float32), states=states, angles=angles,
                              shifts_px=shifts, defocus=defocus, metadata=metadata,
                              pixel_size=float(pixel_size), voltage=float(voltage), cs=float(cs),
                              amplitude_contrast=float(amplitude_contrast))


def add_junk(sim, fraction, seed=0):
    """The particles with a random ``fraction`` of them replaced by junk: boxes of noise alone
    (empty ice), of the same variance as the particle images, keeping their metadata (poses
    and CTF as a refinement would have assigned them). Junk rows get state -1.

    Returns
    -------
    SimulatedParticles
        A copy; ``sim`` is unchanged.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f'fraction must be in [0, 1), got {fraction}')
    rng = np.random.default_rng(seed)
    n = len(sim.states)
    junk = np.sort(rng.choice(n, int(round(fraction * n)), replace=False))
    images = sim.images.copy()
    sigma = np.delete(images, junk, axis=0).std()
    images[junk] = rng.normal(0.0, sigma, (len(junk),) + images.shape[1:])
    states = sim.states.copy()
    states[junk] = -1
    return replace(sim, images=images, states=states, metadata=sim.metadata.copy())


def write_particle_dataset(outdir, sim, pixel_size=None, stack_name=DEFAULT_STACK,
                           star_name=DEFAULT_STAR):
    """Write a particle stack and its RELION 3.1 particles STAR into a project folder.

    Parameters
    ----------
    outdir : str or os.PathLike
        The RELION project directory; ``rlnImageName`` is relative to it.
    sim : SimulatedParticles
        The particles.
    pixel_size : float, optional
        Pixel size in Å (default ``sim.pixel_size``); origins in Å are recomputed from it.
    stack_name, star_name : str
        Paths of the ``.mrcs`` stack and the STAR file, relative to ``outdir``.

    Returns
    -------
    pathlib.Path
        The STAR file written.
    """
    outdir = Path(outdir)
    pixel_size = float(pixel_size or sim.pixel_size)
    for name in (stack_name, star_name):
        (outdir / name).parent.mkdir(parents=True, exist_ok=True)
    write_stack(outdir / stack_name, sim.images, pixel_size)
    particles = particle_table(sim, pixel_size, stack_name)
    star_path = outdir / star_name
    write_particles_star(star_path, particles, sim.optics(pixel_size))
    return star_path


def particle_table(sim, pixel_size=None, stack_name=DEFAULT_STACK):
    """The particles' metadata with image names in ``stack_name`` and origins in Å."""
    pixel_size = float(pixel_size or sim.pixel_size)
    table = sim.metadata.copy()
    table['rlnImageName'] = format_image_names(np.arange(1, len(table) + 1),
                                               [stack_name] * len(table))
    if 'rlnOriginXAngst' in table:
        table['rlnOriginXAngst'] = sim.shifts_px[:, 0] * pixel_size
        table['rlnOriginYAngst'] = sim.shifts_px[:, 1] * pixel_size
    return table


def _particle_metadata(angles, shifts, defocus, micrograph, box, pixel_size, rng,
                       particles_per_micrograph):
    """RELION particle columns, particles laid on a jittered grid in virtual micrographs."""
    n = len(angles)
    per_row = int(np.ceil(np.sqrt(particles_per_micrograph)))
    slot = np.arange(n) % particles_per_micrograph
    spacing = 2 * box
    coord_x = (slot % per_row + 1) * spacing + rng.uniform(-box / 4, box / 4, n)
    coord_y = (slot // per_row + 1) * spacing + rng.uniform(-box / 4, box / 4, n)
    names = np.array([f'{VIRTUAL_MICROGRAPH_FOLDER}/mic_{m + 1:04d}.mrc'
                      for m in range(micrograph.max() + 1 if n else 0)])
    return pd.DataFrame({
        'rlnCoordinateX': np.round(coord_x, 2),
        'rlnCoordinateY': np.round(coord_y, 2),
        'rlnImageName': format_image_names(np.arange(1, n + 1), [DEFAULT_STACK] * n),
        'rlnMicrographName': names[micrograph] if n else np.array([], dtype=str),
        'rlnOpticsGroup': np.ones(n, dtype=int),
        'rlnDefocusU': defocus[:, 0],
        'rlnDefocusV': defocus[:, 1],
        'rlnDefocusAngle': defocus[:, 2],
        'rlnCtfBfactor': np.zeros(n),
        'rlnCtfScalefactor': np.ones(n),
        'rlnPhaseShift': np.zeros(n),
        'rlnGroupNumber': micrograph + 1,
        'rlnAngleRot': angles[:, 0],
        'rlnAngleTilt': angles[:, 1],
        'rlnAnglePsi': angles[:, 2],
        'rlnOriginXAngst': shifts[:, 0] * pixel_size,
        'rlnOriginYAngst': shifts[:, 1] * pixel_size,
        'rlnRandomSubset': np.arange(n) % 2 + 1,
    })
