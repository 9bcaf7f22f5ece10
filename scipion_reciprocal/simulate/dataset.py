"""A complete small RELION-like project with known ground truth, for the demo and tests.

Layout written by :func:`build_demo_project` (paths relative to the project directory, which
plays RELION's project directory; every STAR path inside is relative to it):

::

    Simulated/maps/state_0.mrc ...        true conformations; particles.states indexes them
    Simulated/truth.csv                   per particle: rlnImageName, state, final class per job
    Extract/job007/particles.mrcs|.star   the particle dataset (RELION 3.1, one optics group)
    Class2D/job008/                       Class2D, 6 classes by viewing direction
    Class3D/job085/                       Class3D K=3, class s+1 for state s, 5% reassigned
    Class3D/job086/                       Class3D K=4, state 2 split into classes 3 and 4,
                                          10% reassigned
    Class3D/job087/                       Class3D K=3, states 0, 1, 2 -> classes 3, 1, 2,
                                          15% reassigned, continued after iteration 15
                                          (run_ct15_it016... run_ct15_it025; after the
                                          last-but-one iteration when there are fewer)
    MotionCorr/job002/Movies/mic_NNN.mrc  micrographs with particles, ice blobs, carbon edge
    CtfFind/job003/micrographs_ctf.star   micrographs with their CTF
    AutoPick/job004/Movies/mic_NNN_autopick.star   true particle coordinates
    Extract/job010/particles.mrcs|.star   boxes from the micrographs: good ones, then bad ones
    Select/job011/particles.star          the good boxes
    Select/job012/particles.star          the bad boxes (ice, carbon edge, empty ice)

Class labels follow :func:`.relion_jobs.noisy_labels` with the mappings in ``CLASS3D_JOBS``.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..formats.mrc import write_map
from .micrographs import (GoodBadSets, SimulatedMicrographs, good_bad_particle_sets,
                          simulate_micrographs, write_coordinates_star, write_good_bad_sets,
                          write_micrographs, write_micrographs_star)
from .molecule import molecule_maps
from .particles import (DEFAULT_STACK, DEFAULT_STAR, SimulatedParticles, particle_table,
                        simulate_particles, write_particle_dataset)
from .relion_jobs import (class_average_images, class_average_maps, noisy_labels, view_classes,
                          write_classification_job)

#: Number of true conformations.
N_STATES = 3
#: The Class3D jobs of the demo: classes, state -> class mapping, reassigned fraction, and the
#: iteration after which the run was continued (None: not continued).
CLASS3D_JOBS = {
    'Class3D/job085': {'n_classes': 3, 'mapping': {0: 1, 1: 2, 2: 3}, 'flip_fraction': 0.05,
                       'continue_from': None},
    'Class3D/job086': {'n_classes': 4, 'mapping': {0: 1, 1: 2, 2: [3, 4]},
                       'flip_fraction': 0.10, 'continue_from': None},
    'Class3D/job087': {'n_classes': 3, 'mapping': {0: 3, 1: 1, 2: 2}, 'flip_fraction': 0.15,
                       'continue_from': 15},
}
#: The Class2D job of the demo and its number of classes.
CLASS2D_JOB, CLASS2D_CLASSES = 'Class2D/job008', 6
MAPS_FOLDER = 'Simulated/maps'
TRUTH_CSV = 'Simulated/truth.csv'


@dataclass
class DemoDataset:
    """Paths and ground truth of a project written by :func:`build_demo_project`.

    Attributes
    ----------
    project_dir : pathlib.Path
    maps : numpy.ndarray
        ``(n_states, box, box, box)`` true maps; ``map_paths[s]`` is state ``s``'s file.
    particles : SimulatedParticles
        The particle dataset; ``particles.states`` is the true state of each particle.
    particles_star : pathlib.Path
    class_jobs : dict
        Job path (``'Class3D/job085'``...) -> data STAR of its last iteration.
    labels : dict
        Job path -> ``(n,)`` final class numbers, in particle order.
    micrographs : SimulatedMicrographs
    micrograph_paths, coordinate_paths : list of pathlib.Path
    micrographs_star, picked_star, good_star, bad_star, truth_csv : pathlib.Path
    good_bad : GoodBadSets
    """

    project_dir: Path
    maps: np.ndarray
    map_paths: list
    particles: SimulatedParticles
    particles_star: Path
    class_jobs: dict
    labels: dict
    micrographs: SimulatedMicrographs
    micrograph_paths: list
    micrographs_star: Path
    coordinate_paths: list
    good_bad: GoodBadSets
    picked_star: Path
    good_star: Path
    bad_star: Path
    truth_csv: Path

    @property
    def true_states(self):
        """``(n,)`` true state of each particle of :attr:`particles_star`."""
        return self.particles.states

    @property
    def class3d_jobs(self):
        """Job path -> last data STAR, Class3D jobs only."""
        return {job: path for job, path in self.class_jobs.items() if job.startswith('Class3D')}


def build_demo_project(project_dir, seed=0, n_particles=300, box=32, pixel_size=4.0, snr=0.5,
                       n_iterations=25, write_every=1, n_micrographs=4,
                       micrograph_shape=(512, 512), particles_per_micrograph=20):
    """Write the demo project (see the module docstring for the layout).

    Parameters
    ----------
    project_dir : str or os.PathLike
        Created if needed; existing files with the same names are replaced.
    seed : int
        Seed of everything.
    n_particles, box, pixel_size, snr : int, int, float, float
        Size and quality of the particle dataset (``N_STATES`` equally likely states).
    n_iterations, write_every : int
        Iterations of the classification jobs, and which of them are written.
    n_micrographs, micrograph_shape, particles_per_micrograph : int, tuple, int
        Micrograph dataset.

    Returns
    -------
    DemoDataset
    """
    project_dir = Path(project_dir)
    project_dir.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in np.random.SeedSequence(seed).generate_state(8)]

    maps = molecule_maps(N_STATES, box, pixel_size, seed=seeds[0])
    (project_dir / MAPS_FOLDER).mkdir(parents=True, exist_ok=True)
    map_paths = []
    for state, volume in enumerate(maps):
        path = project_dir / MAPS_FOLDER / f'state_{state}.mrc'
        write_map(path, volume, pixel_size)
        map_paths.append(path)

    particles = simulate_particles(maps, n_particles, pixel_size=pixel_size, snr=snr,
                                   seed=seeds[1])
    particles_star = write_particle_dataset(project_dir, particles, pixel_size, DEFAULT_STACK,
                                            DEFAULT_STAR)
    table = particle_table(particles, pixel_size, DEFAULT_STACK)
    optics = particles.optics(pixel_size)

    class_jobs, labels = {}, {}
    for offset, (job, spec) in enumerate(CLASS3D_JOBS.items()):
        job_labels = noisy_labels(particles.states, spec['n_classes'], spec['mapping'],
                                  spec['flip_fraction'], seed=seeds[2] + offset)
        class_maps = class_average_maps(maps, particles.states, job_labels, spec['n_classes'])
        continue_from = spec['continue_from'] and (min(spec['continue_from'], n_iterations - 1)
                                                   or None)
        class_jobs[job] = write_classification_job(
            project_dir, job, table, job_labels, n_iterations=n_iterations, kind='3D',
            class_maps=class_maps, optics=optics, seed=seeds[3] + offset,
            write_every=write_every, continue_from=continue_from)
        labels[job] = job_labels

    view_labels, directions = view_classes(particles.angles, CLASS2D_CLASSES, seed=seeds[4])
    averages = class_average_images(maps, particles.states, view_labels, directions)
    class_jobs[CLASS2D_JOB] = write_classification_job(
        project_dir, CLASS2D_JOB, table, view_labels, n_iterations=n_iterations, kind='2D',
        class_maps=averages, optics=optics, seed=seeds[5], write_every=write_every)
    labels[CLASS2D_JOB] = view_labels

    micrographs = simulate_micrographs(maps, n_micrographs, micrograph_shape,
                                       particles_per_micrograph, box, pixel_size, seed=seeds[6])
    micrograph_paths = write_micrographs(project_dir, micrographs)
    micrographs_star = write_micrographs_star(project_dir, micrographs)
    coordinate_paths = write_coordinates_star(project_dir, micrographs)
    # Twice as many bad boxes as good ones, as junk classes of real data outnumber particles.
    good_bad = good_bad_particle_sets(micrographs, n_bad=2 * len(micrographs.coordinates),
                                      seed=seeds[7])
    picked_star, good_star, bad_star = write_good_bad_sets(project_dir, good_bad)

    truth = pd.DataFrame({'rlnImageName': table['rlnImageName'], 'state': particles.states})
    for job, job_labels in labels.items():
        truth[job] = job_labels
    truth_csv = project_dir / TRUTH_CSV
    truth.to_csv(truth_csv, index=False)

    return DemoDataset(project_dir=project_dir, maps=maps, map_paths=map_paths,
                       particles=particles, particles_star=particles_star,
                       class_jobs=class_jobs, labels=labels, micrographs=micrographs,
                       micrograph_paths=micrograph_paths, micrographs_star=micrographs_star,
                       coordinate_paths=coordinate_paths, good_bad=good_bad,
                       picked_star=picked_star, good_star=good_star, bad_star=bad_star,
                       truth_csv=truth_csv)
