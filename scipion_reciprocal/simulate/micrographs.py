"""Micrographs with particles, ice contamination and a carbon edge, and boxes picked from them.

A micrograph is ``-(CTF * (particle projections + carbon texture)) + carbon step + ice blobs +
noise``: the raw contrast of an electron micrograph (protein dark). Boxes extracted by
:func:`good_bad_particle_sets` are contrast-inverted and normalised like RELION's extracted
particles (protein white, background mean 0 and standard deviation 1).

Coordinates are 0-based pixel indices ``(x, y)`` of a box centre; the box extracted around it
spans ``[x - box // 2, x - box // 2 + box)`` as in RELION's extraction.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial.transform import Rotation

from ..formats.mrc import write_map
from ..formats.relion import format_image_names
from ..formats.star import write_particles_star, write_star
from .ctf import ctf_stack
from .particles import SimulatedParticles, project_particles, write_particle_dataset

#: Default folders (relative to the project directory) of the micrograph-side outputs.
MICROGRAPH_FOLDER = 'MotionCorr/job002/Movies'
PICKED_JOB = 'Extract/job010'
MICROGRAPHS_STAR = 'CtfFind/job003/micrographs_ctf.star'
COORDINATE_FOLDER = 'AutoPick/job004'

#: Kinds of non-particle boxes made by :func:`good_bad_particle_sets`.
BAD_KINDS = ('ice', 'carbon', 'carbon_area', 'empty')


@dataclass
class SimulatedMicrographs:
    """Micrographs with their ground truth.

    Attributes
    ----------
    images : numpy.ndarray
        ``(n, ny, nx)`` float32 micrographs.
    coordinates : pandas.DataFrame
        True particles: ``micrograph`` (0-based), ``x``, ``y`` (pixels), ``state``, ``rot``,
        ``tilt``, ``psi`` (RELION degrees).
    junk : pandas.DataFrame
        Ice blobs: ``micrograph``, ``x``, ``y``, ``radius`` (pixels), ``contrast`` (in noise
        standard deviations; negative = dark).
    carbon : pandas.DataFrame
        Per micrograph: ``micrograph``, ``normal_x``, ``normal_y``, ``offset``, ``present``; the
        carbon covers the points where ``normal_x * x + normal_y * y > offset``.
    defocus : numpy.ndarray
        ``(n, 3)`` ``DefocusU, DefocusV, DefocusAngle`` per micrograph.
    particle_box, min_distance : int, float
        Box size used for placement and extraction; least distance between particle centres.
    pixel_size, voltage, cs, amplitude_contrast, noise_sigma : float
        Acquisition, and the standard deviation of the added noise.
    """

    images: np.ndarray
    coordinates: pd.DataFrame
    junk: pd.DataFrame
    carbon: pd.DataFrame
    defocus: np.ndarray
    particle_box: int
    min_distance: float
    pixel_size: float
    voltage: float
    cs: float
    amplitude_contrast: float
    noise_sigma: float

    def carbon_distance(self, micrograph, x, y):
        """Signed distance (pixels) of points to the carbon edge; positive on the carbon."""
        row = self.carbon.iloc[int(micrograph)]
        if not row['present']:
            return np.full(np.shape(x), -np.inf)
        return (np.asarray(x) * row['normal_x'] + np.asarray(y) * row['normal_y']
                - row['offset'])

    def micrograph_names(self, folder=MICROGRAPH_FOLDER):
        """Project-relative micrograph file names, ``folder/mic_001.mrc`` onwards."""
        return [f'{folder}/mic_{i + 1:03d}.mrc' for i in range(len(self.images))]


@dataclass
class GoodBadSets:
    """Boxes around true particles (``good``) and around non-particles (``bad``).

    ``bad.states`` is -1 and ``bad.angles`` NaN; ``bad_kinds[i]`` is one of ``BAD_KINDS``.
    """

    good: SimulatedParticles
    bad: SimulatedParticles
    bad_kinds: np.ndarray


def simulate_micrographs(maps, n_micrographs=4, shape=(512, 512), particles_per_micrograph=20,
                         particle_box=32, pixel_size=4.0, min_distance=None, n_ice_blobs=3,
                         carbon_edge=True, snr=0.3, seed=0, defocus_range=(10000.0, 25000.0),
                         voltage=300.0, cs=2.7, amplitude_contrast=0.1):
    """Simulate micrographs of randomly oriented particles among ice blobs and carbon.

    Parameters
    ----------
    maps : numpy.ndarray
        ``(n_states, box, box, box)`` maps; each particle's state is uniform among them.
    n_micrographs : int
        Number of micrographs.
    shape : tuple of int
        ``(ny, nx)`` micrograph size in pixels.
    particles_per_micrograph : int
        Particles per micrograph.
    particle_box : int
        Extraction box; particle boxes lie inside the micrograph, clear of ice blobs and of
        the carbon edge.
    pixel_size : float
        Å per pixel.
    min_distance : float, optional
        Least distance between particle centres (default ``particle_box``).
    n_ice_blobs : int
        Ice contaminations per micrograph (round, dark or bright, soft-edged).
    carbon_edge : bool
        Whether each micrograph has a straight carbon edge (a darker, textured side).
    snr : float
        Variance of a CTF-affected particle box over the noise variance.
    seed : int
        Seed of every random choice.
    defocus_range, voltage, cs, amplitude_contrast : float
        Acquisition; astigmatism is up to 500 Å.

    Returns
    -------
    SimulatedMicrographs
    """
    maps = np.asarray(maps, dtype=np.float32)
    ny, nx = shape
    min_distance = float(particle_box if min_distance is None else min_distance)
    rng = np.random.default_rng(seed)
    half = particle_box // 2
    rows, junk_rows, carbon_rows, defocus, layouts = [], [], [], [], []
    for mic in range(n_micrographs):
        normal_angle = rng.uniform(0.0, 2.0 * np.pi)
        normal = np.array([np.cos(normal_angle), np.sin(normal_angle)])
        distance = rng.uniform(0.25, 0.4) * min(ny, nx)
        offset = normal @ np.array([nx / 2.0, ny / 2.0]) + distance
        carbon_rows.append({'micrograph': mic, 'normal_x': normal[0], 'normal_y': normal[1],
                            'offset': offset, 'present': bool(carbon_edge)})
        blobs = np.column_stack([rng.uniform(0, nx, n_ice_blobs), rng.uniform(0, ny, n_ice_blobs),
                                 rng.uniform(0.04, 0.08, n_ice_blobs) * min(ny, nx),
                                 np.where(rng.random(n_ice_blobs) < 0.7, -3.0, 2.0)])
        junk_rows.extend({'micrograph': mic, 'x': x, 'y': y, 'radius': r, 'contrast': c}
                         for x, y, r, c in blobs)
        positions = _place_particles(rng, particles_per_micrograph, (ny, nx), half, min_distance,
                                     blobs, normal, offset if carbon_edge else np.inf, mic)
        states = rng.integers(0, len(maps), len(positions))
        angles = Rotation.random(len(positions), random_state=rng).as_euler('ZYZ', degrees=True)
        rows.extend({'micrograph': mic, 'x': int(x), 'y': int(y), 'state': int(s),
                     'rot': a[0], 'tilt': a[1], 'psi': a[2]}
                    for (x, y), s, a in zip(positions, states, angles))
        mean = rng.uniform(*defocus_range)
        astigmatism = rng.uniform(0.0, 500.0)
        defocus.append([mean + astigmatism / 2, mean - astigmatism / 2, rng.uniform(0.0, 180.0)])
        layouts.append((normal, offset, blobs, positions))
    coordinates = pd.DataFrame(rows, columns=['micrograph', 'x', 'y', 'state', 'rot', 'tilt',
                                              'psi'])
    projections = project_particles(maps, coordinates['state'].to_numpy(dtype=np.int64),
                                    coordinates[['rot', 'tilt', 'psi']].to_numpy(np.float64))

    canvases, variances = [], []
    for mic, (normal, offset, blobs, positions) in enumerate(layouts):
        ctf = ctf_stack((ny, nx), pixel_size, defocus[mic], voltage, cs, amplitude_contrast)[0]
        pasted = _paste(projections[coordinates['micrograph'].to_numpy() == mic], positions,
                        (ny, nx))
        particles = np.fft.irfft2(np.fft.rfft2(pasted) * ctf, s=(ny, nx))
        if carbon_edge:
            side = _carbon_side(normal, offset, (ny, nx), softness=2.0)
            texture = ndimage.gaussian_filter(rng.normal(size=(ny, nx)), 2.0) * side
            texture = np.fft.irfft2(np.fft.rfft2(texture) * ctf, s=(ny, nx))
        else:
            side = texture = np.zeros((ny, nx))
        canvases.append((particles, texture, side, blobs))
        variances.extend(particles[y - half:y - half + particle_box,
                                   x - half:x - half + particle_box].var() for x, y in positions)

    noise_sigma = float(np.sqrt(np.mean(variances) / snr)) if variances else 1.0
    images = []
    for particles, texture, side, blobs in canvases:
        texture_scale = 0.5 * noise_sigma / max(texture.std(), 1e-12) if texture.any() else 0.0
        image = (-(particles + texture_scale * texture) - noise_sigma * side
                 + noise_sigma * _ice(blobs, (ny, nx)) + rng.normal(0.0, noise_sigma, (ny, nx)))
        images.append(image.astype(np.float32))

    return SimulatedMicrographs(
        images=np.stack(images) if images else np.zeros((0, ny, nx), np.float32),
        coordinates=coordinates,
        junk=pd.DataFrame(junk_rows, columns=['micrograph', 'x', 'y', 'radius', 'contrast']),
        carbon=pd.DataFrame(carbon_rows, columns=['micrograph', 'normal_x', 'normal_y', 'offset',
                                                  'present']),
        defocus=np.array(defocus, dtype=np.float64).reshape(-1, 3),
        particle_box=int(particle_box), min_distance=min_distance, pixel_size=float(pixel_size),
        voltage=float(voltage), cs=float(cs), amplitude_contrast=float(amplitude_contrast),
        noise_sigma=noise_sigma)


def concatenate_micrographs(sims):
    """Micrograph sets simulated separately (e.g. in parallel, one seed each) as one set.

    Micrograph numbers of the later sets are shifted to follow the earlier ones; the sets must
    share the particle box, pixel size and optics. ``noise_sigma`` becomes the mean of the
    sets' (each set's noise was scaled to its own particles, at the same SNR).
    """
    sims = list(sims)
    first = sims[0]
    shared = ('particle_box', 'min_distance', 'pixel_size', 'voltage', 'cs', 'amplitude_contrast')
    for sim in sims[1:]:
        different = [name for name in shared if getattr(sim, name) != getattr(first, name)]
        if different or sim.images.shape[1:] != first.images.shape[1:]:
            raise ValueError(f'micrograph sets differ in {", ".join(different) or "shape"}')
    offsets = np.cumsum([0] + [len(sim.images) for sim in sims[:-1]])

    def shifted(table_name):
        tables = [getattr(sim, table_name).assign(
            micrograph=getattr(sim, table_name)['micrograph'] + offset)
            for sim, offset in zip(sims, offsets)]
        return pd.concat(tables, ignore_index=True)

    return SimulatedMicrographs(
        images=np.concatenate([sim.images for sim in sims]),
        coordinates=shifted('coordinates'), junk=shifted('junk'), carbon=shifted('carbon'),
        defocus=np.concatenate([sim.defocus for sim in sims]),
        noise_sigma=float(np.mean([sim.noise_sigma for sim in sims])),
        **{name: getattr(first, name) for name in shared})


def good_bad_particle_sets(sim, n_bad=None, box=None, seed=0, folder=MICROGRAPH_FOLDER,
                           stack_name=f'{PICKED_JOB}/particles.mrcs'):
    """Extract boxes around true particles (good) and around junk (bad).

    Bad boxes are, in turn, on an ice blob (centre within 0.8 of its radius), across the carbon
    edge (centre within a quarter box of the line), wholly on the carbon, and on empty ice (at least
    ``min_distance`` from every particle, clear of blobs and carbon); without a carbon edge
    only ice and empty boxes are made. Boxes are contrast-inverted and normalised to mean 0,
    standard deviation 1 outside a circle of radius ``0.4 * box``.

    Parameters
    ----------
    sim : SimulatedMicrographs
        The micrographs.
    n_bad : int, optional
        Number of bad boxes (default: as many as good ones).
    box : int, optional
        Box size (default ``sim.particle_box``).
    seed : int
        Seed of the bad positions.
    folder : str
        Micrograph folder named in ``rlnMicrographName``.
    stack_name : str
        Stack named in ``rlnImageName``: good boxes are images ``1..n_good``, bad ones follow,
        as :func:`write_good_bad_sets` writes them.

    Returns
    -------
    GoodBadSets
        Both sets have RELION metadata (coordinates, micrograph, CTF) and can be written with
        :func:`.particles.write_particle_dataset`.
    """
    box = int(box or sim.particle_box)
    rng = np.random.default_rng(seed)
    coords = sim.coordinates
    good_xy = coords[['x', 'y']].to_numpy(dtype=np.int64)
    good_mic = coords['micrograph'].to_numpy(dtype=np.int64)
    n_bad = len(coords) if n_bad is None else int(n_bad)
    has_carbon = bool(sim.carbon['present'].any())
    available = {'ice': len(sim.junk) > 0, 'carbon': has_carbon, 'carbon_area': has_carbon,
                 'empty': True}
    kinds = [k for k in BAD_KINDS if available[k]]
    bad_kinds = np.array([kinds[i % len(kinds)] for i in range(n_bad)], dtype=object)
    bad_mic, bad_xy = [], []
    for kind in bad_kinds:
        mic, xy = _bad_position(sim, kind, box, rng)
        bad_mic.append(mic)
        bad_xy.append(xy)
    bad_mic = np.array(bad_mic, dtype=np.int64)
    bad_xy = np.array(bad_xy, dtype=np.int64).reshape(-1, 2)

    names = np.array(sim.micrograph_names(folder), dtype=object)
    good = _particle_set(sim, good_mic, good_xy, box, names,
                         coords['state'].to_numpy(dtype=np.int64),
                         coords[['rot', 'tilt', 'psi']].to_numpy(dtype=np.float64))
    bad = _particle_set(sim, bad_mic, bad_xy, box, names, np.full(len(bad_mic), -1),
                        np.full((len(bad_mic), 3), np.nan))
    numbers = np.arange(1, len(good_mic) + len(bad_mic) + 1)
    good.metadata['rlnImageName'] = format_image_names(numbers[:len(good_mic)], stack_name)
    bad.metadata['rlnImageName'] = format_image_names(numbers[len(good_mic):], stack_name)
    return GoodBadSets(good=good, bad=bad, bad_kinds=bad_kinds)


def write_micrographs(outdir, sim, pixel_size=None, folder=MICROGRAPH_FOLDER):
    """Write each micrograph as an MRC file; returns their paths (``folder/mic_NNN.mrc``)."""
    outdir = Path(outdir)
    (outdir / folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in zip(sim.micrograph_names(folder), sim.images):
        write_map(outdir / name, image, pixel_size or sim.pixel_size)
        paths.append(outdir / name)
    return paths


def write_micrographs_star(outdir, sim, folder=MICROGRAPH_FOLDER, star_name=MICROGRAPHS_STAR):
    """Write a RELION 3.1 ``micrographs_ctf.star`` (optics + micrographs with CTF)."""
    path = Path(outdir) / star_name
    path.parent.mkdir(parents=True, exist_ok=True)
    optics = pd.DataFrame({
        'rlnOpticsGroupName': ['opticsGroup1'], 'rlnOpticsGroup': [1],
        'rlnMicrographOriginalPixelSize': [sim.pixel_size], 'rlnVoltage': [sim.voltage],
        'rlnSphericalAberration': [sim.cs], 'rlnAmplitudeContrast': [sim.amplitude_contrast],
        'rlnMicrographPixelSize': [sim.pixel_size]})
    micrographs = pd.DataFrame({
        'rlnMicrographName': sim.micrograph_names(folder),
        'rlnOpticsGroup': np.ones(len(sim.images), dtype=np.int64),
        'rlnDefocusU': sim.defocus[:, 0], 'rlnDefocusV': sim.defocus[:, 1],
        'rlnCtfAstigmatism': sim.defocus[:, 0] - sim.defocus[:, 1],
        'rlnDefocusAngle': sim.defocus[:, 2],
        'rlnCtfFigureOfMerit': np.full(len(sim.images), 0.15),
        'rlnCtfMaxResolution': np.full(len(sim.images), 2.5 * sim.pixel_size)})
    write_star(path, {'optics': optics, 'micrographs': micrographs})
    return path


def write_coordinates_star(outdir, sim, job=COORDINATE_FOLDER, suffix='_autopick',
                           micrographs_star=MICROGRAPHS_STAR, folder=MICROGRAPH_FOLDER):
    """Write RELION 3.1 AutoPick coordinate files of the true particles.

    One ``job/Movies/mic_NNN{suffix}.star`` per micrograph (a ``data_`` block with
    ``rlnCoordinateX``, ``rlnCoordinateY``, ``rlnAutopickFigureOfMerit``) and
    ``job/coords_suffix{suffix}.star`` naming the micrographs STAR, as RELION 3.1 does.

    Returns
    -------
    list of pathlib.Path
        The per-micrograph coordinate files.
    """
    outdir = Path(outdir)
    movies = outdir / job / 'Movies'
    movies.mkdir(parents=True, exist_ok=True)
    (outdir / job / f'coords_suffix{suffix}.star').write_text(f'{micrographs_star}\n')
    paths = []
    for mic, name in enumerate(sim.micrograph_names(folder)):
        rows = sim.coordinates[sim.coordinates['micrograph'] == mic]
        table = pd.DataFrame({
            'rlnCoordinateX': rows['x'].to_numpy(dtype=np.float64),
            'rlnCoordinateY': rows['y'].to_numpy(dtype=np.float64),
            'rlnAutopickFigureOfMerit': np.full(len(rows), 1.0)})
        path = movies / f'{Path(name).stem}{suffix}.star'
        write_star(path, {'': table})
        paths.append(path)
    return paths


def write_good_bad_sets(outdir, sets, extract_job=PICKED_JOB, good_job='Select/job011',
                        bad_job='Select/job012'):
    """Write all boxes as one extraction job and the good and bad subsets as two selections.

    ``extract_job/particles.mrcs`` holds the good boxes then the bad ones;
    ``extract_job/particles.star`` lists them all, ``good_job/particles.star`` and
    ``bad_job/particles.star`` the two subsets (same image names).

    Returns
    -------
    tuple of pathlib.Path
        ``(all_star, good_star, bad_star)``.
    """
    outdir = Path(outdir)
    combined = _concatenate(sets.good, sets.bad)
    all_star = write_particle_dataset(outdir, combined, stack_name=f'{extract_job}/particles.mrcs',
                                      star_name=f'{extract_job}/particles.star')
    table = combined.metadata.copy()
    table['rlnImageName'] = format_image_names(np.arange(1, len(table) + 1),
                                               f'{extract_job}/particles.mrcs')
    n_good = len(sets.good.images)
    paths = [all_star]
    for job, rows in ((good_job, table.iloc[:n_good]), (bad_job, table.iloc[n_good:])):
        path = outdir / job / 'particles.star'
        path.parent.mkdir(parents=True, exist_ok=True)
        write_particles_star(path, rows.reset_index(drop=True), combined.optics())
        paths.append(path)
    return tuple(paths)


def _place_particles(rng, count, shape, half, min_distance, blobs, normal, offset, mic):
    """Random particle centres clear of each other, of ice blobs and of the carbon."""
    ny, nx = shape
    placed = []
    for _ in range(200 * max(count, 1)):
        if len(placed) == count:
            break
        x, y = rng.integers(half, nx - half), rng.integers(half, ny - half)
        if normal @ (x, y) - offset > -half:
            continue
        if np.any(np.hypot(blobs[:, 0] - x, blobs[:, 1] - y) < blobs[:, 2] + half):
            continue
        if placed and np.min(np.hypot(*(np.array(placed) - (x, y)).T)) < min_distance:
            continue
        placed.append((x, y))
    if len(placed) < count:
        raise ValueError(f'micrograph {mic}: room for only {len(placed)} of {count} particles '
                         f'(min_distance {min_distance}, box {2 * half}); use larger micrographs '
                         f'or fewer particles')
    return np.array(placed, dtype=np.int64).reshape(-1, 2)


def _paste(projections, positions, shape):
    """Add images centred (index ``box // 2``) at integer positions ``(x, y)`` into a canvas."""
    canvas = np.zeros(shape)
    box = projections.shape[-1]
    for image, (x, y) in zip(projections, positions):
        y0, x0 = y - box // 2, x - box // 2
        ys = slice(max(y0, 0), min(y0 + box, shape[0]))
        xs = slice(max(x0, 0), min(x0 + box, shape[1]))
        canvas[ys, xs] += image[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
    return canvas


def _carbon_side(normal, offset, shape, softness):
    """1 on the carbon, 0 off it, with a ``tanh`` edge of width ``softness`` pixels."""
    y, x = np.indices(shape, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh((normal[0] * x + normal[1] * y - offset) / softness))


def _ice(blobs, shape):
    """Soft discs of the given contrast (in units of the noise standard deviation)."""
    y, x = np.indices(shape, dtype=np.float64)
    ice = np.zeros(shape)
    for bx, by, radius, contrast in blobs:
        ice += contrast * 0.5 * (1.0 - np.tanh((np.hypot(x - bx, y - by) - radius) / 3.0))
    return ice


def _bad_position(sim, kind, box, rng):
    """A box centre of the given kind of non-particle, inside its micrograph."""
    ny, nx = sim.images.shape[1:]
    half = box // 2
    for _ in range(10000):
        mic = int(rng.integers(len(sim.images)))
        if kind == 'ice':
            blobs = sim.junk[sim.junk['micrograph'] == mic]
            if blobs.empty:
                continue
            blob = blobs.iloc[int(rng.integers(len(blobs)))]
            angle, reach = rng.uniform(0, 2 * np.pi), 0.8 * blob['radius'] * np.sqrt(rng.random())
            x, y = blob['x'] + reach * np.cos(angle), blob['y'] + reach * np.sin(angle)
        elif kind == 'carbon':
            row = sim.carbon.iloc[mic]
            if not row['present']:
                continue
            normal = np.array([row['normal_x'], row['normal_y']])
            along = rng.uniform(-max(nx, ny), max(nx, ny))
            across = row['offset'] + rng.uniform(-box / 4, box / 4)
            x, y = across * normal + along * np.array([-normal[1], normal[0]])
        elif kind == 'carbon_area':
            if not sim.carbon['present'].iloc[mic]:
                continue
            x, y = rng.uniform(half, nx - half), rng.uniform(half, ny - half)
            if sim.carbon_distance(mic, x, y) <= half:
                continue
        else:
            x, y = rng.uniform(half, nx - half), rng.uniform(half, ny - half)
            particles = sim.coordinates[sim.coordinates['micrograph'] == mic]
            blobs = sim.junk[sim.junk['micrograph'] == mic]
            if (np.any(np.hypot(particles['x'] - x, particles['y'] - y) < sim.min_distance)
                    or np.any(np.hypot(blobs['x'] - x, blobs['y'] - y) < blobs['radius'] + half)
                    or sim.carbon_distance(mic, x, y) > -half):
                continue
        x, y = int(round(x)), int(round(y))
        if half <= x < nx - half and half <= y < ny - half:
            return mic, (x, y)
    raise ValueError(f'could not place a bad box of kind {kind!r} in the micrographs')


def _particle_set(sim, mics, xy, box, names, states, angles):
    """Normalised, contrast-inverted boxes with RELION metadata."""
    half = box // 2
    images = np.stack([sim.images[m, y - half:y - half + box, x - half:x - half + box]
                       for m, (x, y) in zip(mics, xy)]) if len(mics) else np.zeros((0, box, box))
    images = -images.astype(np.float64)
    yy, xx = np.indices((box, box)) - half
    background = np.hypot(xx, yy) > 0.4 * box
    mean = images[:, background].mean(axis=1)[:, None, None] if len(mics) else 0.0
    std = images[:, background].std(axis=1)[:, None, None] if len(mics) else 1.0
    images = (images - mean) / np.maximum(std, 1e-12)
    defocus = sim.defocus[mics]
    n = len(mics)
    metadata = pd.DataFrame({
        'rlnCoordinateX': xy[:, 0].astype(np.float64),
        'rlnCoordinateY': xy[:, 1].astype(np.float64),
        'rlnImageName': np.full(n, '', dtype=object),
        'rlnMicrographName': names[mics] if n else np.array([], dtype=object),
        'rlnOpticsGroup': np.ones(n, dtype=np.int64),
        'rlnDefocusU': defocus[:, 0], 'rlnDefocusV': defocus[:, 1],
        'rlnDefocusAngle': defocus[:, 2],
        'rlnCtfBfactor': np.zeros(n), 'rlnCtfScalefactor': np.ones(n),
        'rlnPhaseShift': np.zeros(n)})
    return SimulatedParticles(images=images.astype(np.float32), states=states, angles=angles,
                              shifts_px=np.zeros((n, 2)), defocus=defocus, metadata=metadata,
                              pixel_size=sim.pixel_size, voltage=sim.voltage, cs=sim.cs,
                              amplitude_contrast=sim.amplitude_contrast)


def _concatenate(first, second):
    """Two particle sets as one (images, truth and metadata stacked)."""
    return SimulatedParticles(
        images=np.concatenate([first.images, second.images]),
        states=np.concatenate([first.states, second.states]),
        angles=np.concatenate([first.angles, second.angles]),
        shifts_px=np.concatenate([first.shifts_px, second.shifts_px]),
        defocus=np.concatenate([first.defocus, second.defocus]),
        metadata=pd.concat([first.metadata, second.metadata], ignore_index=True),
        pixel_size=first.pixel_size, voltage=first.voltage, cs=first.cs,
        amplitude_contrast=first.amplitude_contrast)
